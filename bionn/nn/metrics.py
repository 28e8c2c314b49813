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


@keras.saving.register_keras_serializable(package="bionn")
class PooledRSquared(keras.metrics.Metric):
    """The older project's `R_squared`: 1 - SS_res / SS_tot, pooled over all outputs.

    SS_tot is taken around the mean of *all* targets (one number for every output),
    so output-to-output differences in level count as explained variance; a constant
    predictor can score well. Unlike the older code (a mean of per-batch values) this
    accumulates the sums over the whole split, so the value does not depend on batching.
    `keras.metrics.R2Score` (name `R2Score`) is the per-output alternative.
    """

    def __init__(self, name: str = "r_squared", **kwargs):
        super().__init__(name=name, **kwargs)
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", dtype="float64")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total", dtype="float64")
        self.total_sq = self.add_variable(shape=(), initializer="zeros", name="total_sq", dtype="float64")
        self.residual_sq = self.add_variable(
            shape=(), initializer="zeros", name="residual_sq", dtype="float64"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "float64")
        y_pred = ops.cast(y_pred, "float64")
        self.count.assign_add(ops.cast(ops.size(y_true), "float64"))
        self.total.assign_add(ops.sum(y_true))
        self.total_sq.assign_add(ops.sum(ops.square(y_true)))
        self.residual_sq.assign_add(ops.sum(ops.square(y_true - y_pred)))

    def result(self):
        ss_tot = self.total_sq - ops.square(self.total) / ops.maximum(self.count, 1.0)
        return ops.cast(1.0 - self.residual_sq / ops.maximum(ss_tot, 1e-300), "float32")

    def reset_state(self):
        for variable in self.variables:
            variable.assign(ops.zeros_like(variable))


@keras.saving.register_keras_serializable(package="bionn")
class PerOutputRSquared(keras.metrics.Metric):
    """R-squared of every output against its own mean, accumulated over the whole split.

    `result()` is their mean (`r2_mean`, logged every epoch); `per_output()` gives the
    values themselves, in label order, after an evaluation.
    """

    def __init__(self, n_outputs: int, name: str = "r2_mean", **kwargs):
        super().__init__(name=name, **kwargs)
        self.n_outputs = int(n_outputs)
        shape = (self.n_outputs,)
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", dtype="float64")
        self.total = self.add_variable(shape=shape, initializer="zeros", name="total", dtype="float64")
        self.total_sq = self.add_variable(shape=shape, initializer="zeros", name="total_sq", dtype="float64")
        self.residual_sq = self.add_variable(
            shape=shape, initializer="zeros", name="residual_sq", dtype="float64"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "float64")
        y_pred = ops.cast(y_pred, "float64")
        self.count.assign_add(ops.cast(ops.shape(y_true)[0], "float64"))
        self.total.assign_add(ops.sum(y_true, axis=0))
        self.total_sq.assign_add(ops.sum(ops.square(y_true), axis=0))
        self.residual_sq.assign_add(ops.sum(ops.square(y_true - y_pred), axis=0))

    def _per_output(self):
        ss_tot = self.total_sq - ops.square(self.total) / ops.maximum(self.count, 1.0)
        return 1.0 - self.residual_sq / ops.maximum(ss_tot, 1e-300)

    def result(self):
        return ops.cast(ops.mean(self._per_output()), "float32")

    def per_output(self) -> np.ndarray:
        """R-squared of each output over what was accumulated (float64, label order)."""
        return per_output_from_sums(
            *(ops.convert_to_numpy(v) for v in (self.count, self.total, self.total_sq, self.residual_sq))
        )

    def reset_state(self):
        for variable in self.variables:
            variable.assign(ops.zeros_like(variable))

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
