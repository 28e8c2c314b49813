"""The seam between a run and the framework Keras computes with: what bionn.run asks of a backend
(`Backend`), and which module answers for Keras' backend (`current()`); one module per backend.

Only bionn.backend.<name> imports its framework; everything above it uses Keras, NumPy and this
interface: TensorFlow (bionn.backend.tensorflow: Keras' own fit over tf.data) and JAX
(bionn.backend.jax: a chunked, jitted training loop, bionn.backend.jax_loop). Keras reads its
backend once, when it is first imported: `select(runtime.backend)` comes first in every process
that decides one (train.py, bionn.train.run, a search worker, the CLIs that load models), and it
imports no framework itself (docs/backends.md).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import warnings
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bionn.cache import cache_root
from bionn.config.errors import ConfigError

if TYPE_CHECKING:
    from bionn.clock import EpochClock
    from bionn.data.dataset import KineticsDataset
    from bionn.data.stats import Statistics
    from bionn.slurm import Worker

# Backends by Keras' name for them (keras.backend.backend()): the module that implements `Backend`.
BACKENDS = {"tensorflow": "bionn.backend.tensorflow", "jax": "bionn.backend.jax"}
# The XLA flag that splits the host CPU into devices (keras.distribution.DataParallel's replicas).
HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"
# The XLA flag that makes GPU reductions deterministic (runtime.deterministic; XLA's CPU kernels are).
GPU_DETERMINISM_FLAG = "--xla_gpu_deterministic_ops"
# The most JAX's compiled programs take in bionn's cache (TR's programs take about 1 MB).
COMPILED_BYTES = 1 << 30
ONE_PER_PROCESS = "sweep it with a launcher that starts one process per job: hydra/launcher=local or slurm"

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
        fixed: bool = False,
    ) -> Any:
        """One split's normalised batches in the form this backend's fit/evaluate take. `fixed`: the
        feed serves the same batches every pass (an evaluation's): a backend may keep them after the
        first pass, up to bionn.data.pipeline.KEEP_BYTES."""

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

    def tensorboard(self, log_dir: Path) -> Any:
        """The Keras callback of logger=tensorboard, writing the epoch scalars into `log_dir`."""

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


def select(name: str, cpu_replicas: int = 1, deterministic: bool = False) -> None:
    """Make `name` Keras' backend in this process (call before Keras is imported; again is a no-op);
    for jax, the host CPU becomes `cpu_replicas` devices, and with `deterministic` XLA's GPU kernels
    are made deterministic (runtime.deterministic; read when JAX starts). ConfigError if this process
    already runs another backend or device count, or if the framework is not installed."""
    name = str(name)
    if name not in BACKENDS:
        raise ConfigError(
            f"backend {name!r} (runtime.backend, --backend or $KERAS_BACKEND) is invalid: allowed: "
            f"{', '.join(BACKENDS)}"
        )
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != name:
        raise ConfigError(
            f"runtime.backend = {name} is invalid here: this process already runs Keras on "
            f"{keras.backend.backend()}, and Keras' backend is fixed once Keras is imported. Use one "
            f"runtime.backend per process ({ONE_PER_PROCESS})."
        )
    missing = [
        m for m in (("jax", "jaxlib") if name == "jax" else (name,)) if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise ConfigError(_install_hint(name, missing))
    os.environ["KERAS_BACKEND"] = name
    if name == "jax":
        _split_host(cpu_replicas, deterministic)
        _keep_compiled()
        # bionn's inference models standardise raw features in float64 (bionn.nn.inference); JAX, without
        # x64, computes that in float32 and would say so at every predict. The outputs agree with
        # TensorFlow's all the same (tests/test_keras_backends.py).
        warnings.filterwarnings("ignore", "Explicitly requested dtype float64", UserWarning)


def default_name() -> str:
    """The backend of a command given none: $KERAS_BACKEND if set, else tensorflow where it is
    installed, else jax."""
    if "KERAS_BACKEND" in os.environ:
        return os.environ["KERAS_BACKEND"]
    return "tensorflow" if importlib.util.find_spec("tensorflow") is not None else "jax"


def add_option(parser: argparse.ArgumentParser) -> None:
    """--backend of a command that loads Keras models (bionn-evaluate, bionn-predict)."""
    parser.add_argument(
        "--backend",
        choices=tuple(BACKENDS),
        default=default_name(),
        help="the framework under Keras (default: $KERAS_BACKEND, else tensorflow if installed, else jax)",
    )


def _install_hint(name: str, missing: list[str]) -> str:
    if name == "jax":
        return (
            f"runtime.backend = jax needs JAX, and this environment lacks {' and '.join(missing)}: install "
            "it with `bash scripts/setup.sh` (a checkout) or `pip install -e '.[jax]'` (CPU); for NVIDIA "
            "GPUs docs/backends.md says how (an environment of its own, without TensorFlow)"
        )
    return (
        "runtime.backend = tensorflow (the default) needs TensorFlow, and this environment lacks it: "
        "add runtime.backend=jax (an environment with JAX only), or install bionn's dependencies with "
        "`bash scripts/setup.sh`"
    )


def _keep_compiled() -> None:
    """JAX keeps the programs it compiles in bionn's cache (jax/, at most COMPILED_BYTES, least recently
    used first out), so that the next run of the same model, shapes and JAX release loads them instead
    of compiling again: a requeued job, a resumed run, every job of a sweep after the first. The
    program is the same one, so the results are too. A JAX setting the user made in the environment
    stands ($JAX_COMPILATION_CACHE_DIR: another folder; empty: no cache)."""
    settings = {
        "jax_compilation_cache_dir": str(cache_root() / "jax"),
        "jax_persistent_cache_min_compile_time_secs": 0.0,  # also the many small programs of Keras' setup
        "jax_persistent_cache_min_entry_size_bytes": 0,
        "jax_compilation_cache_max_size": COMPILED_BYTES,
    }
    ours = {key: value for key, value in settings.items() if key.upper() not in os.environ}
    for key, value in ours.items():
        os.environ[key.upper()] = str(value)
    jax = sys.modules.get("jax")
    if jax is not None:  # already started: it read its environment then
        for key, value in ours.items():
            jax.config.update(key, value)


def _split_host(devices: int, deterministic: bool) -> None:
    """XLA_FLAGS asks for `devices` host devices and, with `deterministic`, deterministic GPU kernels
    (other flags kept); JAX reads it when it starts, so an already started JAX must have that many."""
    before = os.environ.get("XLA_FLAGS")
    ours = (HOST_DEVICES_FLAG, GPU_DETERMINISM_FLAG)
    kept = [f for f in (before or "").split() if f.split("=")[0] not in ours]
    flags = [f"{HOST_DEVICES_FLAG}={devices}", *([f"{GPU_DETERMINISM_FLAG}=true"] if deterministic else [])]
    os.environ["XLA_FLAGS"] = " ".join([*kept, *flags])
    jax = sys.modules.get("jax")
    if jax is None:
        return
    have = len(jax.devices("cpu"))  # starts JAX with the flags above unless it already ran
    if have != devices:
        if before is None:
            del os.environ["XLA_FLAGS"]
        else:
            os.environ["XLA_FLAGS"] = before
        raise ConfigError(
            f"runtime.cpu_replicas = {devices} is invalid here: this process already runs JAX with {have} "
            "CPU device(s), and the device layout is fixed once JAX starts. Use one cpu_replicas value per "
            f"process ({ONE_PER_PROCESS})."
        )
