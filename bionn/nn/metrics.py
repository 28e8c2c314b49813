"""Metrics beyond Keras' own, and the label scaling that keeps every metric on the original scale.

With `training.scale_labels`, the network learns standardised labels, but the
data keeps the original labels: the model ends in `Destandardise` (its output is
on the original scale) and the loss is `StandardisedLoss`, the configured loss
applied to (y - mean) / scale on both sides. So the loss is the standardised
one while every metric (and every saved model's prediction) is on the original scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from bionn.rsquared import per_output_from_sums

# The floor of SS_tot in float32 (a constant label): R-squared stays finite.
TINY = float(np.finfo(np.float32).tiny)


class CentredSums(keras.metrics.Metric):
    """The running sums of R-squared per output in float32, accurate to about float32's precision.

    JAX has no float64 by default, so the sums cannot rely on it. Labels whose mean is many times
    their spread would lose SS_tot = sum(y^2) - (sum y)^2 / n to cancellation: the sums are taken
    around a `centre` near the labels' mean (the first batch's mean), so both terms stay small,
    and each is kept as a float32 pair (value, rounding error; TwoSum), so thousands of batches
    add no rounding drift. Every sum is additive: TensorFlow sums each over its replicas when read
    (Keras' metric variables), and `centre` is one value on every replica (a mirrored variable:
    its first assignment averages the replicas' first batches).
    """

    SUMS = ("deviation", "deviation_sq", "residual_sq")  # of y - centre, (y - centre)^2, (y - y_hat)^2

    def __init__(self, n_outputs: int, name: str, **kwargs):
        super().__init__(name=name, **kwargs)
        shape = (int(n_outputs),)
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", dtype="int32")
        with keras.name_scope(self.name.replace("/", ">")):
            self.centre = keras.Variable(
                initializer="zeros",
                shape=shape,
                dtype="float32",
                trainable=False,
                synchronization="on_write",
                aggregation="mean",
                name="centre",
            )
        self.totals = [self.add_variable(shape, "zeros", "float32", name=n) for n in self.SUMS]
        self.errors = [self.add_variable(shape, "zeros", "float32", name=f"{n}_error") for n in self.SUMS]

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add a batch of (n, n_outputs) labels and predictions."""
        y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        n = ops.shape(y_true)[0]
        batch_mean = ops.sum(y_true, axis=0) / ops.maximum(ops.cast(n, "float32"), 1.0)
        self.centre.assign(ops.where(ops.equal(self.count.value, 0), batch_mean, self.centre.value))
        deviation = y_true - self.centre.value  # read back: the replicas' common centre
        batch = (deviation, ops.square(deviation), ops.square(y_true - y_pred))
        for total, error, values in zip(self.totals, self.errors, batch, strict=True):
            add_compensated(total, error, ops.sum(values, axis=0))
        self.count.assign_add(ops.cast(n, "int32"))

    def per_output_tensor(self):
        """R-squared of each output, float32, in the backend's tensors."""
        deviation, deviation_sq, residual_sq = (
            total.value + error.value for total, error in zip(self.totals, self.errors, strict=True)
        )
        count = ops.maximum(ops.cast(self.count.value, "float32"), 1.0)
        return 1.0 - residual_sq / ops.maximum(deviation_sq - ops.square(deviation) / count, TINY)

    def per_output(self) -> np.ndarray:
        """R-squared of each output over what was accumulated (float64, label order)."""
        sums = [
            ops.convert_to_numpy(total).astype(np.float64) + ops.convert_to_numpy(error)
            for total, error in zip(self.totals, self.errors, strict=True)
        ]
        return per_output_from_sums(ops.convert_to_numpy(self.count), *sums)

    def reset_state(self):
        for variable in self.variables:
            variable.assign(ops.zeros(variable.shape, variable.dtype))


def add_compensated(total: keras.Variable, error: keras.Variable, value) -> None:
    """total + error += value, with the rounding error of the float32 addition kept in error (TwoSum)."""
    before = total.value
    after = before + value
    part = after - before
    error.assign_add((before - (after - part)) + (value - part))
    total.assign(after)


@keras.saving.register_keras_serializable(package="bionn")
class PooledRSquared(CentredSums):
    """The older project's `R_squared`: 1 - SS_res / SS_tot, pooled over all outputs.

    SS_tot is taken around the mean of *all* targets (one number for every output),
    so output-to-output differences in level count as explained variance; a constant
    predictor can score well. Unlike the older code (a mean of per-batch values) this
    accumulates the sums over the whole split, so the value does not depend on batching.
    It is the per-output R-squared of all targets as one column (`CentredSums`).
    `keras.metrics.R2Score` (name `R2Score`) is the per-output alternative.
    """

    def __init__(self, name: str = "r_squared", **kwargs):
        super().__init__(1, name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(ops.reshape(y_true, (-1, 1)), ops.reshape(y_pred, (-1, 1)))

    def result(self):
        return self.per_output_tensor()[0]


@keras.saving.register_keras_serializable(package="bionn")
class PerOutputRSquared(CentredSums):
    """R-squared of every output against its own mean, accumulated over the whole split.

    `result()` is their mean (`r2_mean`, logged every epoch); `per_output()` gives the
    values themselves, in label order, after an evaluation.
    """

    def __init__(self, n_outputs: int, name: str = "r2_mean", **kwargs):
        super().__init__(n_outputs, name=name, **kwargs)
        self.n_outputs = int(n_outputs)

    def result(self):
        return ops.mean(self.per_output_tensor())

    def get_config(self):
        return {**super().get_config(), "n_outputs": self.n_outputs}


@keras.saving.register_keras_serializable(package="bionn")
class Destandardise(keras.layers.Layer):
    """y = z * scale + mean: the last layer of a model trained on standardised labels."""

    def __init__(self, mean: Sequence[float], scale: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(v) for v in mean]
        self.scale = [float(v) for v in scale]

    def call(self, inputs):
        return inputs * ops.convert_to_tensor(self.scale, inputs.dtype) + ops.convert_to_tensor(
            self.mean, inputs.dtype
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "scale": self.scale}


@keras.saving.register_keras_serializable(package="bionn")
class StandardisedLoss(keras.losses.Loss):
    """A Keras loss (by name) of (y - mean) / scale against (y_hat - mean) / scale."""

    def __init__(
        self,
        loss: str = "mean_squared_error",
        mean: Sequence[float] = (),
        scale: Sequence[float] = (),
        name: str | None = None,
        **kwargs,
    ):
        super().__init__(name=name or f"standardised_{loss}", **kwargs)
        self.loss = str(loss)
        self.base = keras.losses.get(self.loss)
        self.mean = [float(v) for v in mean]
        self.scale = [float(v) for v in scale]

    def call(self, y_true, y_pred):
        mean = ops.convert_to_tensor(self.mean, y_pred.dtype)
        scale = ops.convert_to_tensor(self.scale, y_pred.dtype)
        return self.base((ops.cast(y_true, y_pred.dtype) - mean) / scale, (y_pred - mean) / scale)

    def get_config(self):
        return {**super().get_config(), "loss": self.loss, "mean": self.mean, "scale": self.scale}


CUSTOM_METRICS = {"R_squared": PooledRSquared}
