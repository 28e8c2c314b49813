"""The checks of a run that need no training, made before the statistics or the run folder are touched:
the config (check_run), the MLflow store a required logger needs, the device layout, the dataset and the
model, built once and compiled on the config alone (`prepare`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from bionn.config.checks import check_run
from bionn.config.dataset import check_batch_split
from bionn.config.errors import ConfigError
from bionn.config.sources import config_file, source_of
from bionn.run_folder import RunFolder
from bionn.slurm import Worker

if TYPE_CHECKING:
    import keras

    from bionn.backend import Strategy
    from bionn.data.dataset import KineticsDataset
    from bionn.tracking import MlflowTracker


@dataclass(frozen=True)
class Setup:
    """What prepare() found: this process's strategy and place among the workers, the dataset, and the
    model (built in the strategy's scope, its label scaling a stand-in until the statistics are known)."""

    strategy: Strategy
    worker: Worker
    ds: KineticsDataset
    model: keras.Model


def checked(cfg: DictConfig, run_dir: Path | None = None) -> Setup:
    """Every check of the config that needs no training: check_run, a store logger.mlflow.required
    needs (for the chief, which logs: run_dir), then prepare()."""
    check_run(cfg)
    if run_dir is not None and logger(cfg, "mlflow") is not None:
        from bionn.tracking import check_required

        check_required(cfg, run_dir)
    return prepare(cfg)


def logger(cfg: DictConfig, name: str) -> Any:
    """logger.<name>'s settings, None when that logger is not selected (conf/logger/)."""
    return (cfg.get("logger") or {}).get(name)


def open_tracker(cfg: DictConfig, folder: RunFolder) -> MlflowTracker | None:
    """The attempt's MLflow logger (logger=mlflow), its run continued or created; None without it."""
    if logger(cfg, "mlflow") is None:
        return None
    from bionn.tracking import MlflowTracker

    tracker = MlflowTracker(folder, logger(cfg, "mlflow"))
    tracker.open()
    return tracker


def prepare(cfg: DictConfig) -> Setup:
    """Everything that needs neither the statistics nor the run folder, checked before either is
    touched: the device layout, the dataset's shapes, the batch's split across replicas, the precision
    on this machine, and the model built (seeded: runtime.seed) and compiled on the config alone (layer,
    optimizer, loss and metric names, the output count). Writes nothing; a bad value raises ConfigError."""
    import keras
    import numpy as np

    from bionn import backend
    from bionn.data.dataset import KineticsDataset
    from bionn.nn.model import build_model
    from bionn.nn.optim import apply_precision, compile_for_training

    engine = backend.current()
    strategy, worker = engine.make_strategy(cfg.runtime.cpu_replicas)
    ds = KineticsDataset(cfg.dataset, source=config_file("dataset"))
    replicas = strategy.num_replicas_in_sync
    if worker.count > 1:
        check_batch_split(
            ds.batch_size,
            lambda allowed: ConfigError(
                f"{source_of('dataset.shape.batch_size')}: dataset.shape.batch_size = {ds.batch_size} is "
                f"invalid for {replicas} replicas on {worker.count} workers: {allowed}"
            ),
            workers=replicas,
        )
    apply_precision(cfg.training, source_of("training.precision"))  # the dtype policy, before any model
    keras.utils.set_random_seed(cfg.runtime.seed)
    if cfg.runtime.deterministic:
        engine.enable_determinism()
    # The real statistics come later (they may take minutes): a stand-in label scaling until then.
    scaling = (np.zeros(ds.n_labels), np.ones(ds.n_labels)) if cfg.training.scale_labels else None
    with strategy.scope():
        model = build_model(cfg.model, ds.feature_shape, ds.n_labels, scaling)
        compile_for_training(model, cfg.training, steps_per_epoch(ds), scaling)
    return Setup(strategy, worker, ds, model)


def steps_per_epoch(ds: KineticsDataset) -> int:
    return math.ceil(ds.split_size("train") / ds.batch_size)
