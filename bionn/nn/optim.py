"""Training controls: learning-rate schedules, weight decay, precision and XLA.

`training.schedule` gives the learning rate per step (`LearningRate`): a linear
warm-up to `compile.learning_rate`, then constant, cosine decay to
`final_fraction` of the peak at the last step, exponential decay by `decay_rate`
every `decay_epochs`, or "plateau": constant until val_loss stalls for
`plateau_patience` epochs, then times `plateau_factor` (`PlateauCallback`).
`training.precision` sets the Keras dtype policy of the layers; the model's
last configured layer, the `Destandardise` layer and the loss stay float32
(`bionn.nn.model.build_model`). `check_precision` rejects a policy the hardware
has no arithmetic units for. docs/accuracy.md documents the defaults.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from bionn import backend
from bionn.config.errors import ConfigError
from bionn.config.schema import Precision, Schedule
from bionn.machine import cpu_flags

# CPU feature flags (/proc/cpuinfo) with which TensorFlow's CPU kernels compute a mixed
# precision natively (oneDNN). float16 has none: TensorFlow emulates it on every CPU, measured
# 0.035x float32 for TR and 0.17x for P on an Intel Xeon with avx512_fp16 (BENCHMARKS.md).
CPU_FLAGS = {
    Precision.mixed_bfloat16: ("avx512_bf16", "amx_bf16"),
    Precision.mixed_float16: (),
}
# Least CUDA compute capability with fast arithmetic of each mixed precision.
GPU_CAPABILITY = {Precision.mixed_bfloat16: (8, 0), Precision.mixed_float16: (7, 0)}


def precision_of(training_cfg: Any) -> Precision:
    value = training_cfg.get("precision", Precision.float32)
    return Precision(getattr(value, "value", value))


def check_precision(
    precision: Precision | str,
    flags: set[str] | None = None,
    gpus: list[tuple[int, int]] | None = None,
    source: str = "training",
) -> Precision:
    """The precision if this machine has arithmetic units for it, else ConfigError.

    A GPU counts if its compute capability is at least GPU_CAPABILITY; without a GPU
    the CPU must have one of CPU_FLAGS (bf16 only: TensorFlow emulates fp16 on CPUs,
    many times slower than float32). flags and gpus default to this machine's.
    """
    allowed = ", ".join(p.value for p in Precision)
    try:
        precision = Precision(getattr(precision, "value", precision))
    except ValueError:
        raise ConfigError(
            f"{source}: training.precision = {precision!r} is invalid: allowed: {allowed}"
        ) from None
    if precision is Precision.float32:
        return precision
    gpus = backend.current().gpu_capabilities() if gpus is None else gpus
    if gpus:
        if all(tuple(c) >= GPU_CAPABILITY[precision] for c in gpus):
            return precision
        need = ".".join(map(str, GPU_CAPABILITY[precision]))
        problem = f"this machine's GPUs have compute capability {gpus}, {precision.value} needs >= {need}"
    else:
        flags = cpu_flags() if flags is None else flags
        if any(f in flags for f in CPU_FLAGS[precision]):
            return precision
        if CPU_FLAGS[precision]:
            problem = (
                f"no GPU, and the CPU lacks {' and '.join(CPU_FLAGS[precision])} (no native "
                f"{precision.value.removeprefix('mixed_')} arithmetic)"
            )
        else:
            problem = (
                f"no GPU, and TensorFlow has no native {precision.value.removeprefix('mixed_')} "
                "CPU kernels (emulated: many times slower than float32)"
            )
    usable = [p.value for p in Precision if p is Precision.float32 or _native(p, flags, gpus)]
    raise ConfigError(
        f"{source}: training.precision = {precision.value!r} cannot run here: {problem}; "
        f"allowed: {allowed} (usable on this machine: {', '.join(usable)})"
    )


def _native(precision: Precision, flags, gpus) -> bool:
    if gpus:
        return all(tuple(c) >= GPU_CAPABILITY[precision] for c in gpus)
    return any(f in (flags or set()) for f in CPU_FLAGS[precision])


def apply_precision(training_cfg: Any, source: str = "training") -> Precision:
    """Check training.precision on this machine and set Keras' global dtype policy to it.

    Always sets the policy (also back to float32), so runs in one process do not leak it.
    """
    precision = check_precision(precision_of(training_cfg), source=source)
    keras.config.set_dtype_policy(precision.value)
    return precision


@keras.saving.register_keras_serializable(package="bionn")
class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """peak * warm-up(step) * decay(step) * plateau scale, per optimizer step (docstring of the module)."""

    def __init__(
        self,
        peak: float,
        total_steps: int,
        schedule: str = "constant",
        warmup_steps: int = 0,
        final_fraction: float = 0.0,
        decay_rate: float = 0.5,
        decay_steps: float = 1.0,
        plateau_scale: float = 1.0,
    ):
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.schedule = Schedule(schedule).value
        self.warmup_steps = int(warmup_steps)
        self.final_fraction = float(final_fraction)
        self.decay_rate = float(decay_rate)
        self.decay_steps = float(decay_steps)
        self.plateau_scale = keras.Variable(float(plateau_scale), trainable=False, name="plateau_scale")

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rate = ops.cast(self.peak, "float32") * ops.cast(self.plateau_scale, "float32")
        if self.warmup_steps > 0:
            rate = rate * ops.minimum(1.0, (step + 1.0) / self.warmup_steps)
        after = ops.maximum(step - self.warmup_steps, 0.0)
        if self.schedule == Schedule.cosine.value:
            progress = ops.minimum(after / max(self.total_steps - self.warmup_steps, 1), 1.0)
            rate = rate * (
                self.final_fraction + (1 - self.final_fraction) * 0.5 * (1 + ops.cos(math.pi * progress))
            )
        elif self.schedule == Schedule.exponential.value:
            rate = rate * ops.power(self.decay_rate, after / self.decay_steps)
        return rate

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "schedule": self.schedule,
            "warmup_steps": self.warmup_steps,
            "final_fraction": self.final_fraction,
            "decay_rate": self.decay_rate,
            "decay_steps": self.decay_steps,
            "plateau_scale": float(ops.convert_to_numpy(self.plateau_scale)),
        }


class PlateauCallback(keras.callbacks.Callback):
    """Multiply the learning rate by `factor` after `patience` epochs without a lower val_loss."""

    def __init__(self, rate: LearningRate, factor: float, patience: int, min_learning_rate: float):
        super().__init__()
        self.rate, self.factor, self.patience = rate, float(factor), int(patience)
        self.min_scale = float(min_learning_rate) / rate.peak
        self.best, self.wait = math.inf, 0

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get("val_loss")
        if current is None or not math.isfinite(current):
            return
        if current < self.best:
            self.best, self.wait = current, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            scale = float(ops.convert_to_numpy(self.rate.plateau_scale))
            self.rate.plateau_scale.assign(max(scale * self.factor, self.min_scale))
            self.wait = 0


def learning_rate(
    training_cfg: Any, steps_per_epoch: int
) -> tuple[LearningRate | float, list[keras.callbacks.Callback]]:
    """The learning-rate schedule of a training config, and the callbacks it needs."""
    s = training_cfg.schedule
    name = Schedule(getattr(s.name, "value", s.name))
    rate = LearningRate(
        peak=training_cfg.compile.learning_rate,
        total_steps=int(training_cfg.epochs) * steps_per_epoch,
        schedule=name.value,
        warmup_steps=round(float(s.warmup_epochs) * steps_per_epoch),
        final_fraction=s.final_fraction,
        decay_rate=s.decay_rate,
        decay_steps=float(s.decay_epochs) * steps_per_epoch,
    )
    if name is Schedule.constant and rate.warmup_steps == 0:
        return float(rate.peak), []  # a plain number: saved models load without bionn
    callbacks = []
    if name is Schedule.plateau:
        callbacks.append(PlateauCallback(rate, s.plateau_factor, s.plateau_patience, s.min_learning_rate))
    return rate, callbacks


def compile_for_training(
    model: keras.Model, training_cfg: Any, steps_per_epoch: int, label_scaling=None
) -> tuple[Any, list[keras.callbacks.Callback]]:
    """compile_model with the schedule, weight decay, XLA and steps per execution of training_cfg.

    Returns the `r2_mean` metric (as compile_model does) and the callbacks the schedule needs.
    """
    from bionn.nn.model import compile_model

    rate, callbacks = learning_rate(training_cfg, steps_per_epoch)
    r2 = compile_model(
        model,
        training_cfg.compile,
        label_scaling,
        learning_rate=rate,
        jit_compile=bool(training_cfg.jit_compile),
        steps_per_execution=int(training_cfg.steps_per_execution),
    )
    if any(isinstance(c, PlateauCallback) for c in callbacks):
        # Optimizer state (like a float learning rate's variable), so a compiled step reads its value
        # now: JAX's jitted step would keep the value it was traced with; backups save it.
        model.optimizer.plateau_scale = rate.plateau_scale
    return r2, callbacks
