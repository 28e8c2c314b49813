"""logger=tensorboard on every backend: Keras' own TensorBoard callback on TensorFlow, and on other
backends `EpochScalars`, which writes the same epoch scalars without TensorFlow.

Keras' callback writes through tf.summary, so it imports TensorFlow; under runtime.backend=jax the
process imports none (docs/backends.md). EpochScalars writes with the tensorboard package's own
record writer and protos, which import no TensorFlow (tensorboard.compat.tf would: it is not used).
Its files read as Keras' do: train/ and validation/ beside each other, one scalar per log key named
epoch_<key> (val_<key> as epoch_<key> in validation/), plus the optimizer's learning rate in train/,
at step = the epoch index; and after each validation evaluation_<key>_vs_iterations at the optimizer's
step. Keras' model config (its "graph") is not written.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import BinaryIO

import keras
from keras import ops
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.scalar.summary_v2 import scalar_pb
from tensorboard.summary.writer.record_writer import RecordWriter

# Where Keras' callback writes each side of the logs, below its log_dir.
TRAIN, VALIDATION = "train", "validation"


class EventFile:
    """One TensorBoard event file, written by appending records (as tf.summary's writer does)."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.v2"
        self.path = folder / name
        self._file: BinaryIO = open(self.path, "ab")  # noqa: SIM115 (closed by close())
        self._records = RecordWriter(self._file)
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One event per scalar at `step`, flushed: a TensorBoard reading the folder sees them at once."""
        for tag, value in values.items():
            self._write(event_pb2.Event(wall_time=time.time(), step=step, summary=scalar_pb(tag, value)))
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def _write(self, event: event_pb2.Event) -> None:
        self._records.write(event.SerializeToString())


class EpochScalars(keras.callbacks.Callback):
    """The epoch scalars Keras' TensorBoard callback writes, in log_dir/train and log_dir/validation."""

    def __init__(self, log_dir: Path):
        super().__init__()
        self.log_dir = Path(log_dir)
        self._files: dict[str, EventFile] = {}

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        train = {f"epoch_{k}": float(v) for k, v in logs.items() if not k.startswith("val_")}
        train.update(self._learning_rates())
        validation = {f"epoch_{k[4:]}": float(v) for k, v in logs.items() if k.startswith("val_")}
        self._write(TRAIN, epoch, train)
        self._write(VALIDATION, epoch, validation)

    def on_test_end(self, logs=None):
        """After each validation: evaluation_<key>_vs_iterations at the optimizer's step."""
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and hasattr(optimizer, "iterations"):
            step = int(ops.convert_to_numpy(optimizer.iterations))
            values = {f"evaluation_{k}_vs_iterations": float(v) for k, v in (logs or {}).items()}
            self._write(VALIDATION, step, values)

    def on_train_end(self, logs=None):
        for file in self._files.values():
            file.close()
        self._files = {}

    def _write(self, side: str, step: int, values: dict[str, float]) -> None:
        if values:  # a file per side once it has scalars (each attempt its own, as with Keras' writer)
            if side not in self._files:
                self._files[side] = EventFile(self.log_dir / side)
            self._files[side].scalars(step, values)

    def _learning_rates(self) -> dict[str, float]:
        """epoch_learning_rate as Keras' callback finds it (through a loss-scale optimizer)."""
        optimizer = getattr(self.model, "optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            return {}
        return {"epoch_learning_rate": float(ops.convert_to_numpy(optimizer.learning_rate))}
