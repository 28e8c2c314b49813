"""A finished run's trained model: the inference models written at the end of a run, loaded and checked.

Above both the data engine (the run's statistics, its ENGINE_VERSION) and the model
(bionn.nn.inference builds the Keras wrapper): bionn.train writes the models here, `load_model`
(`bionn.load_model`), bionn-predict and bionn-evaluate read them (docs/using-models.md).
"""

from __future__ import annotations

from pathlib import Path

import keras

from bionn.data.stats import STD_EPSILON, read_statistics
from bionn.engine_version import ENGINE_VERSION
from bionn.nn.inference import inference_model
from bionn.run_folder import INFERENCE, STATISTICS, RunFolder


class ModelUnavailable(ValueError):
    """A run folder without a usable inference model (none yet, an older bionn, another engine)."""


def save_inference_models(folder: RunFolder, network: keras.Model) -> dict:
    """inference_last.keras (the network as it is) and inference_best.keras (the best validation epoch's
    weights, the last ones when no epoch validated); returns {"best_epoch": its epoch or None}."""
    from bionn.nn.callbacks import save_model

    stats = read_statistics(folder / STATISTICS)
    scale = 1.0 / (stats.feature_std + STD_EPSILON)
    save_model(inference_model(network, stats.feature_mean, scale), folder / INFERENCE["last"])
    state = folder.best.state()
    best = network
    if state is not None:
        best = keras.models.clone_model(network)
        best.load_weights(folder.best.path / state["weights"])
    save_model(inference_model(best, stats.feature_mean, scale), folder / INFERENCE["best"])
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
