"""Engine vs the older code's way (odeint + numpy SVD, one sample at a time), in one run.

Prints a JSON object as its last line: samples_per_s (engine, all cores),
reference_samples_per_s, speedup, max_abs_error (engine concentrations vs DOP853
at rtol 1e-12, over the textbook and legacy mechanisms and a fast-kinetics
dataset), plus the feature and label errors and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numba
import numpy as np

from bionn.config.dataset import resolve_dataset
from bionn.data.dataset import KineticsDataset
from bionn.data.reference import reference_sample


def engine_rate(ds: KineticsDataset, seconds: float, batch: int = 4096) -> float:
    ds.generate(np.arange(batch))  # compile / load the cached kernel
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        ds.generate(np.arange(n, n + batch), concentrations=False)
        n += batch
    return n / (time.perf_counter() - start)


def reference_rate(ds: KineticsDataset, seconds: float) -> float:
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        reference_sample(ds, n, tight=False)
        n += 1
    return n / (time.perf_counter() - start)


def errors(ds: KineticsDataset, n: int) -> dict:
    indices = np.random.default_rng(0).choice(ds.splits["test"][1], n, replace=False)
    got = ds.generate(indices)
    worst = {"concentrations": 0.0, "features": 0.0, "labels": 0.0}
    for i, index in enumerate(indices):
        ref = reference_sample(ds, int(index), tight=True)
        for key in worst:
            worst[key] = max(worst[key], float(np.abs(getattr(got, key)[i] - ref[key]).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--seconds", type=float, default=8.0, help="timing window per side")
    parser.add_argument("--error-samples", type=int, default=100, help="samples per error check")
    args = parser.parse_args()
    ds = KineticsDataset(resolve_dataset("dbig"))
    engine = engine_rate(ds, args.seconds)
    reference = reference_rate(ds, args.seconds)
    variants = {
        "dbig": ds,
        "dbig legacy": KineticsDataset(_with(ds, {"simulation": {"mechanism": "legacy"}})),
        "fast kinetics": KineticsDataset(
            _with(ds, {"parameters": {"k1_max": 2.0, "k3_max": 0.8, "S0_max": 1.5}})
        ),
    }
    errs = {name: errors(v, args.error_samples) for name, v in variants.items()}
    result = {
        "samples_per_s": round(engine),
        "reference_samples_per_s": round(reference, 1),
        "speedup": round(engine / reference, 1),
        "max_abs_error": max(e["concentrations"] for e in errs.values()),
        "max_abs_error_features": max(e["features"] for e in errs.values()),
        "max_abs_error_labels": max(e["labels"] for e in errs.values()),
        "errors_by_dataset": errs,
        "engine_threads": numba.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
    }
    if not args.json:
        print(f"engine {engine:,.0f} samples/s, reference {reference:,.1f} samples/s")
    print(json.dumps(result))


def _with(ds: KineticsDataset, changes: dict):
    from omegaconf import OmegaConf

    return OmegaConf.merge(ds.cfg, changes)


if __name__ == "__main__":
    main()
