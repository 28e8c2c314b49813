"""Callbacks that keep a run folder trustworthy: data epoch, history, periodic results."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from pathlib import Path

import keras

from bionn.data.pipeline import EpochClock
from bionn.io import atomic_write_bytes, atomic_write_json


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


class ReadOnlyBackup(keras.callbacks.BackupAndRestore):
    """A non-chief worker's BackupAndRestore: restores the chief's backup, never writes or deletes it."""

    def on_train_begin(self, logs=None):
        self._load_model()

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class Barrier(keras.callbacks.Callback):
    """At train begin, wait for every worker (orders the chief's backup repair before the others' reads)."""

    def on_train_begin(self, logs=None):
        from bionn.distribute import barrier

        barrier(self.model.distribute_strategy)


def save_model(model: keras.Model, path: Path) -> None:
    """model.save to a temporary .keras file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    tmp.replace(path)
