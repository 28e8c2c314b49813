"""`hydra/sweeper=bionn_search`: an asynchronous Optuna search run by workers through any launcher.

`python train.py -m hparams_search=smoke [hydra/launcher=slurm] [overrides]`:

1. checks the search (bionn.search.space) and every searched key against the composed
   config, at both ends of each range and for every choice, before anything starts;
2. records it in the sweep folder (search.json) and creates its Optuna study there
   (study.journal), or checks that the folder holds this same search (then it continues);
3. launches n_workers jobs through the configured launcher (bionn's local or Slurm
   launcher; workers/<i>/); each trains trials until the study has n_trials
   (bionn.run.search_worker), so a new trial starts as soon as any ends.

The sweep report (bionn.report, a Hydra callback) then lists the trials by objective
and writes search.csv, search.png and best.yaml (docs/search.md).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from bionn.search.space import SearchError, SearchSpec
from hydra_plugins.bionn_search import config as _schemas  # noqa: F401  (registers the sweeper schema)

log = logging.getLogger(__name__)
WORKER_DIR = "workers"


class SearchSweeper(Sweeper):
    """Hydra's sweeper for `hparams_search=...`: checks the search, records it, launches its workers."""

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        """Check and record the search of the command's overrides (`arguments`), then launch n_workers
        worker jobs; a refusal is one line on stderr and exit 1. Returns the launcher's job returns."""
        from bionn.search.folder import SearchFolder

        assert self.config is not None
        cfg = self.config
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        try:
            spec = self.check(arguments)
            folder = SearchFolder(sweep_dir)
            folder.begin(spec, list(arguments), str(cfg.hydra.job.config_name))
        except SearchError as err:  # refused before any trial started: the message, no traceback
            print(f"bionn: error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        log.info(
            "search %s: %d trial(s) of %s (%s), %d worker(s); the study: %s",
            sweep_dir,
            spec.n_trials,
            spec.metric,
            spec.direction.value,
            spec.n_workers,
            folder / "study.journal",
        )
        jobs = [[*arguments, f"hydra.sweep.subdir={WORKER_DIR}/{i}"] for i in range(spec.n_workers)]
        self.validate_batch_is_legal(jobs)
        return self.launcher.launch(jobs, initial_job_idx=0)

    def check(self, arguments: list[str]) -> SearchSpec:
        """The search of this config under the command's overrides (`arguments`), checked as docs/search.md
        says (the definition, the launcher, every searched key at both ends, every enqueued trial);
        SearchError otherwise. Writes nothing."""
        from bionn.config.sources import config_file

        assert self.config is not None
        source = config_file("hparams_search", self.config.hydra)
        groups = frozenset(str(g) for g in self.config.hydra.runtime.choices)
        node = OmegaConf.to_container(self.config.hydra.sweeper, resolve=True)
        spec = SearchSpec.from_config(node, source, groups)
        self._check_launcher()
        self._check_trials(spec, list(arguments))
        return spec

    def _check_launcher(self) -> None:
        launcher = self.config.hydra.launcher
        tasks = int(OmegaConf.select(launcher, "tasks_per_node", default=1) or 1)
        nodes = int(OmegaConf.select(launcher, "nodes", default=1) or 1)
        if tasks > 1 or nodes > 1:
            raise SearchError(
                f"hydra.launcher: nodes = {nodes}, tasks_per_node = {tasks}: a search worker is one task on "
                "one node (more GPUs per trial: gpus_per_node); multi-task trials are not built, "
                "docs/search.md says why"
            )

    def _check_trials(self, spec: SearchSpec, arguments: list[str]) -> None:
        """Compose the config at both ends of every range, for every choice and every enqueued trial:
        an unknown key or a value the config refuses is named before any trial starts."""
        from bionn.config.checks import check_run

        base = self._compose(arguments, None, spec)
        for key, param in spec.params.items():
            if (
                key not in base.hydra.runtime.choices
                and OmegaConf.select(base, key, default=_ABSENT) is _ABSENT
            ):
                parent = key.rpartition(".")[0]
                node = OmegaConf.select(base, parent) if parent else base
                near = ", ".join(str(k) for k in node.keys()) if isinstance(node, DictConfig) else "(none)"
                raise SearchError(
                    f"{spec.source}: hydra.sweeper.params.{key} = {param.text!r}: {key} is no key of the "
                    f"composed config (keys under {parent or 'the top'}: {near})"
                )
        candidates = [{key: value} for key, param in spec.params.items() for value in param.extremes()]
        for values in [*candidates, *spec.enqueue]:
            overrides = [spec.params[k].override(v) for k, v in values.items()]
            trial = self._compose(arguments, overrides, spec)
            try:
                check_run(trial, trial.hydra)
            except ValueError as err:
                raise SearchError(
                    f"{spec.source}: hydra.sweeper.params {', '.join(overrides)}: {err}"
                ) from None
        _check_metric(spec, base)

    def _compose(self, arguments: list[str], overrides: list[str] | None, spec: SearchSpec) -> DictConfig:
        from hydra.errors import HydraException

        searched = set(spec.params) if overrides else set()
        kept = [a for a in arguments if a.split("=", 1)[0].lstrip("+~") not in searched]
        try:
            return self.hydra_context.config_loader.load_sweep_config(self.config, kept + (overrides or []))
        except (HydraException, ValueError) as err:
            from omegaconf.errors import OmegaConfBaseException

            from bionn.config.errors import describe_omegaconf_error

            cause = err.__cause__
            omegaconf_error = isinstance(cause, OmegaConfBaseException)
            detail = describe_omegaconf_error(cause) if omegaconf_error else str(err)
            what = f"hydra.sweeper.params {', '.join(overrides)}" if overrides else "the search's overrides"
            raise SearchError(f"{spec.source}: {what}: the config refuses it ({detail})") from None


_ABSENT = object()


def _check_metric(spec: SearchSpec, cfg: DictConfig) -> None:
    from bionn.search.space import logged_metrics

    logged = logged_metrics(list(OmegaConf.select(cfg, "training.compile.metrics", default=[]) or []))
    if spec.metric not in logged:
        raise SearchError(
            f"{spec.source}: hydra.sweeper.objective.metric = {spec.metric!r} is not logged by this "
            f"training (logged: {', '.join(logged)})"
        )
