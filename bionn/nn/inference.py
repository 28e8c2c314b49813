"""A trained network people can use outside bionn: raw features in, labels out, in one .keras file.

    inference_<which>.keras = Standardise (the run's feature statistics) -> the trained network
                              (ending in Destandardise with training.scale_labels)

The training model and its numerics stay as they are (model.keras, the resume point); at the end of a
run `save_inference_models` writes this wrapper twice: with the last epoch's weights and with the best
validation epoch's (kept by `BestWeights`, which survives a requeue). `load_model(run_dir, which)` is
the public way back (`bionn.load_model`); `keras.saving.load_model` works too once `bionn.nn` is
imported, which registers every bionn layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from keras import ops

from bionn.data import ENGINE_VERSION
from bionn.data.stats import STD_EPSILON, read_statistics
from bionn.io import atomic_path
from bionn.run_folder import BACKUP_STATE, BEST, INFERENCE, STATISTICS, RunFolder


class ModelUnavailable(ValueError):
    """A run folder without a usable inference model (none yet, an older bionn, another engine)."""


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


def inference_model(network: keras.Model, feature_mean: np.ndarray, feature_std: np.ndarray) -> keras.Model:
    """Raw features (T, k, 1), float64 -> the network's labels; shares the network's weights."""
    inputs = keras.Input(shape=network.input_shape[1:], dtype="float64", name="features")
    standardised = Standardise(feature_mean, 1.0 / (feature_std + STD_EPSILON), name="standardise")(inputs)
    return keras.Model(inputs, network(standardised), name=f"inference_{network.name}")


class BestWeights(keras.callbacks.Callback):
    """The best validation epoch's weights in best/: each better epoch saves a new weights file, then
    replaces state.json (the commit: epoch, val_loss, file), then deletes the older file. The best value
    is read back from state.json when a run resumes, so a requeue keeps it."""

    def __init__(self, folder: RunFolder):
        super().__init__()
        self.folder = folder
        self.best = math.inf

    def on_train_begin(self, logs=None):
        state = self.folder.best_state()
        self.best = state["val_loss"] if state else math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = float((logs or {}).get("val_loss", math.nan))
        if not math.isfinite(value) or value >= self.best:
            return
        self.best = value
        name = f"epoch_{epoch + 1}.weights.h5"
        with atomic_path(self.folder / BEST / name) as tmp:
            self.model.save_weights(tmp)
        self.folder.write_json(
            f"{BEST}/{BACKUP_STATE}", {"epoch": epoch + 1, "val_loss": value, "weights": name}
        )
        for path in (self.folder / BEST).glob("*.weights.h5"):
            if path.name != name:
                path.unlink(missing_ok=True)


def save_inference_models(folder: RunFolder, network: keras.Model) -> dict:
    """inference_last.keras (the network as it is) and inference_best.keras (the best validation epoch's
    weights, the last ones when no epoch validated); returns {"best_epoch": its epoch or None}."""
    from bionn.nn.callbacks import save_model

    stats = read_statistics(folder / STATISTICS)
    save_model(inference_model(network, stats.feature_mean, stats.feature_std), folder / INFERENCE["last"])
    state = folder.best_state()
    best = network
    if state is not None:
        best = keras.models.clone_model(network)
        best.load_weights(folder / BEST / state["weights"])
    save_model(inference_model(best, stats.feature_mean, stats.feature_std), folder / INFERENCE["best"])
    return {"best_epoch": state["epoch"] if state else None}


def load_model(run_dir: str | Path, which: str = "best") -> keras.Model:
    """The run's inference model: raw features (N, T, k, 1) -> labels (N, 4k), the label the run's
    dataset defines (docs/using-models.md). which: best (the best validation epoch) or last.

    ModelUnavailable names what is missing: no such folder, a run not finished, a folder of an older
    bionn, a model made with another data engine version."""
    folder = RunFolder(Path(run_dir))
    check_usable(folder, which)
    return keras.saving.load_model(folder / INFERENCE[which], compile=False)


def check_usable(folder: RunFolder, which: str) -> dict:
    """The run's info.json once the folder holds an inference model this bionn can feed; else
    ModelUnavailable saying what was expected and what was found."""
    if which not in INFERENCE:
        raise ModelUnavailable(f"which = {which!r} is invalid: allowed {', '.join(INFERENCE)}")
    if not folder.path.is_dir():
        raise ModelUnavailable(f"{folder.path}: no such run folder")
    path = folder / INFERENCE[which]
    info = folder.info() or {}
    engine = (info.get("provenance") or {}).get("engine_version")
    if not path.is_file():
        if folder.is_run() and not info.get("provenance"):
            why = "its info.json has no provenance: written by a bionn older than the inference models"
        elif folder.is_run():
            why = f"the run has not finished (status {folder.status().value})"
        else:
            why = "it is not a run folder (no ledger.json, info.json, history.csv, ...)"
        raise ModelUnavailable(
            f"{folder.path}: expected {INFERENCE[which]} (written when a run finishes), found none: {why}"
        )
    if engine != ENGINE_VERSION:
        raise ModelUnavailable(
            f"{path}: trained on data of engine version {engine} (info.json provenance.engine_version); "
            f"this bionn generates version {ENGINE_VERSION}, so its features may differ from what the model "
            f"learned. Use the bionn that trained it ({_made_by(info)}), or train again."
        )
    return info


def _made_by(info: dict) -> str:
    provenance = info.get("provenance") or {}
    git = provenance.get("git") or {}
    commit = f", commit {git['commit'][:12]}{' (dirty)' if git.get('dirty') else ''}" if git else ""
    return f"bionn {provenance.get('bionn', '?')}{commit}"
