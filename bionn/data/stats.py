"""Normalisation statistics over the first `use_stats_of` training samples, cached on disk.

The statistics are a pure function of the sample-defining part of the dataset
config (parameters, simulation, seed), the number of samples and the engine
version; the cache key hashes exactly those. A cache file is written atomically
under an exclusive lock, so processes that ask for the same statistics at once
compute them once and all read one consistent file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from tqdm import tqdm

from bionn.cache import cache_root
from bionn.config.dataset import Label
from bionn.data.dataset import KineticsDataset, dataset_label
from bionn.engine_version import ENGINE_VERSION
from bionn.io import atomic_save_npz

# Added to the standard deviation before dividing (docs/data-model.md, "Normalisation").
STD_EPSILON = 1e-7
_CHUNK = 4096


@dataclass
class Statistics:
    count: int
    key: str
    feature_mean: np.ndarray  # (T, k)
    feature_std: np.ndarray  # (T, k)
    label_mean: np.ndarray  # (4k,)
    label_std: np.ndarray  # (4k,)

    def summary(self) -> dict:
        return {
            "count": self.count,
            "key": self.key,
            "feature_mean_range": [float(self.feature_mean.min()), float(self.feature_mean.max())],
            "feature_std_range": [float(self.feature_std.min()), float(self.feature_std.max())],
            "label_mean": self.label_mean.tolist(),
            "label_std": self.label_std.tolist(),
        }


def default_cache_dir() -> Path:
    """The statistics' folder in bionn's cache (bionn.cache: $BIONN_CACHE_DIR, else ~/.cache/bionn)."""
    return cache_root() / "stats"


def effective_count(ds: KineticsDataset, use_stats_of: int) -> int:
    """use_stats_of, capped at the training split's size."""
    if use_stats_of < 1:
        raise ValueError(f"use_stats_of = {use_stats_of} is invalid: must be >= 1")
    return min(int(use_stats_of), ds.split_size("train"))


def statistics_key(ds: KineticsDataset, count: int) -> str:
    """Hash of exactly what determines the first `count` training samples."""
    identity = {
        "engine_version": ENGINE_VERSION,
        "parameters": OmegaConf.to_container(ds.cfg.parameters),
        "simulation": OmegaConf.to_container(ds.cfg.simulation),
        "seed": ds.seed,
        "count": count,
    }
    label = dataset_label(ds.cfg)
    if (
        label is not Label.seed
    ):  # the labels' statistics depend on it (seed: the cache keys of earlier versions)
        identity["label"] = label.value
    blob = json.dumps(identity, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def compute_statistics(ds: KineticsDataset, count: int, progress: bool = True) -> Statistics:
    """Mean and std (ddof 0) of features and labels over training samples 0..count-1."""
    start = ds.splits["train"][0]
    n_seen = 0
    moments = None
    with tqdm(
        total=count, desc=f"statistics of {ds.name}", unit="sample", disable=not progress, mininterval=1
    ) as bar:
        for lo in range(0, count, _CHUNK):
            batch = ds.generate(np.arange(start + lo, start + min(count, lo + _CHUNK)), concentrations=False)
            chunk = [_moments(batch.features), _moments(batch.labels)]
            n = len(batch.index)
            if moments is None:
                moments = chunk
            else:  # Chan et al.'s pairwise update of mean and M2
                for part, (mean_b, m2_b) in enumerate(chunk):
                    mean_a, m2_a = moments[part]
                    delta = mean_b - mean_a
                    total = n_seen + n
                    moments[part] = (
                        mean_a + delta * (n / total),
                        m2_a + m2_b + delta**2 * (n_seen * n / total),
                    )
            n_seen += n
            bar.update(n)
    (f_mean, f_m2), (l_mean, l_m2) = moments
    return Statistics(
        count=count,
        key=statistics_key(ds, count),
        feature_mean=f_mean,
        feature_std=np.sqrt(f_m2 / count),
        label_mean=l_mean,
        label_std=np.sqrt(l_m2 / count),
    )


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    return mean, ((x - mean) ** 2).sum(axis=0)


def load_or_compute_statistics(
    ds: KineticsDataset,
    use_stats_of: int,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Statistics:
    """The cached statistics of the first `use_stats_of` training samples, computed if absent."""
    count = effective_count(ds, use_stats_of)
    key = statistics_key(ds, count)
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.name}-{count}-{key}.npz"
    with open(folder / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process computes, the others wait and read
        if path.exists():
            try:
                return _load(path, key)
            except (OSError, ValueError, KeyError) as err:
                print(f"bionn: recomputing unreadable statistics cache {path}: {err}")
        stats = compute_statistics(ds, count, progress)
        save_statistics(path, stats)
        return stats


def save_statistics(path: str | os.PathLike, stats: Statistics) -> None:
    """The statistics as an .npz file (the cache, and statistics.npz in a run folder), atomically."""
    atomic_save_npz(
        path,
        count=np.int64(stats.count),
        key=np.array(stats.key),
        feature_mean=stats.feature_mean,
        feature_std=stats.feature_std,
        label_mean=stats.label_mean,
        label_std=stats.label_std,
    )


def read_statistics(path: str | os.PathLike) -> Statistics:
    """What save_statistics wrote; OSError, ValueError or KeyError when it cannot."""
    with np.load(path) as data:
        return Statistics(
            count=int(data["count"]),
            key=str(data["key"]),
            feature_mean=data["feature_mean"],
            feature_std=data["feature_std"],
            label_mean=data["label_mean"],
            label_std=data["label_std"],
        )


def _load(path: Path, key: str) -> Statistics:
    stats = read_statistics(path)
    if stats.key != key:
        raise ValueError(f"key {stats.key} != {key}")
    return stats
