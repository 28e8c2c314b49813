"""Train one composed config: python train.py model=E dataset=dbig [training.epochs=50] [-m for sweeps]."""

import hydra
from omegaconf import DictConfig

from bionn.config.schema import register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from bionn.backend import select
    from bionn.outcome import end_cleanly
    from bionn.run.search_worker import is_search_worker, work
    from bionn.train import run

    def job() -> float:
        # before anything imports Keras
        select(cfg.runtime.backend, cfg.runtime.cpu_replicas, cfg.runtime.deterministic)
        # A job of hparams_search=... is a search worker: it trains trials until the study has them all.
        return work(cfg) if is_search_worker() else run(cfg, raise_recorded=True)

    # A refusal, a config error or Ctrl-C ends in one paragraph and its exit code (bionn.outcome).
    return end_cleanly(job)


if __name__ == "__main__":
    main()
