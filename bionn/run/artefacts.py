"""The files a run writes beside its model: .hydra/ (what Hydra would write), info.json, the history plots,
and the JSON-safe numbers of final_results.json."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from bionn.io import figure, write_figure
from bionn.slurm import Worker, slurm_info

if TYPE_CHECKING:
    import keras

    from bionn.backend import Strategy
    from bionn.data.dataset import KineticsDataset
    from bionn.data.stats import Statistics


def hydra_files(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, str]:
    """What Hydra itself would write into .hydra/ (conf/train.yaml turns that off: the ledger is checked
    first, so a refused run leaves the folder's .hydra/ as it was); `overrides` replaces the job's own."""
    files = {"config.yaml": OmegaConf.to_yaml(cfg)}
    if overrides is not None:
        files["overrides.yaml"] = OmegaConf.to_yaml(OmegaConf.create(list(overrides)))
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.instance().cfg
        HydraConfig.get()
    except ValueError:
        return files
    files["hydra.yaml"] = OmegaConf.to_yaml(hydra_cfg)
    files.setdefault("overrides.yaml", OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task))
    return files


def info(
    cfg: DictConfig,
    ds: KineticsDataset,
    stats: Statistics,
    model: keras.Model,
    strategy: Strategy,
    worker: Worker,
    devices: list[str],
) -> dict:
    """info.json: the resolved config, the data, the parameter count, provenance and where it ran."""
    from bionn.provenance import provenance

    return {
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "data": {
            "feature_shape": list(ds.feature_shape),
            "n_labels": ds.n_labels,
            "splits": {split: list(rng) for split, rng in ds.splits.items()},
            "rk4_substeps": ds.n_sub,
            "statistics": stats.summary(),
        },
        "parameters": int(model.count_params()),
        "provenance": provenance(),  # bionn, the data engine, the git commit, the libraries
        "devices": devices,
        "replicas": strategy.num_replicas_in_sync,
        "workers": worker.count,
        "slurm": slurm_info(),
        "command": sys.argv,
    }


def plot_history(history: dict[str, list[float]], folder: Path) -> None:
    """One PNG per metric: training and validation curves over epochs."""
    from matplotlib.ticker import MaxNLocator

    for key in (k for k in history if not k.startswith("val_")):
        fig, ax = figure(figsize=(6, 4))
        epochs = range(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], marker="o", label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", label="validation")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
        ax.grid(alpha=0.3)
        write_figure(fig, folder / f"{key}.png", bbox_inches="tight")


def finite(value: float) -> float | None:
    """JSON has no NaN: non-finite values are written as null."""
    value = float(value)
    return value if math.isfinite(value) else None


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def nan_to_inf(value: float | None) -> float:
    """A loss for a sweeper to minimise: none (no evaluation) is infinitely bad."""
    return float("inf") if value is None else float(value)
