"""Callbacks that keep a run folder trustworthy: data epoch, history, periodic results, backup."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from bionn.data.pipeline import EpochClock
from bionn.io import atomic_path, atomic_save_npz, atomic_write_bytes, atomic_write_json


class EpochClockCallback(keras.callbacks.Callback):
    """Tell the training pipeline which epoch starts (it decides the order and, if fresh, the samples)."""

    def __init__(self, clock: EpochClock):
        super().__init__()
        self.clock = clock

    def on_epoch_begin(self, epoch, logs=None):
        self.clock.epoch = epoch


class HistoryCSV(keras.callbacks.Callback):
    """history.csv rewritten atomically after every epoch; a resumed run drops rows it will redo."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict] = []

    def on_train_begin(self, logs=None):
        if self.path.exists():
            with open(self.path, newline="") as handle:
                self.rows = list(csv.DictReader(handle))

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch]
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(self.path, buffer.getvalue().encode())

    def history(self) -> dict[str, list[float]]:
        keys = [k for k in (self.rows[0] if self.rows else {}) if k != "epoch"]
        return {k: [float(r[k]) if r.get(k) not in (None, "") else math.nan for r in self.rows] for k in keys}


class PeriodicResults(keras.callbacks.Callback):
    """Every `interval` epochs: the model as model_epoch_N.keras and results_epoch_N.json.

    Every worker of a multi-worker training evaluates (a collective); only the chief (`write`) saves.
    """

    def __init__(
        self, interval: int, run_dir: Path, evaluate: Callable[[keras.Model], dict], write: bool = True
    ):
        super().__init__()
        self.interval = interval
        self.run_dir = Path(run_dir)
        self.evaluate = evaluate
        self.write = write

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        if not self.interval or number % self.interval:
            return
        if self.write:
            save_model(self.model, self.run_dir / "checkpoints" / f"model_epoch_{number}.keras")
        results = {"epoch": number, "logs": {k: float(v) for k, v in (logs or {}).items()}}
        results["evaluation"] = self.evaluate(self.model)
        if self.write:
            atomic_write_json(self.run_dir / f"results_epoch_{number}.json", results)


class RunBackup(keras.callbacks.Callback):
    """backup/ in the run folder: where a stopped run resumes, committed atomically after every epoch.

    Keras' BackupAndRestore rewrites its weights file and then its epoch file in place, so a kill
    during or between the two writes leaves a backup that fails to load or resumes at the wrong
    epoch. Here each epoch saves a new weights file (model and optimizer) under a temporary name,
    renames it into place, and then replaces state.json: the commit, naming the epoch to resume
    at, that file and the early-stopping state. Superseded files go after the commit, so a kill at
    any moment leaves the last resume point or the new one, whole.

    Keep it last in the callback list: it commits after every other callback wrote its files
    for the epoch (a kill before the commit trains the epoch again and rewrites them) and it
    restores early stopping after that callback's own reset. Only the chief writes (`write`);
    every worker restores.
    """

    STATE = "state.json"

    def __init__(
        self,
        directory: Path,
        early: keras.callbacks.EarlyStopping | None = None,
        write: bool = True,
    ):
        super().__init__()
        self.directory = Path(directory)
        self.early = early
        self.write = write
        self.stopped = False  # the restored state ended training (early stopping or NaN)
        self._early_state: dict | None = None

    def restore(self, model: keras.Model) -> int:
        """Load the committed weights into `model` (built and compiled, inside its strategy's scope);
        returns the epoch to resume at, 0 without a backup."""
        state = self._read_state()
        if self.write:
            self._prune(state)
        if not state:
            return 0
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its variables are in the weights file
        model.load_weights(self.directory / state["weights"])
        self.stopped = bool(state["stopped"])
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
        }
        with atomic_path(self.directory / state["weights"]) as tmp:
            self.model.save_weights(tmp)
        if self.early is not None:
            state["early_stopping"] = self._early_snapshot()
        atomic_write_json(self.directory / self.STATE, state)
        self._prune(state)

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

    def _read_state(self) -> dict | None:
        path = self.directory / self.STATE
        return json.loads(path.read_text()) if path.exists() else None

    def _prune(self, state: dict | None) -> None:
        """Delete what no commit refers to: superseded files and temporary files of a killed save."""
        keep = {self.STATE}
        if state:
            keep |= {state["weights"], (state.get("early_stopping") or {}).get("best_weights")}
        for path in self.directory.glob("*"):
            if path.name not in keep and path.name.startswith((".tmp-", "epoch_", "best_epoch_")):
                path.unlink(missing_ok=True)


def save_model(model: keras.Model, path: Path) -> None:
    """model.save, atomically."""
    with atomic_path(path) as tmp:
        model.save(tmp)
