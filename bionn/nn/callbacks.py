"""Callbacks that keep a run's records trustworthy (data epoch, history, periodic results, backup),
tell the user how training goes (ProgressLog) and a search how its trial goes (ReportEpochs).

They name no file of a run folder: the caller hands them the records to write (EpochRecords, a
CommitFolder), bionn.run_folder's RunFolder and StateFolder in a training."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import keras
import numpy as np

from bionn.clock import EpochClock
from bionn.io import atomic_path, atomic_save_npz

log = logging.getLogger("bionn.train")
# Within a long epoch, ProgressLog writes a line this often (a batch job's log shows it is moving).
PROGRESS_EVERY_S = 60.0


class EpochRecords(Protocol):
    """Where a run's epochs are recorded: the history rows, each periodic result and its model."""

    def history_rows(self) -> list[dict[str, float]]: ...

    def write_history(self, rows: list[dict[str, float]]) -> None: ...

    def checkpoint(self, epoch: int) -> Path:
        """Where the model saved with the periodic results after `epoch` epochs goes."""
        ...

    def write_periodic_results(self, epoch: int, results: dict) -> None: ...


class CommitFolder(Protocol):
    """A folder of files and a state that commits them: files not named by the state are stale."""

    path: Path

    def state(self) -> dict | None: ...

    def commit(self, state: dict) -> None: ...


class EpochClockCallback(keras.callbacks.Callback):
    """Tell the training pipeline which epoch starts (it decides the order and, if fresh, the samples)."""

    def __init__(self, clock: EpochClock):
        super().__init__()
        self.clock = clock

    def on_epoch_begin(self, epoch, logs=None):
        self.clock.epoch = epoch


class HistoryCSV(keras.callbacks.Callback):
    """history.csv rewritten atomically after every epoch; a resumed run drops rows it will redo."""

    def __init__(self, folder: EpochRecords):
        super().__init__()
        self.folder = folder
        self.rows: list[dict] = []

    def on_train_begin(self, logs=None):
        self.rows = self.folder.history_rows()

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [r for r in self.rows if r["epoch"] < epoch]
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        self.folder.write_history(self.rows)

    def history(self) -> dict[str, list[float]]:
        """Metric name -> its value at every epoch so far (NaN where an epoch did not log it)."""
        metrics = dict.fromkeys(k for row in self.rows for k in row if k != "epoch")
        return {name: [row.get(name, math.nan) for row in self.rows] for name in metrics}


class ReportEpochs(keras.callbacks.Callback):
    """Hand every epoch's `metric` to `report(epoch, value)`; when it answers True, stop training and
    set `pruned` (bionn.train.finish then records the status pruned). A search's pruning (bionn.search)."""

    def __init__(self, metric: str, report: Callable[[int, float], bool]):
        super().__init__()
        self.metric, self.report = metric, report
        self.pruned = False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.metric not in logs:
            raise KeyError(
                f"the search's objective {self.metric!r} is not logged (logged: {', '.join(sorted(logs))})"
            )
        if self.report(epoch, float(logs[self.metric])):
            log.info("pruned after epoch %d (%s %.4f)", epoch + 1, self.metric, float(logs[self.metric]))
            self.pruned = True
            self.model.stop_training = True


class ProgressLog(keras.callbacks.Callback):
    """A log line per epoch (loss, validation loss and R-squared, seconds) and, with `within_epoch`,
    one every PROGRESS_EVERY_S seconds inside an epoch (batch b of n, loss so far)."""

    def __init__(self, within_epoch: bool = True):
        super().__init__()
        self.within_epoch = within_epoch
        self._epoch = 0
        self._started = self._last = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._started = self._last = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if self.within_epoch and now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            loss = (logs or {}).get("loss")
            log.info(
                "epoch %d/%d: batch %d/%s, loss %s (%.0f s)",
                self._epoch + 1,
                self.params.get("epochs"),
                batch + 1,
                self.params.get("steps") or "?",
                _short(loss),
                now - self._started,
            )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        shown = ("loss", "val_loss", "val_r2_mean", "val_r_squared")
        log.info(
            "epoch %d/%d: %s (%.1f s)",
            epoch + 1,
            self.params.get("epochs"),
            ", ".join(f"{k} {_short(logs[k])}" for k in shown if k in logs),
            time.monotonic() - self._started,
        )


def _short(value) -> str:
    return "?" if value is None else f"{float(value):.4g}"


class PeriodicResults(keras.callbacks.Callback):
    """Every `interval` epochs: the model as model_epoch_N.keras and results_epoch_N.json.

    Every worker of a multi-worker training evaluates (a collective); only the chief (`write`) saves.
    """

    def __init__(
        self, interval: int, folder: EpochRecords, evaluate: Callable[[keras.Model], dict], write: bool = True
    ):
        super().__init__()
        self.interval = interval
        self.folder = folder
        self.evaluate = evaluate
        self.write = write

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        if not self.interval or number % self.interval:
            return
        if self.write:
            save_model(self.model, self.folder.checkpoint(number))
        results = {"epoch": number, "logs": {k: float(v) for k, v in (logs or {}).items()}}
        results["evaluation"] = self.evaluate(self.model)
        if self.write:
            self.folder.write_periodic_results(number, results)


class RunBackup(keras.callbacks.Callback):
    """The resume point (`backup`: a run folder's backup/): where a stopped run resumes, committed
    atomically after every epoch.

    Keras' BackupAndRestore rewrites its weights file and then its epoch file in place, so a kill
    during or between the two writes leaves a backup that fails to load or resumes at the wrong
    epoch. Here each epoch saves a new weights file (model and optimizer) under a temporary name,
    renames it into place, and then commits the state (`backup.commit`), naming the epoch to resume
    at, that file and the early-stopping state. Superseded files go after the commit, so a kill at
    any moment leaves the last resume point or the new one, whole.

    Keep it last in the callback list: it commits after every other callback wrote its files
    for the epoch (a kill before the commit trains the epoch again and rewrites them) and it
    restores early stopping after that callback's own reset. Only the chief writes (`write`);
    every worker restores. `pruners`: callbacks whose true `pruned` attribute stopped training (a
    search's ReportEpochs); that decision is part of the commit, so a run killed after its pruned
    epoch resumes as pruned.
    """

    def __init__(
        self,
        backup: CommitFolder,
        early: keras.callbacks.EarlyStopping | None = None,
        write: bool = True,
        pruners: list[keras.callbacks.Callback] = (),
    ):
        super().__init__()
        self.backup = backup
        self.directory = backup.path
        self.early = early
        self.write = write
        self.pruners = list(pruners)
        self.stopped = False  # the restored state ended training (early stopping, NaN or pruning)
        self.pruned = False  # the restored state was pruned
        self._early_state: dict | None = None
        # Called with (epoch, logs) once an epoch is committed (a tracker logs it then: never twice).
        self.on_commit: list[Callable[[int, dict], None]] = []

    def restore(self, model: keras.Model) -> int:
        """Load the committed weights into `model` (built and compiled, inside its strategy's scope);
        returns the epoch to resume at, 0 without a backup."""
        state = self.backup.state()
        if self.write:
            self._prune(state)
        if not state:
            return 0
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its variables are in the weights file
        model.load_weights(self.directory / state["weights"])
        self.stopped = bool(state["stopped"])
        self.pruned = bool(state.get("pruned", False))
        self._early_state = state.get("early_stopping")
        return int(state["epoch"])

    def on_train_begin(self, logs=None):
        if self.early is None or not self._early_state:
            return
        state = self._early_state
        self.early.wait = state["wait"]
        self.early.stopped_epoch = state["stopped_epoch"]
        self.early.best = state["best"]
        self.early.best_epoch = state["best_epoch"]
        if state["best_weights"]:
            with np.load(self.directory / state["best_weights"]) as saved:
                self.early.best_weights = [saved[f"w{i}"] for i in range(len(saved.files))]

    def on_epoch_end(self, epoch, logs=None):
        if not self.write:
            return
        state = {
            "epoch": epoch + 1,
            "weights": f"epoch_{epoch + 1}.weights.h5",
            "stopped": bool(self.model.stop_training),
            "pruned": self.pruned or any(getattr(c, "pruned", False) for c in self.pruners),
        }
        with atomic_path(self.directory / state["weights"]) as tmp:
            self.model.save_weights(tmp)
        if self.early is not None:
            state["early_stopping"] = self._early_snapshot()
        self.backup.commit(state)
        self._prune(state)
        for listener in self.on_commit:
            listener(epoch, {k: float(v) for k, v in (logs or {}).items()})

    def _early_snapshot(self) -> dict:
        early = self.early
        best_weights = None
        if early.best_weights is not None:
            best_weights = f"best_epoch_{early.best_epoch + 1}.npz"
            if not (self.directory / best_weights).exists():  # saved once per best epoch
                atomic_save_npz(
                    self.directory / best_weights, **{f"w{i}": w for i, w in enumerate(early.best_weights)}
                )
        best = None if early.best is None else float(early.best)
        return {
            "wait": int(early.wait),
            "stopped_epoch": int(early.stopped_epoch),
            "best": best,
            "best_epoch": int(early.best_epoch),
            "best_weights": best_weights,
        }

    def _prune(self, state: dict | None) -> None:
        """Delete what no commit refers to: superseded files and temporary files of a killed save."""
        keep = set()
        if state:
            keep |= {state["weights"], (state.get("early_stopping") or {}).get("best_weights")}
        for path in self.directory.glob("*"):
            if path.name not in keep and path.name.startswith((".tmp-", "epoch_", "best_epoch_")):
                path.unlink(missing_ok=True)


def save_model(model: keras.Model, path: Path) -> None:
    """model.save, atomically."""
    with atomic_path(path) as tmp:
        model.save(tmp)
