"""run(cfg): one configuration trained in its run folder, as one recorded attempt.

    claim the folder -> build (data -> model -> resume point) -> fit -> finish (evaluate -> artefacts)

Claiming checks the folder's config ledger (bionn.run_folder): a finished run of
the same config is not trained again, an unfinished one resumes, a folder
holding another config's run is refused (or moved aside on request). Every
attempt is recorded with how it ended: completed; interrupted (a signal such
as SIGTERM, SIGUSR2 or Ctrl-C, a requeue: never a failure, the same command
resumes); or failed (error.json, final_results.json with status failed, a
non-zero exit; inside a multirun reported by bionn.report.SweepReport the job
returns instead and the report exits non-zero when the sweep ends).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bionn.config.checks import check_run
from bionn.config.errors import ConfigError, describe_omegaconf_error
from bionn.config.layers import check_layers
from bionn.config.schema import OnConfigChange, Verbosity
from bionn.config.sources import config_file, source_of
from bionn.config.tree import print_config_tree
from bionn.console import quiet_tensorflow, setup_logging
from bionn.io import atomic_write_bytes
from bionn.outcome import sweep_report_collects_failures
from bionn.run_folder import (
    ATTEMPTS,
    BACKUP,
    ERROR,
    FINAL,
    FINISHED,
    HISTORY,
    INFO,
    LEDGER,
    MODEL,
    PLOTS,
    STATISTICS,
    TENSORBOARD,
    ConfigChanged,
    Outcome,
    RunFolder,
    Status,
    remove_backup,
)
from bionn.slurm import Worker, current_worker, slurm_info

log = logging.getLogger(__name__)
SPLIT_KEYS = {"train": "train", "val": "validation", "test": "test"}
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


def run_directory() -> Path:
    """Hydra's output folder of this job, or the working directory outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path.cwd()


def run(
    cfg: Any,
    run_dir: Path | None = None,
    callbacks: list[Any] | None = None,
    overrides: list[str] | None = None,
) -> float:
    """Train one composed config; returns the final validation loss (what a sweeper minimises).

    Check everything, then write: the folder's ledger is read first (claim: a refusal writes nothing),
    then every check that needs no training runs (check_run, and prepare: the device layout, dataset
    and model built and compiled on the config alone) before the statistics are computed and before
    the ledger is written. A config error is recorded as a failed attempt (error.json) without a
    ledger, so the corrected config runs in the same folder.

    callbacks: extra Keras callbacks (a search's pruning, bionn.search); a callback with a true
    `pruned` attribute at the end makes the run's status pruned. overrides: what .hydra/overrides.yaml
    records, when the config was composed by bionn rather than by Hydra for this job (a search trial)."""
    quiet_tensorflow()
    setup_logging()
    folder = RunFolder(Path(run_dir or run_directory()))
    try:
        config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except OmegaConfBaseException as err:  # a ${...} reference to a key that does not exist
        check_layers(cfg.model.layers, f"{source_of('model.layers')}: model.layers")  # names the allowed keys
        raise ConfigError(f"the config cannot be resolved: {describe_omegaconf_error(err)}") from None
    claimed = claim(folder, config, cfg.runtime.on_config_change)
    if claimed.finished is not None:
        log.info(
            "%s already finished (%s) with this config; nothing to do (runtime.on_config_change=move_aside "
            "with another config, or another folder, starts afresh)",
            folder.path,
            claimed.finished["status"],
        )
        return _nan_to_inf(((claimed.finished.get("evaluation") or {}).get("validation") or {}).get("loss"))
    worker = current_worker()
    setup = None
    if claimed.move_aside:  # checked before another config's run is moved: a config error moves nothing
        setup = checked(cfg, folder.path if worker.is_chief else None)
        if worker.is_chief:
            target = folder.move_aside()
            log.warning("moved the previous contents of %s into %s; starting afresh", folder.path, target)
    elif claimed.superseded is not None and worker.is_chief:
        log.warning(
            "%s held another config whose attempts ended before their first committed epoch; this config "
            "replaces it in %s once its checks pass (their records stay in %s)",
            folder.path,
            LEDGER,
            ATTEMPTS,
        )
    folder.path.mkdir(parents=True, exist_ok=True)
    if worker.is_chief:
        folder.begin_attempt(slurm_info())
    started = time.time()
    tracker = None
    with observe_signals(folder.note_signal if worker.is_chief else None) as signals:
        try:
            if worker.is_chief:
                folder.write_hydra(_hydra_files(cfg, overrides))
            setup = setup or checked(cfg, folder.path if worker.is_chief else None)
            if worker.is_chief and claimed.new_ledger:
                folder.write_ledger(config, superseded=claimed.superseded)
            tracker = _open_tracker(cfg, folder) if worker.is_chief else None
            training = build(cfg, setup, folder, callbacks or [])
            if tracker is not None:
                training.tracker = tracker
                training.backup.on_commit.append(tracker.log_epoch)
            fit_time = fit(training)
            return finish(training, fit_time, started)
        except BaseException as err:
            return _record_end(folder, err, signals, started, worker, tracker)


def checked(cfg: Any, run_dir: Path | None = None) -> Setup:
    """Every check of the config that needs no training: check_run, a store logger.mlflow.required
    needs (for the chief, which logs: run_dir), then prepare()."""
    check_run(cfg)
    if run_dir is not None and _logger(cfg, "mlflow") is not None:
        from bionn.tracking import check_required

        check_required(cfg, run_dir)
    return prepare(cfg)


def _logger(cfg: Any, name: str) -> Any:
    """logger.<name>'s settings, None when that logger is not selected (conf/logger/)."""
    return (cfg.get("logger") or {}).get(name)


def _open_tracker(cfg: Any, folder: RunFolder) -> Any:
    """The attempt's MLflow logger (logger=mlflow), its run continued or created; None without it."""
    if _logger(cfg, "mlflow") is None:
        return None
    from bionn.tracking import MlflowTracker

    tracker = MlflowTracker(folder, _logger(cfg, "mlflow"))
    tracker.open()
    return tracker


@dataclass
class Claim:
    """What the folder's ledger says of a run of `config` there."""

    finished: dict | None = None  # this config's final results: it already finished here
    new_ledger: bool = False  # write the ledger: there is none yet, or this config replaces one
    move_aside: bool = False  # the folder holds another config's run: move it into previous/<n>/
    superseded: dict | None = None  # the ledger this config replaces (its runs never trained an epoch)


def claim(folder: RunFolder, config: dict, on_change: OnConfigChange) -> Claim:
    """Check the folder's ledger against `config` without writing anything. A folder whose runs of
    another config never committed an epoch (they failed or stopped first) takes the new config; one
    holding another config's training is refused (ConfigChanged), or moved aside with move_aside."""
    try:
        ledger = folder.check_ledger(config)
        if ledger is None and _has_training(folder):
            raise ConfigChanged(
                f"{folder.path} holds training results but no ledger ({folder / LEDGER}: written by "
                "an older bionn?), so its config is unknown. Run into another folder, or add "
                "runtime.on_config_change=move_aside to move its contents into previous/<n>/ and start "
                "afresh."
            )
    except ConfigChanged:
        if folder.ledger() is not None and not _has_training(folder):
            return Claim(new_ledger=True, superseded=folder.ledger())
        if on_change != OnConfigChange.move_aside:
            raise
        return Claim(new_ledger=True, move_aside=True)
    if ledger is None:
        return Claim(new_ledger=True)
    final = folder.final()
    if final is not None and Status(final["status"]) in FINISHED:
        return Claim(finished=final)
    return Claim()


def _has_training(folder: RunFolder) -> bool:
    final = folder.final()
    finished = final is not None and Status(final["status"]) in FINISHED
    return finished or (folder / HISTORY).exists() or (folder / BACKUP).exists()


def _record_end(
    folder: RunFolder, err: BaseException, signals: list[str], started: float, worker, tracker=None
) -> float:
    """Record how the attempt ended; re-raise, or return infinity for a failed job of a reported sweep."""
    interrupted = isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and bool(signals))
    if not worker.is_chief:  # the chief records; a worker's end is in its own log
        raise err
    if interrupted:
        name = signals[0] if signals else "SIGINT"  # the first: a preemption's SIGUSR2, then its SIGTERM
        folder.end_attempt(Outcome.INTERRUPTED, reason=f"interrupted by {name}")
        if tracker is not None:
            tracker.end(Status.INTERRUPTED)
        log.warning(
            "interrupted by %s after %d committed epoch(s); the same command resumes it in %s",
            name,
            folder.committed_epoch_or_history(),
            folder.path,
        )
        err.recorded = True  # bionn.outcome ends it without saying more
        raise err
    error = {"type": type(err).__name__, "message": str(err), "traceback": traceback.format_exc()}
    folder.end_attempt(Outcome.FAILED, error=error)
    folder.write_json(ERROR, error)
    folder.write_json(
        FINAL,
        {
            "status": Status.FAILED.value,
            "error": f"{type(err).__name__}: {err}",
            "epochs_completed": len(folder.history_rows()),
            "training_time_s": round(time.time() - started, 3),
            "evaluation": None,
        },
    )
    log.error("failed: %s: %s (see %s)", type(err).__name__, err, folder / ERROR)
    if tracker is not None:
        tracker.end(Status.FAILED)
    if isinstance(err, Exception) and sweep_report_collects_failures():
        log.error("the sweep goes on; the sweep report names this job (%s)", folder.path)
        return float("inf")
    err.recorded = True  # error.json holds its traceback: bionn.outcome ends it without one
    raise err


@contextlib.contextmanager
def observe_signals(note: Callable[[str], None] | None) -> Iterator[list[str]]:
    """Record SIGINT, SIGTERM and SIGUSR2 (note(name) at once: a kill may follow), then do what the
    handler before did (submitit's requeue, Python's KeyboardInterrupt); a signal whose default action
    ends the process ends it with SystemExit(128 + signal), so the interruption is recorded first. A
    signal the process ignores (SIGINT of a job a shell started in the background) stays ignored and
    unrecorded: it interrupts nothing."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    before = {sig: signal.getsignal(sig) for sig in SIGNALS if signal.getsignal(sig) != signal.SIG_IGN}

    def handler(signum: int, frame: Any) -> Any:
        name = signal.Signals(signum).name
        received.append(name)
        if note is not None:
            note(name)
        previous = before[signal.Signals(signum)]
        if callable(previous):
            return previous(signum, frame)
        raise SystemExit(128 + signum)

    for sig in before:
        signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, previous in before.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)


def _hydra_files(cfg: Any, overrides: list[str] | None = None) -> dict[str, str]:
    """What Hydra itself would write into .hydra/ (conf/train.yaml turns that off: the ledger is checked
    first, so a refused run leaves the folder's .hydra/ as it was); `overrides` replaces the job's own."""
    files = {"config.yaml": OmegaConf.to_yaml(cfg)}
    if overrides is not None:
        files["overrides.yaml"] = OmegaConf.to_yaml(OmegaConf.create(list(overrides)))
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.instance().cfg
        HydraConfig.get()
    except ValueError:
        return files
    files["hydra.yaml"] = OmegaConf.to_yaml(hydra_cfg)
    files.setdefault("overrides.yaml", OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task))
    return files


# ---- build -> fit -> finish --------------------------------------------------------------


@dataclass
class Training:
    """What build() assembles: the data, the model, its callbacks and where it resumes."""

    cfg: Any
    folder: RunFolder
    worker: Worker
    strategy: Any
    model: Any
    r2: Any
    train_data: Any
    splits: dict[str, Any]
    callbacks: list[Any]
    history: Any
    early: Any
    backup: Any
    initial_epoch: int
    tracker: Any = None  # the MLflow logger (bionn.tracking), when logger=mlflow

    def evaluate(self, model: Any = None) -> dict:
        """Loss and metrics of every split (train, validation, test); NaN becomes None."""
        model = model or self.model
        results = {}
        for split, key in SPLIT_KEYS.items():
            logs = model.evaluate(self.splits[split], verbose=0, return_dict=True)
            metrics = {k: _finite(v) for k, v in logs.items()}
            metrics["r2_per_output"] = [_finite(v) for v in self.r2.per_output()]
            results[key] = metrics
        return results


@dataclass
class Setup:
    """What prepare() found: this process's strategy and place among the workers, and the dataset."""

    strategy: Any
    worker: Worker
    ds: Any


def prepare(cfg: Any) -> Setup:
    """Everything that needs neither the statistics nor the run folder, checked before either is
    touched: the device layout, the dataset's shapes, the batch's split across replicas, the precision
    on this machine, and the model built and compiled on the config alone (layer, optimizer, loss and
    metric names, the output count). Writes nothing; a bad value raises ConfigError."""
    import numpy as np

    from bionn.data.dataset import KineticsDataset
    from bionn.distribute import make_strategy
    from bionn.nn.model import build_model
    from bionn.nn.optim import apply_precision, compile_for_training

    strategy, worker = make_strategy(cfg.runtime.cpu_replicas)
    ds = KineticsDataset(cfg.dataset, source=config_file("dataset"))
    replicas = strategy.num_replicas_in_sync
    if worker.count > 1 and ds.batch_size % replicas:
        raise ConfigError(
            f"{source_of('dataset.shape.batch_size')}: dataset.shape.batch_size = {ds.batch_size} is invalid "
            f"for {replicas} replicas on {worker.count} workers: must be a multiple of {replicas}"
        )
    apply_precision(cfg.training, source_of("training.precision"))  # the dtype policy, before any model
    # The real statistics come later (they may take minutes): the same model with stand-in label scaling.
    scaling = (np.zeros(ds.n_labels), np.ones(ds.n_labels)) if cfg.training.scale_labels else None
    model = build_model(cfg.model, ds.feature_shape, ds.n_labels, scaling)
    compile_for_training(model, cfg.training, _steps_per_epoch(ds), scaling)
    return Setup(strategy, worker, ds)


def _steps_per_epoch(ds: Any) -> int:
    return math.ceil(ds.split_size("train") / ds.batch_size)


def build(cfg: Any, setup: Setup, folder: RunFolder, extra_callbacks: list[Any] = ()) -> Training:
    """The statistics, the pipelines, the model and its callbacks, and the resume point."""
    import keras
    import tensorflow as tf

    from bionn.clock import EpochClock
    from bionn.data.stats import STD_EPSILON, load_or_compute_statistics, save_statistics
    from bionn.nn.callbacks import EpochClockCallback, HistoryCSV, PeriodicResults, ProgressLog, RunBackup
    from bionn.nn.inference import BestWeights
    from bionn.nn.model import build_model
    from bionn.nn.optim import compile_for_training

    print_config_tree(cfg)
    strategy, worker, ds = setup.strategy, setup.worker, setup.ds
    chief = worker.is_chief
    keras.utils.set_random_seed(cfg.runtime.seed)  # after prepare()'s model: the same weights as without it
    if cfg.runtime.deterministic:
        tf.config.experimental.enable_op_determinism()

    stats = load_or_compute_statistics(ds, cfg.training.use_stats_of, cfg.runtime.stats_cache_dir)
    if chief:  # the run folder keeps them: its inference models need no cache (bionn.nn.inference)
        save_statistics(folder / STATISTICS, stats)
    clock = EpochClock()
    train_data = _dataset(strategy, worker, ds, "train", stats, clock)
    splits = {split: _dataset(strategy, worker, ds, split, stats, EpochClock()) for split in SPLIT_KEYS}

    # Scaled labels: the loss sees standardised labels, the model and metrics the original ones.
    label_scaling = (stats.label_mean, stats.label_std + STD_EPSILON) if cfg.training.scale_labels else None
    with strategy.scope():
        model = build_model(cfg.model, ds.feature_shape, ds.n_labels, label_scaling)
        steps = _steps_per_epoch(ds)
        r2, schedule_callbacks = compile_for_training(model, cfg.training, steps, label_scaling)
    if chief:
        folder.write_json(INFO, _info(cfg, ds, stats, model, strategy, worker))

    early = None
    if cfg.training.early_stopping_patience:
        early = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=cfg.training.early_stopping_patience, restore_best_weights=True
        )
    backup = RunBackup(folder.backup, early, write=chief, pruners=list(extra_callbacks))
    with strategy.scope():
        initial_epoch = backup.restore(model)
    # The training iterator may start before the first epoch begins: point the clock at the resumed epoch.
    clock.epoch = initial_epoch
    if chief:
        folder.update_attempt(start_epoch=initial_epoch)
    if initial_epoch:
        log.info("resuming %s at epoch %d", folder.path, initial_epoch + 1)
    history = HistoryCSV(folder)
    training = Training(
        cfg,
        folder,
        worker,
        strategy,
        model,
        r2,
        train_data,
        splits,
        [],
        history,
        early,
        backup,
        initial_epoch,
    )
    verbosity = _verbosity(cfg.training.verbose)
    tensorboard = chief and _logger(cfg, "tensorboard") is not None
    training.callbacks = [
        EpochClockCallback(clock),
        *([history] if chief else []),
        PeriodicResults(cfg.training.save_interval, folder, training.evaluate, write=chief),
        keras.callbacks.TerminateOnNaN(),
        *([keras.callbacks.TensorBoard(log_dir=str(folder / TENSORBOARD))] if tensorboard else []),
        *([early] if early else []),
        *([ProgressLog(within_epoch=verbosity == Verbosity.epoch)] if verbosity != Verbosity.silent else []),
        *schedule_callbacks,  # reduce-on-plateau
        *extra_callbacks,  # a search's pruning: before the commit, so a pruned epoch is committed
        *([BestWeights(folder.best)] if chief else []),  # best/: the best validation epoch's weights
        backup,  # last: commits once the epoch's other files are written
    ]
    return training


def fit(training: Training) -> float:
    """Train from the resume point to the last epoch (or early stop); returns the seconds it took."""
    cfg = training.cfg
    started = time.time()
    training.model.fit(
        training.train_data,
        validation_data=training.splits["val"],
        initial_epoch=training.initial_epoch,
        epochs=training.initial_epoch if training.backup.stopped else cfg.training.epochs,
        callbacks=training.callbacks,
        verbose=1 if _verbosity(cfg.training.verbose) == Verbosity.bar else 0,
        shuffle=False,  # the pipeline orders each epoch itself
    )
    worker = training.worker
    if log.isEnabledFor(logging.DEBUG):  # for tests of distributed training (hydra.verbose=bionn.train)
        digest = _weights_digest(training.model)
        log.debug("worker %d/%d weights sha256 %s", worker.index, worker.count, digest)
    return time.time() - started


def finish(training: Training, fit_time: float, started: float) -> float:
    """Evaluate, save the model, plots and final_results.json; returns the validation loss."""
    from bionn.baseline import reference_scores
    from bionn.nn.callbacks import save_model
    from bionn.trained import save_inference_models

    folder = training.folder
    if not training.worker.is_chief:
        training.evaluate()  # a collective: the chief's evaluation needs every worker
        return math.nan
    history = training.history.history()
    losses = history.get("loss", [])
    if any(not math.isfinite(v) for v in losses):
        status = Status.NAN
    elif training.backup.pruned or any(getattr(callback, "pruned", False) for callback in training.callbacks):
        status = Status.PRUNED
    elif training.early is not None and training.early.stopped_epoch > 0:
        status = Status.EARLY_STOPPED
    else:
        status = Status.COMPLETED
    evaluation = training.evaluate()
    save_model(training.model, folder / MODEL)
    best = save_inference_models(folder, training.model)  # inference_{best,last}.keras
    _plot_history(history, folder / PLOTS)
    val_losses = [v for v in history.get("val_loss", []) if math.isfinite(v)]
    folder.write_json(
        FINAL,
        {
            "status": status.value,
            "epochs_completed": len(losses),
            "training_time_s": round(fit_time, 3),
            "wall_time_s": round(time.time() - started, 3),
            "best_val_loss": min(val_losses) if val_losses else None,
            "best_epoch": best["best_epoch"],  # the weights of inference_best.keras
            "evaluation": evaluation,
            # what test r2_mean is read against: the label's ceiling and, when cached, the ridge baseline
            "reference": reference_scores(training.cfg.dataset, training.cfg.runtime.stats_cache_dir),
        },
    )
    remove_backup(folder)  # final_results.json now marks the run finished
    folder.end_attempt(Outcome.COMPLETED)
    test = evaluation["test"]
    log.info(
        "%s after %d epoch(s): test r2_mean %s, pooled R-squared %s; run folder %s",
        status.value,
        len(losses),
        _fmt(test.get("r2_mean")),
        _fmt(test.get("r_squared")),
        folder.path,
    )
    if training.tracker is not None:
        training.tracker.end(status)  # its last line: how to browse the MLflow store
    return _nan_to_inf(evaluation["validation"]["loss"])


def _verbosity(value: Any) -> Verbosity:
    verbosity = value if isinstance(value, Verbosity) else Verbosity[str(value)]
    if verbosity == Verbosity.auto:
        return Verbosity.bar if sys.stdout.isatty() else Verbosity.epoch
    return verbosity


def _dataset(strategy, worker, ds, split, stats, clock):
    """One split's pipeline; with several workers, each worker's replicas get their slices of every batch
    (prepare() checked that the batch splits evenly across the replicas)."""
    import tensorflow as tf

    from bionn.data.pipeline import ReplicaShard, make_dataset

    if worker.count == 1:
        return make_dataset(ds, split, stats, clock)
    replicas = strategy.num_replicas_in_sync

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        shard = ReplicaShard(first=context.input_pipeline_id * local, count=local, total=replicas)
        return make_dataset(ds, split, stats, clock, shard=shard)

    return strategy.distribute_datasets_from_function(per_worker)


def _weights_digest(model) -> str:
    """SHA-256 of every weight's bytes: equal on all workers of one training, logged by each."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()


def _info(cfg, ds, stats, model, strategy, worker) -> dict:
    import tensorflow as tf

    from bionn.provenance import provenance

    return {
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "data": {
            "feature_shape": list(ds.feature_shape),
            "n_labels": ds.n_labels,
            "splits": {split: list(rng) for split, rng in ds.splits.items()},
            "rk4_substeps": ds.n_sub,
            "statistics": stats.summary(),
        },
        "parameters": int(model.count_params()),
        "provenance": provenance(),  # bionn, the data engine, the git commit, the libraries
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "replicas": strategy.num_replicas_in_sync,
        "workers": worker.count,
        "slurm": slurm_info(),
        "command": sys.argv,
    }


def _plot_history(history: dict[str, list[float]], folder: Path) -> None:
    """One PNG per metric: training and validation curves over epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    for key in (k for k in history if not k.startswith("val_")):
        fig, ax = plt.subplots(figsize=(6, 4))
        epochs = range(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], marker="o", label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", label="validation")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
        ax.grid(alpha=0.3)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        atomic_write_bytes(folder / f"{key}.png", buffer.getvalue())


def _finite(value: float) -> float | None:
    """JSON has no NaN: non-finite values are written as null."""
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _nan_to_inf(value: float | None) -> float:
    return float("inf") if value is None else float(value)
