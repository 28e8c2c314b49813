"""finish: the trained model evaluated and saved with its plots and final_results.json, which marks the
run finished, and the attempt recorded as completed."""

from __future__ import annotations

import logging
import math
import time

from bionn.config.dataset import split_sizes
from bionn.run.artefacts import fmt, nan_to_inf, plot_history
from bionn.run.training import Training
from bionn.run_folder import FINAL, MODEL, PLOTS, Outcome, Status, remove_backup

log = logging.getLogger("bionn.train")


def finish(training: Training, fit_time: float, started: float) -> float:
    """Evaluate, save the model, plots and final_results.json; returns the validation loss.
    fit_time: the seconds fit() took; started: the attempt's start (time.time())."""
    from bionn.baseline import reference_scores
    from bionn.nn.callbacks import save_model
    from bionn.trained import save_inference_models

    folder = training.folder
    if not training.worker.is_chief:
        training.evaluate()  # a collective: the chief's evaluation needs every worker
        return math.nan
    history = training.history.history()
    losses = history.get("loss", [])
    status = final_status(training, losses)
    evaluation = training.evaluate()
    save_model(training.model, folder / MODEL)
    best = save_inference_models(folder, training.model)  # inference_{best,last}.keras
    plot_history(history, folder / PLOTS)
    val_losses = [v for v in history.get("val_loss", []) if math.isfinite(v)]
    shape = training.cfg.dataset.shape
    train_size = split_sizes(int(shape.n_samples), list(shape.splits))[0]
    trained = (len(losses) - training.initial_epoch) * train_size
    folder.write_json(
        FINAL,
        {
            "status": status.value,
            "epochs_completed": len(losses),
            "training_time_s": round(fit_time, 3),
            # this attempt's training samples and their rate over training_time_s (validation included)
            "train_samples": trained,
            "train_samples_per_s": round(trained / fit_time, 1) if fit_time > 0 else None,
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
        fmt(test.get("r2_mean")),
        fmt(test.get("r_squared")),
        folder.path,
    )
    if training.tracker is not None:
        training.tracker.end(status)  # its last line: how to browse the MLflow store
    return nan_to_inf(evaluation["validation"]["loss"])


def final_status(training: Training, losses: list[float]) -> Status:
    """How training ended: a NaN loss, pruned (the backup's state or a callback), early-stopped, completed."""
    if any(not math.isfinite(v) for v in losses):
        return Status.NAN
    if training.backup.pruned or any(getattr(callback, "pruned", False) for callback in training.callbacks):
        return Status.PRUNED
    if training.early is not None and training.early.stopped_epoch > 0:
        return Status.EARLY_STOPPED
    return Status.COMPLETED
