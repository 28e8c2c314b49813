"""build -> fit: the statistics, the feeds, the model's real label scaling, its callbacks and the resume
point (`build`), then training from there (`fit`)."""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from bionn.config.schema import Verbosity
from bionn.config.tree import print_config_tree
from bionn.run.artefacts import finite, info
from bionn.run.setup import Setup, logger, steps_per_epoch
from bionn.run_folder import INFO, STATISTICS, TENSORBOARD, RunFolder
from bionn.slurm import Worker

if TYPE_CHECKING:
    import keras

    from bionn.clock import EpochClock
    from bionn.data.stats import Statistics
    from bionn.nn.callbacks import HistoryCSV, RunBackup
    from bionn.nn.metrics import PerOutputRSquared
    from bionn.tracking import MlflowTracker

log = logging.getLogger("bionn.train")
SPLIT_KEYS = {"train": "train", "val": "validation", "test": "test"}


@dataclass(frozen=True)
class Evaluation:
    """Loss and metrics of every split (train, validation, test) of a model; NaN becomes None.
    splits: the backend's feed of each split; r2: the compiled r2_mean metric (its per-output values)."""

    splits: dict[str, Any]
    r2: PerOutputRSquared

    def __call__(self, model: keras.Model) -> dict:
        from bionn import backend

        engine, results = backend.current(), {}
        for split, key in SPLIT_KEYS.items():
            logs = engine.evaluate(model, self.splits[split])
            metrics = {k: finite(v) for k, v in logs.items()}
            metrics["r2_per_output"] = [finite(v) for v in self.r2.per_output()]
            results[key] = metrics
        return results


@dataclass(frozen=True)
class Training:
    """What build() assembles: the data, the model, its callbacks and where it resumes.
    train_data: the backend's feed of the training split (what model.fit takes)."""

    cfg: DictConfig
    folder: RunFolder
    worker: Worker
    model: keras.Model
    train_data: Any
    evaluation: Evaluation
    callbacks: list[keras.callbacks.Callback]
    history: HistoryCSV
    early: keras.callbacks.EarlyStopping | None
    backup: RunBackup
    initial_epoch: int
    tracker: MlflowTracker | None = None  # the MLflow logger (bionn.tracking), when logger=mlflow

    def evaluate(self) -> dict:
        """The trained model's evaluation of every split (see Evaluation)."""
        return self.evaluation(self.model)


def build(
    cfg: DictConfig,
    setup: Setup,
    folder: RunFolder,
    extra_callbacks: list[keras.callbacks.Callback] = (),
    tracker: MlflowTracker | None = None,
) -> Training:
    """The statistics, the feeds, the model's label scaling and compilation, its callbacks, and the
    resume point. extra_callbacks: a search's pruning (bionn.search); tracker: logs every committed epoch."""
    from bionn import backend
    from bionn.clock import EpochClock
    from bionn.nn.callbacks import HistoryCSV, RunBackup

    print_config_tree(cfg)
    chief = setup.worker.is_chief
    stats = _statistics(cfg, setup, folder)
    clock = EpochClock()
    train_data, splits = _feeds(setup, stats, clock)
    r2, schedule_callbacks = _compile(cfg, setup, stats)
    if chief:
        devices = backend.current().devices()
        folder.write_json(
            INFO, info(cfg, setup.ds, stats, setup.model, setup.strategy, setup.worker, devices)
        )
    early = _early_stopping(cfg)
    backup = RunBackup(folder.backup, early, write=chief, pruners=list(extra_callbacks))
    if tracker is not None:
        backup.on_commit.append(tracker.log_epoch)
    initial_epoch = _resume(setup, folder, backup, clock)
    evaluation = Evaluation(splits, r2)
    history = HistoryCSV(folder)
    extra = [*schedule_callbacks, *extra_callbacks]
    callbacks = _callbacks(cfg, folder, chief, clock, history, evaluation, early, backup, extra)
    return Training(
        cfg,
        folder,
        setup.worker,
        setup.model,
        train_data,
        evaluation,
        callbacks,
        history,
        early,
        backup,
        initial_epoch,
        tracker,
    )


def _feeds(setup: Setup, stats: Statistics, clock: EpochClock) -> tuple[Any, dict[str, Any]]:
    """The backend's feeds: the training split's (its epoch read from `clock`) and every split's for
    evaluation (each with its own clock: evaluation feeds the same batches every pass, so the backend may
    keep them)."""
    from bionn import backend
    from bionn.clock import EpochClock

    engine = backend.current()
    train_data = engine.feed(setup.strategy, setup.worker, setup.ds, "train", stats, clock)
    splits = {
        s: engine.feed(setup.strategy, setup.worker, setup.ds, s, stats, EpochClock(), fixed=True)
        for s in SPLIT_KEYS
    }
    return train_data, splits


def _early_stopping(cfg: DictConfig) -> keras.callbacks.EarlyStopping | None:
    """Early stopping on val_loss after training.early_stopping_patience epochs; None without it."""
    import keras

    if not cfg.training.early_stopping_patience:
        return None
    return keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=cfg.training.early_stopping_patience, restore_best_weights=True
    )


def _statistics(cfg: DictConfig, setup: Setup, folder: RunFolder) -> Statistics:
    """The normalisation statistics (cached); the chief keeps them in the run folder too."""
    from bionn.data.stats import load_or_compute_statistics, save_statistics

    stats = load_or_compute_statistics(setup.ds, cfg.training.use_stats_of, cfg.runtime.stats_cache_dir)
    if setup.worker.is_chief:  # the folder's inference models need no cache (bionn.nn.inference)
        save_statistics(folder / STATISTICS, stats)
    return stats


def _compile(cfg: DictConfig, setup: Setup, stats: Statistics) -> tuple[PerOutputRSquared, list]:
    """The prepared model with the real label scaling, compiled for training; returns its r2_mean metric
    and the callbacks its learning-rate schedule needs."""
    from bionn.data.stats import STD_EPSILON
    from bionn.nn.optim import compile_for_training

    # Scaled labels: the loss sees standardised labels, the model and metrics the original ones.
    scaling = (stats.label_mean, stats.label_std + STD_EPSILON) if cfg.training.scale_labels else None
    if scaling is not None:  # the Destandardise layer bionn.nn.model.build_model ends the model with
        layer = setup.model.get_layer("destandardise")
        layer.mean, layer.scale = [float(v) for v in scaling[0]], [float(v) for v in scaling[1]]
    with setup.strategy.scope():
        return compile_for_training(setup.model, cfg.training, steps_per_epoch(setup.ds), scaling)


def _resume(setup: Setup, folder: RunFolder, backup: RunBackup, clock: EpochClock) -> int:
    """The epoch training starts at: the backup's resume point, restored into the model (0: none)."""
    with setup.strategy.scope():
        initial_epoch = backup.restore(setup.model)
    # The training iterator may start before the first epoch begins: point the clock at the resumed epoch.
    clock.epoch = initial_epoch
    if setup.worker.is_chief:
        folder.update_attempt(start_epoch=initial_epoch)
    if initial_epoch:
        log.info("resuming %s at epoch %d", folder.path, initial_epoch + 1)
    return initial_epoch


def _callbacks(
    cfg: DictConfig,
    folder: RunFolder,
    chief: bool,
    clock: EpochClock,
    history: HistoryCSV,
    evaluation: Evaluation,
    early: keras.callbacks.EarlyStopping | None,
    backup: RunBackup,
    extra: list[keras.callbacks.Callback],
) -> list[keras.callbacks.Callback]:
    """The training's callbacks in their order; extra: the schedule's, then a search's pruning."""
    import keras

    from bionn.nn.callbacks import EpochClockCallback, PeriodicResults, ProgressLog
    from bionn.nn.inference import BestWeights

    verbosity = verbosity_of(cfg.training.verbose)
    tensorboard = []
    if chief and logger(cfg, "tensorboard") is not None:
        from bionn import backend

        tensorboard = [backend.current().tensorboard(folder / TENSORBOARD)]
    return [
        EpochClockCallback(clock),
        *([history] if chief else []),
        PeriodicResults(cfg.training.save_interval, folder, evaluation, write=chief),
        keras.callbacks.TerminateOnNaN(),
        *tensorboard,
        *([early] if early else []),
        *([ProgressLog(within_epoch=verbosity == Verbosity.epoch)] if verbosity != Verbosity.silent else []),
        *extra,  # reduce-on-plateau; a search's pruning: before the commit, so a pruned epoch is committed
        *([BestWeights(folder.best)] if chief else []),  # best/: the best validation epoch's weights
        backup,  # last: commits once the epoch's other files are written
    ]


def fit(training: Training) -> float:
    """Train from the resume point to the last epoch (or early stop); returns the seconds it took."""
    from bionn import backend

    cfg = training.cfg
    started = time.time()
    backend.current().fit(
        training.model,
        training.train_data,
        training.evaluation.splits["val"],
        initial_epoch=training.initial_epoch,
        epochs=training.initial_epoch if training.backup.stopped else cfg.training.epochs,
        callbacks=training.callbacks,
        verbose=1 if verbosity_of(cfg.training.verbose) == Verbosity.bar else 0,
    )
    worker = training.worker
    if log.isEnabledFor(logging.DEBUG):  # for tests of distributed training (hydra.verbose=bionn.train)
        log.debug(
            "worker %d/%d weights sha256 %s", worker.index, worker.count, weights_digest(training.model)
        )
    return time.time() - started


def verbosity_of(value: Verbosity | str) -> Verbosity:
    """training.verbose, with auto resolved: a bar on a terminal, a line per epoch otherwise."""
    verbosity = value if isinstance(value, Verbosity) else Verbosity[str(value)]
    if verbosity == Verbosity.auto:
        return Verbosity.bar if sys.stdout.isatty() else Verbosity.epoch
    return verbosity


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of every weight's bytes: equal on all workers of one training, logged by each."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()
