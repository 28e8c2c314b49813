"""run(cfg): data -> model -> fit -> evaluate -> artefacts, in one run folder.

The run folder holds Hydra's .hydra/, info.json, history.csv, tensorboard/,
checkpoints/ and results_epoch_N.json every save_interval epochs, backup/ (the
state after the last finished epoch, from which the same command continues in the
same folder, deleted once the run finished), and at the end model.keras,
final_results.json and plots/*.png. A failure writes error.json, keeps what was
written, and re-raises (non-zero exit); inside a multirun reported by
bionn.report.SweepReport it returns instead, and the report exits non-zero when
the sweep ends.
"""

from __future__ import annotations

import hashlib
import io
import math
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bionn.config.schema import check_run
from bionn.config.tree import print_config_tree
from bionn.io import atomic_write_bytes, atomic_write_json
from bionn.slurm import current_worker, slurm_info

SPLIT_KEYS = {"train": "train", "val": "validation", "test": "test"}
FINISHED = ("completed", "early_stopped", "nan")


def run_directory() -> Path:
    """Hydra's output folder of this job, or the working directory outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path.cwd()


def run(cfg: Any, run_dir: Path | None = None) -> float:
    """Train one composed config; returns the final validation loss (what a sweeper minimises)."""
    run_dir = Path(run_dir or run_directory())
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = _read_json(run_dir / "final_results.json")
    if previous and previous.get("status") in FINISHED:
        print(
            f"bionn: {run_dir} already finished ({previous['status']}); delete final_results.json to redo it"
        )
        return _nan_to_inf(previous["evaluation"]["validation"]["loss"])
    started = time.time()
    try:
        check_run(cfg)
        return _train(cfg, run_dir, started)
    except BaseException as err:
        if not current_worker().is_chief:  # the chief records the failure; a worker's is in its log
            raise
        atomic_write_json(
            run_dir / "error.json",
            {"type": type(err).__name__, "message": str(err), "traceback": traceback.format_exc()},
        )
        atomic_write_json(
            run_dir / "final_results.json",
            {
                "status": "failed",
                "error": f"{type(err).__name__}: {err}",
                "epochs_completed": _epochs_in_history(run_dir / "history.csv"),
                "training_time_s": round(time.time() - started, 3),
                "evaluation": None,
            },
        )
        if isinstance(err, Exception) and _sweep_report_collects_failures():
            traceback.print_exc()
            print(
                f"bionn: job failed, the sweep goes on; the sweep report names it ({run_dir})",
                file=sys.stderr,
            )
            return float("inf")
        raise


def _sweep_report_collects_failures() -> bool:
    """True in a multirun whose hydra.callbacks include bionn.report.SweepReport: that callback
    names the failed jobs and exits non-zero when the sweep ends, so a failed job returns and
    the other jobs still run (Hydra would otherwise stop the sweep at the first exception)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except ValueError:
        return False
    callbacks = hydra_cfg.get("callbacks") or {}
    return hydra_cfg.mode == RunMode.MULTIRUN and any(
        str(c.get("_target_", "")) == "bionn.report.SweepReport" for c in callbacks.values()
    )


def _train(cfg: Any, run_dir: Path, started: float) -> float:
    import keras
    import tensorflow as tf

    from bionn.baseline import reference_scores
    from bionn.data.dataset import KineticsDataset
    from bionn.data.pipeline import EpochClock
    from bionn.data.stats import STD_EPSILON, load_or_compute_statistics
    from bionn.distribute import make_strategy
    from bionn.nn.callbacks import (
        EpochClockCallback,
        HistoryCSV,
        PeriodicResults,
        RunBackup,
        save_model,
    )
    from bionn.nn.model import build_model
    from bionn.nn.optim import apply_precision, compile_for_training

    print_config_tree(cfg)
    strategy, worker = make_strategy(cfg.runtime.cpu_replicas)
    chief = worker.is_chief
    keras.utils.set_random_seed(cfg.runtime.seed)
    if cfg.runtime.deterministic:
        tf.config.experimental.enable_op_determinism()

    ds = KineticsDataset(cfg.dataset, source=f"conf/dataset/{cfg.dataset.name}.yaml")
    stats = load_or_compute_statistics(ds, cfg.training.use_stats_of, cfg.runtime.stats_cache_dir)
    clock = EpochClock()
    train_data = _dataset(strategy, worker, ds, "train", stats, clock)
    splits = {split: _dataset(strategy, worker, ds, split, stats, EpochClock()) for split in SPLIT_KEYS}

    # Scaled labels: the loss sees standardised labels, the model and metrics the original ones.
    label_scaling = (stats.label_mean, stats.label_std + STD_EPSILON) if cfg.training.scale_labels else None
    apply_precision(cfg.training, f"conf/training/{cfg.training.name}.yaml")  # issue 16: dtype policy
    steps_per_epoch = math.ceil(ds.split_size("train") / ds.batch_size)  # issue 16: schedule length
    with strategy.scope():
        model = build_model(cfg.model, ds.feature_shape, ds.n_labels, label_scaling)
        r2, schedule_callbacks = compile_for_training(model, cfg.training, steps_per_epoch, label_scaling)

    def evaluate(m: keras.Model) -> dict:
        results = {}
        for split, key in SPLIT_KEYS.items():
            metrics = {
                k: _finite(v) for k, v in m.evaluate(splits[split], verbose=0, return_dict=True).items()
            }
            metrics["r2_per_output"] = [_finite(v) for v in r2.per_output()]
            results[key] = metrics
        return results

    if chief:
        atomic_write_json(run_dir / "info.json", _info(cfg, ds, stats, model, strategy, worker))
    history = HistoryCSV(run_dir / "history.csv")
    early = None
    if cfg.training.early_stopping_patience:
        early = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=cfg.training.early_stopping_patience, restore_best_weights=True
        )
    backup = RunBackup(run_dir / "backup", early, write=chief)
    with strategy.scope():
        initial_epoch = backup.restore(model)
    # The training iterator may start before the first epoch begins: point the clock at the resumed epoch.
    clock.epoch = initial_epoch
    if initial_epoch:
        print(f"bionn: resuming {run_dir} at epoch {initial_epoch + 1}")
    callbacks = [
        EpochClockCallback(clock),
        *([history] if chief else []),
        PeriodicResults(cfg.training.save_interval, run_dir, evaluate, write=chief),
        keras.callbacks.TerminateOnNaN(),
        *([keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"))] if chief else []),
        *([early] if early else []),
        *schedule_callbacks,  # issue 16: reduce-on-plateau
        backup,  # last: commits once the epoch's other files are written
    ]
    fit_started = time.time()
    model.fit(
        train_data,
        validation_data=splits["val"],
        initial_epoch=initial_epoch,
        epochs=initial_epoch if backup.stopped else cfg.training.epochs,
        callbacks=callbacks,
        verbose=cfg.training.verbose,
        shuffle=False,  # the pipeline orders each epoch itself
    )
    fit_time = time.time() - fit_started
    print(f"bionn: worker {worker.index}/{worker.count} weights sha256 {_weights_digest(model)}")
    if not chief:
        evaluate(model)  # a collective: the chief's evaluation needs every worker
        return math.nan
    losses = history.history().get("loss", [])
    if any(not math.isfinite(v) for v in losses):
        status = "nan"
    elif early is not None and early.stopped_epoch > 0:
        status = "early_stopped"
    else:
        status = "completed"
    evaluation = evaluate(model)
    save_model(model, run_dir / "model.keras")
    _plot_history(history.history(), run_dir / "plots")
    val_losses = [v for v in history.history().get("val_loss", []) if math.isfinite(v)]
    atomic_write_json(
        run_dir / "final_results.json",
        {
            "status": status,
            "epochs_completed": len(losses),
            "training_time_s": round(fit_time, 3),
            "wall_time_s": round(time.time() - started, 3),
            "best_val_loss": min(val_losses) if val_losses else None,
            "evaluation": evaluation,
            "reference": reference_scores(cfg.dataset, cfg.runtime.stats_cache_dir),  # issue 16
        },
    )
    shutil.rmtree(run_dir / "backup", ignore_errors=True)  # final_results.json now marks the run finished
    print(f"bionn: {status} after {len(losses)} epoch(s); results in {run_dir}")
    return _nan_to_inf(evaluation["validation"]["loss"])


def _dataset(strategy, worker, ds, split, stats, clock):
    """One split's pipeline; with several workers, each worker's replicas get their slices of every batch."""
    import tensorflow as tf

    from bionn.config.schema import ConfigError
    from bionn.data.pipeline import ReplicaShard, make_dataset

    if worker.count == 1:
        return make_dataset(ds, split, stats, clock)
    replicas = strategy.num_replicas_in_sync
    if ds.batch_size % replicas:
        raise ConfigError(
            f"conf/dataset/{ds.cfg.name}.yaml: dataset.shape.batch_size = {ds.batch_size} is invalid for "
            f"{replicas} replicas on {worker.count} workers: must be a multiple of {replicas}"
        )

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        shard = ReplicaShard(first=context.input_pipeline_id * local, count=local, total=replicas)
        return make_dataset(ds, split, stats, clock, shard=shard)

    return strategy.distribute_datasets_from_function(per_worker)


def _weights_digest(model) -> str:
    """SHA-256 of every weight's bytes: equal on all workers of one training, printed to each log."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()


def _info(cfg, ds, stats, model, strategy, worker) -> dict:
    import hydra
    import keras
    import numba
    import numpy as np
    import tensorflow as tf

    return {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "data": {
            "feature_shape": list(ds.feature_shape),
            "n_labels": ds.n_labels,
            "splits": {split: list(rng) for split, rng in ds.splits.items()},
            "rk4_substeps": ds.n_sub,
            "statistics": stats.summary(),
        },
        "parameters": int(model.count_params()),
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "numba": numba.__version__,
            "hydra": hydra.__version__,
        },
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


def _nan_to_inf(value: float | None) -> float:
    return float("inf") if value is None else float(value)


def _read_json(path: Path) -> dict | None:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _epochs_in_history(path: Path) -> int:
    try:
        return max(0, len(path.read_text().strip().splitlines()) - 1)
    except OSError:
        return 0
