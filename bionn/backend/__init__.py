"""The seam between a run and the framework Keras computes with: what bionn.run asks of a backend
(`Backend`), and which module answers for Keras' backend (`current()`); one module per backend.

Only bionn.backend.<name> imports its framework; everything above it uses Keras, NumPy and this
interface: TensorFlow (bionn.backend.tensorflow: Keras' own fit over tf.data) and JAX
(bionn.backend.jax: a chunked, jitted training loop, bionn.backend.jax_loop).
"""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bionn.clock import EpochClock
    from bionn.data.dataset import KineticsDataset
    from bionn.data.stats import Statistics
    from bionn.slurm import Worker

# Backends by Keras' name for them (keras.backend.backend()): the module that implements `Backend`.
BACKENDS = {"tensorflow": "bionn.backend.tensorflow", "jax": "bionn.backend.jax"}

# Task i of a job on a node listens on port_base(job) + i: each job gets its own block of
# PORT_STRIDE ports below Linux's ephemeral range, so jobs sharing a node do not collide
# unless their ids are equal modulo PORT_SLOTS.
PORT_FIRST, PORT_STRIDE, PORT_SLOTS = 12000, 16, 1250


def port_base(job_id: int) -> int:
    """The first port of Slurm job `job_id`'s block (multi-worker training's task ports)."""
    return PORT_FIRST + (job_id % PORT_SLOTS) * PORT_STRIDE


class Strategy(Protocol):
    """Where the model's variables live and how many replicas share each batch."""

    @property
    def num_replicas_in_sync(self) -> int: ...

    def scope(self) -> AbstractContextManager: ...


class Backend(Protocol):
    """What a run needs from the framework under Keras."""

    def make_strategy(self, cpu_replicas: int = 1) -> tuple[Strategy, Worker]:
        """The strategy of this process and its place among the workers (ConfigError if impossible)."""

    def feed(
        self,
        strategy: Strategy,
        worker: Worker,
        ds: KineticsDataset,
        split: str,
        stats: Statistics,
        clock: EpochClock,
    ) -> Any:
        """One split's normalised batches in the form `model.fit`/`evaluate` take on this backend."""

    def fit(
        self,
        model: Any,
        train: Any,
        validation: Any,
        *,
        initial_epoch: int,
        epochs: int,
        callbacks: list,
        verbose: int,
    ) -> None:
        """Train `model` (compiled) on the `train` feed from initial_epoch to epochs, validating on
        `validation` after every epoch (val_* logs), with Keras callbacks, as `keras.Model.fit` does."""

    def evaluate(self, model: Any, feed: Any) -> dict[str, float]:
        """Loss and metrics of `model` over one feed, named as `model.evaluate(return_dict=True)` does."""

    def enable_determinism(self) -> None:
        """Make the framework's own kernels deterministic (runtime.deterministic)."""

    def devices(self) -> list[str]:
        """The names of the devices this process computes on (info.json)."""

    def gpu_capabilities(self) -> list[tuple[int, int]]:
        """The CUDA compute capability of every GPU this process sees (empty without GPUs)."""


def current() -> Backend:
    """The backend module of Keras' backend; ValueError names the ones bionn has."""
    import keras

    name = keras.backend.backend()
    if name not in BACKENDS:
        raise ValueError(
            f"Keras runs on {name!r}, which bionn has no backend for; allowed: {', '.join(BACKENDS)}"
        )
    return importlib.import_module(BACKENDS[name])
