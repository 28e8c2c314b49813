"""Test `r2_mean` of an ensemble: the mean prediction of several finished runs' networks.

Every run must have been trained on the same dataset (the same distribution, split and label):
the script refuses runs whose dataset configs differ, naming the first key that does. Each
network's inference model (`which`: best or last, docs/using-models.md) predicts the first run's
test split; the ensemble's prediction is their mean. Prints one JSON object as its last line:
{"members": [{"run", "r2_mean", "r2_per_output"}...], "ensemble": {"r2_mean", "r2_per_output",
"r_squared"}, "samples", "gain_over_best_member"}.

    python scripts/bench_ensemble.py --json multirun/search-TRX/.../trials/{1,0,11}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

_CHUNK = 4096


def first_difference(a: dict, b: dict, prefix: str = "dataset") -> str | None:
    """The first dotted key where two plain config trees differ, or None."""
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            found = first_difference(left, right, f"{prefix}.{key}")
            if found:
                return found
        elif left != right:
            return f"{prefix}.{key} ({left!r} against {right!r})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders (two or more)")
    parser.add_argument("--which", default="best", choices=("best", "last"))
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("an ensemble needs two or more run folders")

    from bionn.data.dataset import KineticsDataset
    from bionn.predict import run_dataset
    from bionn.rsquared import RSquaredSums
    from bionn.run_folder import RunFolder, RunFolderError
    from bionn.trained import ModelUnavailable, load_model

    started = time.time()
    try:  # first: a folder that is missing, unfinished or of another bionn is named here
        models = [load_model(r, args.which) for r in args.runs]
        configs = [OmegaConf.to_container(run_dataset(RunFolder(r)), resolve=True) for r in args.runs]
    except (ModelUnavailable, RunFolderError) as err:
        print(f"bench_ensemble: {err}", file=sys.stderr)
        return 2
    for run, cfg in zip(args.runs[1:], configs[1:], strict=True):
        differs = first_difference(configs[0], cfg)
        if differs:
            print(
                f"bench_ensemble: {run} was trained on another dataset than {args.runs[0]}: {differs}",
                file=sys.stderr,
            )
            return 2
    ds = KineticsDataset(run_dataset(RunFolder(args.runs[0])), source=str(args.runs[0]))
    member_sums = [RSquaredSums(ds.n_labels) for _ in models]
    ensemble_sums = RSquaredSums(ds.n_labels)
    lo, hi = ds.splits["test"]
    for start in range(lo, hi, _CHUNK):
        batch = ds.generate(np.arange(start, min(hi, start + _CHUNK)), concentrations=False)
        predictions = [m.predict(batch.features[..., None], batch_size=512, verbose=0) for m in models]
        for sums, prediction in zip(member_sums, predictions, strict=True):
            sums.update(batch.labels, prediction)
        ensemble_sums.update(batch.labels, np.mean(predictions, axis=0))
    members = [{"run": str(r), **s.summary()} for r, s in zip(args.runs, member_sums, strict=True)]
    ensemble = ensemble_sums.summary()
    result = {
        "members": members,
        "ensemble": ensemble,
        "which": args.which,
        "samples": hi - lo,
        "gain_over_best_member": ensemble["r2_mean"] - max(m["r2_mean"] for m in members),
        "wall_time_s": round(time.time() - started, 1),
    }
    if not args.json:
        for m in members:
            print(f"{m['run']}: test r2_mean {m['r2_mean']:.4f}")
        print(f"ensemble of {len(members)}: test r2_mean {ensemble['r2_mean']:.4f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
