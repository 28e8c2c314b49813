"""A trained network people can use outside bionn: raw features in, labels out, in one .keras file.

    inference_<which>.keras = Standardise (the run's feature statistics) -> the trained network
                              (ending in Destandardise with training.scale_labels)

The training model and its numerics stay as they are (model.keras, the resume point); at the end of a
run `bionn.trained.save_inference_models` writes this wrapper twice: with the last epoch's weights and
with the best validation epoch's (kept by `BestWeights`, which survives a requeue).
`bionn.trained.load_model(run_dir, which)` is the public way back (`bionn.load_model`);
`keras.saving.load_model` works too once `bionn.nn` is imported, which registers every bionn layer.
This module knows no data engine: the statistics reach it as arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from bionn.io import atomic_path
from bionn.nn.callbacks import CommitFolder


@keras.saving.register_keras_serializable(package="bionn")
class Standardise(keras.layers.Layer):
    """(x - mean) * scale in float64, element by element, as the training pipeline does; float32 out.

    scale = 1 / (std + STD_EPSILON) of the run's statistics (docs/data-model.md, "Normalisation")."""

    def __init__(self, mean: Sequence, scale: Sequence, **kwargs):
        kwargs["dtype"] = "float64"
        super().__init__(**kwargs)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)

    def call(self, inputs):
        x = ops.cast(inputs, "float64")
        mean = ops.convert_to_tensor(self.mean.reshape(self.mean.shape + (1,)), "float64")
        scale = ops.convert_to_tensor(self.scale.reshape(self.scale.shape + (1,)), "float64")
        return ops.cast((x - mean) * scale, "float32")

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype="float32")

    def get_config(self):
        config = {**super().get_config(), "mean": self.mean.tolist(), "scale": self.scale.tolist()}
        config.pop("dtype", None)
        return config


def inference_model(network: keras.Model, feature_mean: np.ndarray, feature_scale: np.ndarray) -> keras.Model:
    """Raw features (T, k, 1), float64 -> the network's labels; shares the network's weights.
    feature_scale: 1 / (std + epsilon) of the run's statistics (bionn.trained computes it)."""
    inputs = keras.Input(shape=network.input_shape[1:], dtype="float64", name="features")
    standardised = Standardise(feature_mean, feature_scale, name="standardise")(inputs)
    return keras.Model(inputs, network(standardised), name=f"inference_{network.name}")


class BestWeights(keras.callbacks.Callback):
    """The best validation epoch's weights in `best` (a run folder's best/): each better epoch saves a
    new weights file, then commits the state (epoch, val_loss, file), then deletes the older file. The
    best value is read back from the state when a run resumes, so a requeue keeps it."""

    def __init__(self, best: CommitFolder):
        super().__init__()
        self.folder = best
        self.best = math.inf

    def on_train_begin(self, logs=None):
        state = self.folder.state()
        self.best = state["val_loss"] if state else math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = float((logs or {}).get("val_loss", math.nan))
        if not math.isfinite(value) or value >= self.best:
            return
        self.best = value
        name = f"epoch_{epoch + 1}.weights.h5"
        with atomic_path(self.folder.path / name) as tmp:
            self.model.save_weights(tmp)
        self.folder.commit({"epoch": epoch + 1, "val_loss": value, "weights": name})
        for path in self.folder.path.glob("*.weights.h5"):
            if path.name != name:
                path.unlink(missing_ok=True)
