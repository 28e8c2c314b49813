"""Accuracy of the seed architectures under a fixed training budget, against the ridge baseline.

Budget (samples and epochs, not wall time). One dataset for all: dmedium's
distribution (every seed dataset draws from the same ranges) with a training
split of TRAIN_SAMPLES that is drawn fresh every epoch (`fresh_train_each_epoch`,
as the older code's unlimited data), a fixed validation split of VAL_SAMPLES and
a fixed test split of TEST_SAMPLES, batch 64. Architecture X trains EPOCHS[X]
epochs, i.e. EPOCHS[X] * TRAIN_SAMPLES distinct samples. The epochs keep all
four within 40 minutes on 2 CPU cores shared with other jobs (BENCHMARKS.md):
A, E and P2 get 3-5 minutes each (P2 costs ~15x P per sample), P, the cheapest
per sample and the best per CPU second in our runs, gets the largest share. Training
options: the defaults (adam, learning rate 1e-3, clipvalue 1, MSE) plus
--scale-labels and --sign-rule; no early stopping.

The ridge baseline (`bionn.baseline`) is fitted on the same training split
(epoch 0's samples) and scored on the same test split. `ceiling` is the
best any model can score on that test split: the features do not determine the
absolute concentration scale (`bionn.baseline.scale_ceiling`).

Prints one JSON object as its last line: per architecture and for the baseline,
`r2_mean` and `r2_per_output` on the test split (original label scale), the
pooled `r_squared`, training time, the budget and the options used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURES = ("A", "E", "P", "P2")
EPOCHS = {"A": 5, "E": 6, "P": 48, "P2": 1}
TRAIN_SAMPLES = 4000
VAL_SAMPLES = 1000
TEST_SAMPLES = 2000


def compose_arch(arch: str, epochs: int, args, cache: Path):
    from bionn.config.compose import compose_run

    total = args.train_samples + args.val_samples + args.test_samples
    splits = [args.train_samples / total, args.val_samples / total]
    overrides = [
        f"model={arch}",
        "dataset=dmedium",
        f"dataset.shape.n_samples={total}",
        f"dataset.shape.splits=[{splits[0]!r},{splits[1]!r},{1 - splits[0] - splits[1]!r}]",
        "dataset.shape.fresh_train_each_epoch=true",
        "dataset.shape.n_shards=8",
        f"dataset.simulation.svd_sign={args.sign_rule}",
        f"training.epochs={epochs}",
        f"training.scale_labels={str(args.scale_labels).lower()}",
        f"training.use_stats_of={args.train_samples}",
        "training.save_interval=0",
        "training.early_stopping_patience=0",
        "training.verbose=0",
        f"runtime.stats_cache_dir={cache}",
    ]
    return compose_run(*overrides, conf=ROOT / "conf")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--architectures", default=",".join(ARCHITECTURES))
    parser.add_argument("--epochs", type=int, help="epochs of every architecture (default: EPOCHS)")
    parser.add_argument("--train-samples", type=int, default=TRAIN_SAMPLES)
    parser.add_argument("--val-samples", type=int, default=VAL_SAMPLES)
    parser.add_argument("--test-samples", type=int, default=TEST_SAMPLES)
    parser.add_argument("--scale-labels", type=int, choices=(0, 1), default=1)
    parser.add_argument("--sign-rule", default="first_positive")
    parser.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from bionn.baseline import cached_baseline, scale_ceiling
    from bionn.data.dataset import KineticsDataset
    from bionn.train import run

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        cache = out / "cache"
        results: dict = {}
        started = time.time()
        for arch in args.architectures.split(","):
            run_dir = out / arch
            epochs = args.epochs or EPOCHS[arch]
            cfg = compose_arch(arch, epochs, args, cache)
            keras.backend.clear_session()
            run(cfg, run_dir)
            final = json.loads((run_dir / "final_results.json").read_text())
            test = final["evaluation"]["test"]
            results[arch] = {
                "r2_mean": round(test["r2_mean"], 4),
                "r2_per_output": [round(v, 4) for v in test["r2_per_output"]],
                "r_squared": round(test["r_squared"], 4),
                "val_r2_mean": round(final["evaluation"]["validation"]["r2_mean"], 4),
                "epochs": epochs,
                "train_samples_seen": epochs * args.train_samples,
                "training_time_s": final["training_time_s"],
                "parameters": json.loads((run_dir / "info.json").read_text())["parameters"],
            }
            if not args.json:
                print(f"{arch}: r2_mean {results[arch]['r2_mean']} in {final['training_time_s']:.0f} s")
        ridge = cached_baseline(cfg.dataset, cache, compute=True)
        results["ridge"] = {
            "r2_mean": round(ridge["r2_mean"], 4),
            "r2_per_output": [round(v, 4) for v in ridge["r2_per_output"]],
            "r_squared": round(ridge["r_squared"], 4),
            "alpha": ridge["alpha"],
        }
        ceiling = scale_ceiling(KineticsDataset(cfg.dataset), "test")
        results["ceiling"] = {
            "r2_mean": round(float(ceiling.mean()), 4),
            "r2_per_output": [round(float(v), 4) for v in ceiling],
        }
    models = [a for a in results if a not in ("ridge", "ceiling")]
    best = max(models, key=lambda a: results[a]["r2_mean"])
    beats = [
        m > r for m, r in zip(results[best]["r2_per_output"], results["ridge"]["r2_per_output"], strict=True)
    ]
    summary = {
        "results": results,
        "best": best,
        "best_r2_mean": results[best]["r2_mean"],
        "best_beats_ridge_on_outputs": sum(beats),
        "target_met": results[best]["r2_mean"] >= 0.95 and all(beats),
        "budget": {
            "epochs": {a: results[a]["epochs"] for a in models},
            "train_samples_per_epoch": args.train_samples,
            "fresh_train_each_epoch": True,
            "val_samples": args.val_samples,
            "test_samples": args.test_samples,
            "batch_size": int(cfg.dataset.shape.batch_size),
        },
        "options": {
            "scale_labels": bool(args.scale_labels),
            "svd_sign": args.sign_rule,
            "optimizer": str(cfg.training.compile.optimizer),
            "learning_rate": float(cfg.training.compile.learning_rate),
            "loss": str(cfg.training.compile.loss),
        },
        "wall_time_s": round(time.time() - started, 1),
        "tensorflow": tf.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
    }
    if not args.json:
        for name, r in results.items():
            print(f"{name:>6}: r2_mean {r['r2_mean']:.4f}  per output {r['r2_per_output']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
