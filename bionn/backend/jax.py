"""The JAX backend: one process on all its local devices (keras.distribution.DataParallel), the feed of
a split as chunks of many batches, and training and evaluation by bionn's own chunked loop
(bionn.backend.jax_loop) instead of Keras' per-batch one.

Multi-host training stays on TensorFlow (MultiWorkerMirroredStrategy): a Slurm step of more than one
task is refused here. On CPU, runtime.cpu_replicas host devices come from XLA_FLAGS, which
bionn.backend.select sets before JAX starts.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import jax
import keras

from bionn.backend import jax_loop
from bionn.clock import EpochClock
from bionn.config.errors import ConfigError
from bionn.data.dataset import KineticsDataset
from bionn.data.pipeline import batch_source
from bionn.data.stats import Statistics
from bionn.pins import require_tested
from bionn.slurm import Worker, step_tasks

MULTI_HOST = (
    "runtime.backend = jax is invalid in a Slurm step of {tasks} tasks: bionn trains on JAX in one process "
    "(all of its node's devices); multi-host training stays on TensorFlow's MultiWorkerMirroredStrategy. "
    "Use runtime.backend=tensorflow, or one node with one task (hydra.launcher.nodes=1, tasks_per_node=1)."
)


def keep_tensorflow_out() -> None:
    """Tell Keras that TensorFlow is absent from this process. Keras asks `tf.available` (an import of
    TensorFlow wherever it is installed) to seed it in keras.utils.set_random_seed and to look for its
    types when it saves a model; a JAX process never uses it (the pinned Keras' module_utils)."""
    from keras.src.utils import module_utils

    require_tested("keras")
    # Only where Keras runs on JAX (this module is also imported to be inspected) and TensorFlow was not
    # already loaded through Keras before this backend started.
    if keras.backend.backend() == "jax" and module_utils.tensorflow.module is None:
        module_utils.tensorflow._available = False


keep_tensorflow_out()


@dataclass(frozen=True)
class Replicas:
    """The devices one JAX process trains on; the model's variables are replicated on all of them."""

    devices: tuple[jax.Device, ...]

    @property
    def num_replicas_in_sync(self) -> int:
        return len(self.devices)

    def scope(self) -> AbstractContextManager:
        return nullcontext()  # the layout is keras.distribution's, set once in make_strategy


def make_strategy(cpu_replicas: int = 1) -> tuple[Replicas, Worker]:
    """Every local GPU (or TPU); without them `cpu_replicas` host devices. More than one device: Keras'
    DataParallel, the batch split evenly across them."""
    if step_tasks() > 1:
        raise ConfigError(MULTI_HOST.format(tasks=step_tasks()))
    devices = jax.local_devices()
    if devices[0].platform == "cpu":
        if len(devices) < cpu_replicas:
            raise ConfigError(
                f"runtime.cpu_replicas = {cpu_replicas} is invalid here: this process already runs JAX "
                f"with {len(devices)} CPU device(s), and the device layout is fixed once JAX starts. Use "
                "one cpu_replicas value per process (sweep it with a launcher that starts one process "
                "per job)."
            )
        devices = devices[:cpu_replicas]
    if len(devices) > 1:
        names = [f"{d.platform}:{d.id}" for d in devices]
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=names))
    return Replicas(tuple(devices)), Worker()


def feed(
    strategy: Replicas,
    worker: Worker,
    ds: KineticsDataset,
    split: str,
    stats: Statistics,
    clock: EpochClock,
    fixed: bool = False,
) -> jax_loop.Feed:
    """One split's batch source, generated chunk by chunk by the loop (bionn.backend.jax_loop); a fixed
    one small enough (bionn.data.pipeline.KEEP_BYTES) stays on the device after its first pass."""
    source = batch_source(ds, split, stats, clock)
    return jax_loop.Feed(source, keep=fixed and source.keepable())


def fit(model, train, validation, *, initial_epoch, epochs, callbacks, verbose) -> None:
    """Train `model` from `initial_epoch` to `epochs` (bionn.backend.jax_loop.fit)."""
    jax_loop.fit(
        model,
        train,
        validation,
        initial_epoch=initial_epoch,
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
    )


def evaluate(model, feed: jax_loop.Feed) -> dict[str, float]:
    """Loss and metrics of one split, as model.evaluate(return_dict=True) names them."""
    return jax_loop.evaluate(model, feed)


def tensorboard(log_dir: Path) -> keras.callbacks.Callback:
    """The epoch scalars Keras' TensorBoard callback writes, without TensorFlow (bionn.nn.tensorboard;
    imported only here: the tensorboard package need not be installed without that logger)."""
    from bionn.nn.tensorboard import EpochScalars

    return EpochScalars(log_dir)


def enable_determinism() -> None:
    """Nothing to switch on here: XLA's CPU kernels are deterministic, and its GPU kernels are made so by
    bionn.backend.GPU_DETERMINISM_FLAG, which bionn.backend.select puts in XLA_FLAGS before JAX starts."""


def devices() -> list[str]:
    return [f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.local_devices()]


def gpu_capabilities() -> list[tuple[int, int]]:
    found = []
    for device in jax.local_devices():
        capability = getattr(device, "compute_capability", None)
        if device.platform == "gpu" and capability:
            found.append(tuple(int(p) for p in str(capability).split(".")[:2]))
    return found
