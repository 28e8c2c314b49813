"""Train one composed config: python train.py model=E dataset=dbig [training.epochs=50] [-m for sweeps]."""

import hydra
from omegaconf import DictConfig

from bionn.config.schema import register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from bionn.train import run

    return run(cfg)


if __name__ == "__main__":
    main()
