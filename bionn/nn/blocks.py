"""Layer-spec blocks beyond a flat list of keras.layers (the spec is checked in bionn.config.layers).

`{type: Residual, layers: [...]}` is y = x + f(x), where f is the listed layers
in order, each itself a spec of any keras.layers class (or another Residual).
f must give its input's shape back; `bionn.nn.model.build_model` reports the
shapes otherwise. The block is a registered Keras layer, so a saved model.keras
reloads with it.
"""

from __future__ import annotations

from typing import Any

import keras


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
