"""Ridge regression baseline: the score any network must beat, per output.

Closed-form ridge on the raw features (U_k sigma_k flattened, T*k numbers per
sample) with an intercept. The training split is streamed in chunks and only
X^T X, X^T Y and the sums are kept, so a dataset is never held whole. Each
feature column is scaled to unit variance (training moments) before the penalty,
so one alpha fits every dataset; alpha is chosen on the validation split (best
mean per-output R2) from ALPHAS, and the test split is scored on the original
label scale. Results are cached as JSON under `<stats cache dir>/baseline/<key>.json`.
This module loads the data engine (bionn.data, Numba); the report reaches it only through
bionn.report.read.ridge_baseline, lazily.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from bionn.config.dataset import Label
from bionn.data.dataset import KineticsDataset
from bionn.data.stats import default_cache_dir, statistics_key
from bionn.engine_version import ENGINE_VERSION
from bionn.io import atomic_write_json
from bionn.rsquared import RSquaredSums

# Version of this baseline's definition (part of the cache key).
BASELINE_VERSION = 1
# Penalties relative to the unit-variance feature scale.
ALPHAS = tuple(float(a) for a in np.logspace(-12, 2, 15))
_CHUNK = 4096


def _chunks(ds: KineticsDataset, split: str, limit: int | None = None):
    lo, hi = ds.splits[split]
    if limit is not None:
        hi = min(hi, lo + limit)
    for start in range(lo, hi, _CHUNK):
        batch = ds.generate(np.arange(start, min(hi, start + _CHUNK)), concentrations=False)
        yield batch.features.reshape(len(batch.index), -1), batch.labels


def fit_ridge(ds: KineticsDataset, max_train: int | None = None) -> dict[str, Any]:
    """Fit on the training split, pick alpha on validation, score the test split."""
    xtx = xty = sum_x = sum_y = shift = None
    n = 0
    for x, y in _chunks(ds, "train", max_train):
        if xtx is None:
            xtx, xty = np.zeros((x.shape[1],) * 2), np.zeros((x.shape[1], y.shape[1]))
            sum_x, sum_y = np.zeros(x.shape[1]), np.zeros(y.shape[1])
            shift = x.mean(axis=0)  # sums around the first chunk's mean: less cancellation
        x = x - shift
        xtx += x.T @ x
        xty += x.T @ y
        sum_x += x.sum(axis=0)
        sum_y += y.sum(axis=0)
        n += len(x)
    mean_x, mean_y = sum_x / n, sum_y / n
    cov_xx = xtx / n - np.outer(mean_x, mean_x)
    cov_xy = xty / n - np.outer(mean_x, mean_y)
    mean_x = mean_x + shift
    scale = np.sqrt(np.maximum(np.diag(cov_xx), 0.0)) + 1e-12
    eigval, eigvec = np.linalg.eigh(cov_xx / np.outer(scale, scale))
    projected = eigvec.T @ (cov_xy / scale[:, None])

    def coefficients(alpha: float) -> tuple[np.ndarray, np.ndarray]:
        weights = (eigvec @ (projected / (np.maximum(eigval, 0.0) + alpha)[:, None])) / scale[:, None]
        return weights, mean_y - mean_x @ weights

    candidates = [coefficients(a) for a in ALPHAS]
    val = [RSquaredSums(len(mean_y)) for _ in ALPHAS]
    for x, y in _chunks(ds, "val"):
        for sums, (w, b) in zip(val, candidates, strict=True):
            sums.update(y, x @ w + b)
    val_r2 = [float(s.per_output().mean()) for s in val]
    best = int(np.argmax(val_r2))
    w, b = candidates[best]
    test = RSquaredSums(len(mean_y))
    for x, y in _chunks(ds, "test"):
        test.update(y, x @ w + b)
    return {
        "model": "ridge",
        "dataset": ds.name,
        **test.summary(),
        "split": "test",
        "alpha": ALPHAS[best],
        "val_r2_mean": val_r2[best],
        "val_r2_mean_by_alpha": dict(zip([f"{a:g}" for a in ALPHAS], val_r2, strict=True)),
        "train_samples": n,
        "test_samples": test.count,
        "sign_rule": str(ds.cfg.simulation.svd_sign),
        "label": ds.label.value,
    }


def label_ceiling(ds: KineticsDataset, split: str = "test") -> np.ndarray:
    """Per-output R2 of the best possible predictor of a split, for the dataset's label.

    (k1, E0, S0) and (k1 / c, c E0, c S0) give the same trajectories up to the factor c,
    hence (D being normalised) the same features. The seed label scales by c: given the
    features, E0 is only known to lie in the interval that the parameter ranges allow
    along that family, where its posterior is uniform (the map (k1, E0, S0) ->
    (k1 E0, S0 / E0, E0) has Jacobian 1), so the mean-square-optimal prediction is the
    true label times mid(interval) / E0 (about 0.93 for the seed ranges). The relative
    label (divided by E0 + S0) does not change along the family: its best prediction
    is the label itself, ceiling 1 for every output.
    """
    p = ds.cfg.parameters
    lo, hi = ds.splits[split]
    r2 = RSquaredSums(ds.n_labels)
    for start in range(lo, hi, _CHUNK):
        batch = ds.generate(np.arange(start, min(hi, start + _CHUNK)), concentrations=False)
        k1, e0, s0 = batch.kinetic[:, 0], batch.kinetic[:, 3], batch.kinetic[:, 4]
        if ds.label is Label.relative:
            factor = np.ones_like(e0)
        else:
            low = np.maximum.reduce([np.full_like(e0, p.E0_min), p.S0_min * e0 / s0, k1 * e0 / p.k1_max])
            high = np.minimum.reduce([np.full_like(e0, p.E0_max), p.S0_max * e0 / s0, k1 * e0 / p.k1_min])
            factor = (low + high) / 2 / e0
        r2.update(batch.labels, batch.labels * factor[:, None])
    return r2.per_output()


def ceiling_summary(dataset_cfg: Any, split: str = "test") -> dict:
    """`label`, `ceiling_r2_mean` and `ceiling_r2_per_output` of a dataset config's split."""
    ds = dataset_cfg if isinstance(dataset_cfg, KineticsDataset) else KineticsDataset(dataset_cfg)
    ceiling = label_ceiling(ds, split)
    return {
        "label": ds.label.value,
        "ceiling_r2_mean": float(ceiling.mean()),
        "ceiling_r2_per_output": [float(v) for v in ceiling],
    }


def baseline_key(ds: KineticsDataset, max_train: int | None = None) -> str:
    """Hash of what decides the result: the samples (statistics key of the whole
    training split), the split boundaries and this baseline's definition."""
    identity = {
        "samples": statistics_key(ds, ds.split_size("train")),
        "splits": ds.splits,
        "max_train": max_train,
        "baseline_version": BASELINE_VERSION,
        "engine_version": ENGINE_VERSION,
        "alphas": ALPHAS,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def baseline_path(ds: KineticsDataset, cache_dir: str | os.PathLike | None = None, max_train=None) -> Path:
    """Where the cached ridge result of `ds` lives: <cache_dir or the default>/baseline/<name>-<key>.json."""
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    return folder / "baseline" / f"{ds.name}-{baseline_key(ds, max_train)}.json"


def cached_baseline(
    dataset_cfg: Any,
    cache_dir: str | os.PathLike | None = None,
    compute: bool = False,
    max_train: int | None = None,
) -> dict | None:
    """The cached ridge result of a dataset config (`r2_mean`, `r2_per_output`, ...).

    `cache_dir` is the statistics cache folder (None: the default one); the result lives
    in its `baseline/` subfolder. Returns None when not cached, unless compute=True,
    which fits it (once, under a lock) and caches it.
    """
    if not isinstance(dataset_cfg, KineticsDataset):
        dataset_cfg = KineticsDataset(dataset_cfg, source=f"dataset {OmegaConf.select(dataset_cfg, 'name')}")
    ds = dataset_cfg
    path = baseline_path(ds, cache_dir, max_train)
    cached = _read(path)
    if cached is not None or not compute:
        return cached
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process fits, the others wait and read
        cached = _read(path)
        if cached is not None:
            return cached
        result = {**fit_ridge(ds, max_train), "key": baseline_key(ds, max_train)}
        atomic_write_json(path, result)
        return result


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def reference_scores(dataset_cfg: Any, cache_dir: str | os.PathLike | None = None) -> dict:
    """What a run's test `r2_mean` is read against: the dataset label's ceiling and, when
    cached, the ridge baseline (never fitted here). For final_results.json and the reports."""
    ds = dataset_cfg if isinstance(dataset_cfg, KineticsDataset) else KineticsDataset(dataset_cfg)
    ridge = cached_baseline(ds, cache_dir)
    return {
        **ceiling_summary(ds, "test"),
        "ridge_r2_mean": ridge["r2_mean"] if ridge else None,
        "ridge_r2_per_output": ridge["r2_per_output"] if ridge else None,
    }
