"""Layers bionn adds to keras.layers for layer specs (the specs are checked in bionn.config.layers).

`{type: Residual, layers: [...]}` is y = x + f(x), where f is the listed layers
in order, each itself a spec of any keras.layers class (or another Residual).
f must give its input's shape back; `bionn.nn.model.build_model` reports the
shapes otherwise.

`{type: LogTimePooling, bins: 64}` averages the time axis (axis 1) over `bins`
consecutive bins whose widths grow geometrically (`log_time_edges`): the fast
early kinetics keep single time points, the slow tail is averaged over many.

Both are registered Keras layers, so a saved model.keras reloads with them
(after `import bionn.nn`).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from bionn.config.layers import check_time_bins


@keras.saving.register_keras_serializable(package="bionn")
class Residual(keras.layers.Layer):
    """y = x + f(x), f = the inner layers applied in order."""

    def __init__(self, layers: list[Any], **kwargs):
        super().__init__(**kwargs)
        self.inner = [keras.layers.deserialize(x) if isinstance(x, dict) else x for x in layers]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.inner:
            if not layer.built:  # a deserialised layer may come built
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        if shape[1:] != tuple(input_shape)[1:]:
            raise ValueError(
                f"a Residual block's layers must keep their input's shape: {tuple(input_shape)} -> {shape}"
            )
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.inner:
            x = layer(x, training=training)
        return inputs + x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "layers": [keras.layers.serialize(x) for x in self.inner]}


def log_time_edges(n_times: int, bins: int) -> np.ndarray:
    """bins + 1 increasing indices from 0 to n_times: bin i holds time points edges[i] to edges[i+1] - 1.

    The edges lie at n_times ** (i / bins), evenly spaced in log time, so the widths grow
    geometrically; each bin holds at least one point, so the first bins are single time points
    until the log spacing is wider than one point."""
    if not 2 <= bins <= n_times:
        raise ValueError(
            f"LogTimePooling: bins = {bins} does not fit an input of {n_times} time points "
            f"(allowed: 2 to {n_times})"
        )
    target = np.rint(np.power(float(n_times), np.arange(bins + 1) / bins)).astype(np.int64)
    edges = np.zeros(bins + 1, dtype=np.int64)
    for i in range(1, bins + 1):  # at least one point per bin, and room left for one in each later bin
        edges[i] = min(max(edges[i - 1] + 1, target[i]), n_times - (bins - i))
    return edges


def log_time_matrix(n_times: int, bins: int) -> np.ndarray:
    """(bins, n_times) float32: row i averages the time points of bin i (log_time_edges)."""
    edges = log_time_edges(n_times, bins)
    matrix = np.zeros((bins, n_times), dtype=np.float64)
    for i, (start, stop) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        matrix[i, start:stop] = 1.0 / (stop - start)
    return matrix.astype(np.float32)


@keras.saving.register_keras_serializable(package="bionn")
class LogTimePooling(keras.layers.Layer):
    """Averages axis 1 (time) over `bins` log-spaced bins: (batch, T, ...) -> (batch, bins, ...)."""

    def __init__(self, bins: int = 64, **kwargs):
        super().__init__(**kwargs)
        check_time_bins(bins, "LogTimePooling")
        self.bins = int(bins)
        self.average = None

    def build(self, input_shape):
        n_times = input_shape[1]
        if n_times is None:
            raise ValueError("LogTimePooling needs a fixed number of time points (axis 1 of its input)")
        self.average = keras.ops.convert_to_tensor(log_time_matrix(int(n_times), self.bins).T)
        self.built = True

    def call(self, inputs):
        x = keras.ops.moveaxis(inputs, 1, -1)  # time last, so one matmul averages every bin
        y = keras.ops.matmul(x, keras.ops.cast(self.average, x.dtype))
        return keras.ops.moveaxis(y, -1, 1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bins, *input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "bins": self.bins}
