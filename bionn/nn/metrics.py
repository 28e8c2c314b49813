"""Metrics beyond Keras' own."""

from __future__ import annotations

import keras
from keras import ops


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


CUSTOM_METRICS = {"R_squared": PooledRSquared}
