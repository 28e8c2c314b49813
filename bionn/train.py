"""run(cfg): one configuration trained in its run folder, as one recorded attempt.

    claim the folder -> check -> build (data -> model -> resume point) -> fit -> finish (evaluate, artefacts)

Claiming checks the folder's config ledger (bionn.run.claim): a finished run of
the same config is not trained again, an unfinished one resumes, a folder
holding another config's run is refused (or moved aside on request). Every
attempt is recorded with how it ended: completed; interrupted (a signal such
as SIGTERM, SIGUSR2 or Ctrl-C, a requeue: never a failure, the same command
resumes); or failed (error.json, final_results.json with status failed, a
non-zero exit; inside a multirun reported by bionn.report.SweepReport the job
returns instead and the report exits non-zero when the sweep ends).

Check everything, then write: the folder's ledger is read first (claim: a refusal
writes nothing), then every check that needs no training runs (check_run, and
prepare: the device layout, dataset and model built and compiled on the config
alone) before the statistics are computed and before the ledger is written. A
config error is recorded as a failed attempt (error.json) without a ledger, so
the corrected config runs in the same folder. Each step lives in bionn.run; the
framework under Keras is reached through bionn.backend.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bionn.backend import select
from bionn.config.errors import ConfigError, describe_omegaconf_error
from bionn.config.layers import check_layers
from bionn.config.sources import source_of
from bionn.console import quiet_tensorflow, setup_logging
from bionn.run.artefacts import hydra_files
from bionn.run.claim import claim, finished_loss, take
from bionn.run.ending import end_attempt
from bionn.run.finish import finish
from bionn.run.setup import checked, open_tracker
from bionn.run.signals import observe_signals
from bionn.run.training import build, fit
from bionn.run_folder import RunFolder
from bionn.slurm import current_worker

if TYPE_CHECKING:
    import keras


def run(
    cfg: DictConfig,
    run_dir: Path | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    overrides: list[str] | None = None,
    raise_recorded: bool = False,
) -> float:
    """Train one composed config; returns the final validation loss (what a sweeper minimises).

    run_dir: the run folder (default: Hydra's output folder of this job, or the working directory).
    callbacks: extra Keras callbacks (a search's pruning, bionn.search); a callback with a true
    `pruned` attribute at the end makes the run's status pruned. overrides: what .hydra/overrides.yaml
    records, when the config was composed by bionn rather than by Hydra for this job (a search trial).
    A failed attempt is recorded, then its error raised, as RecordedFailure with raise_recorded (what
    train.py ends in one line, bionn.outcome); Ctrl-C after the record raises RecordedInterrupt."""
    # before Keras is imported; again: a no-op
    select(cfg.runtime.backend, cfg.runtime.cpu_replicas, cfg.runtime.deterministic)
    quiet_tensorflow()
    setup_logging()
    folder = RunFolder(Path(run_dir or run_directory()))
    config = resolved(cfg)
    claimed = claim(folder, config, cfg.runtime.on_config_change)
    if claimed.finished is not None:
        return finished_loss(folder, claimed.finished)
    worker = current_worker()
    chief = worker.is_chief
    setup = take(cfg, folder, claimed, worker)  # a move aside runs the checks first
    started, tracker = time.time(), None
    with observe_signals(folder.note_signal if chief else None) as signals:
        try:
            if chief:
                folder.write_hydra(hydra_files(cfg, overrides))
            setup = setup or checked(cfg, folder.path if chief else None)
            if chief and claimed.new_ledger:
                folder.write_ledger(config, superseded=claimed.superseded)
            tracker = open_tracker(cfg, folder) if chief else None
            training = build(cfg, setup, folder, callbacks or [], tracker)
            return finish(training, fit(training), started)
        except BaseException as err:
            return end_attempt(folder, err, signals, started, worker, tracker, raise_recorded)


def run_directory() -> Path:
    """Hydra's output folder of this job, or the working directory outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path.cwd()


def resolved(cfg: DictConfig) -> dict:
    """The config as plain data, every ${...} resolved (what the ledger records); ConfigError names a
    reference to a key that does not exist."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except OmegaConfBaseException as err:
        check_layers(cfg.model.layers, f"{source_of('model.layers')}: model.layers")  # names the allowed keys
        raise ConfigError(f"the config cannot be resolved: {describe_omegaconf_error(err)}") from None
