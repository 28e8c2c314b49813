"""Accuracy per label under a fixed sample budget: the shipped models, the seed models, ridge, ceiling.

One run trains, for each label (`seed_label`: the seed's C^T U_k; `scale_free`:
the same relative to E0 + S0, docs/accuracy.md), on dmedium's distribution:

- the shipped models (MODELS, each through its conf/experiment/ config) on
  TRAIN_SAMPLES fresh training samples per epoch for their experiment's epochs,
  evaluated on every split every `save_interval` epochs: the learning curve
  (test `r2_mean` against training samples seen);
- the four seed architectures on a budget of SEED_TRAIN_SAMPLES (one epoch, the
  seed defaults: adam 1e-3, batch 64) with their own split of the same
  distribution (their test split is the same size but other samples: P2 costs
  about 15 times P per sample, so the shipped budget is out of reach for them);
- ridge (`bionn.baseline`) fitted on the shipped models' training split (epoch 0's
  TRAIN_SAMPLES samples) and the label's ceiling (`bionn.baseline.label_ceiling`),
  both on the shipped models' test split.

Budget in samples and epochs, not in wall time (BENCHMARKS.md records the wall
time and the machine's load). Prints one JSON object as its last line:
{"seed_label": {...}, "scale_free": {...}, ...}, each with best_model, r2_mean,
r2_per_output, ridge_r2_mean, ceiling_r2_mean, outputs_above_ridge, seed_models
and the learning curves; --plot writes the learning curves as a PNG.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"seed_label": "seed", "scale_free": "relative"}
TARGETS = {"seed_label": 0.90, "scale_free": 0.97}
MODELS = ("TR",)
SEED_MODELS = ("A", "E", "P", "P2")
TRAIN_SAMPLES = 50_000
VAL_SAMPLES = 5_000
TEST_SAMPLES = 5_000
SEED_TRAIN_SAMPLES = 2_048


def splits_overrides(train: int, val: int, test: int) -> list[str]:
    total = train + val + test
    return [
        f"dataset.shape.n_samples={total}",
        f"dataset.shape.splits=[{train / total!r},{val / total!r},{1 - train / total - val / total!r}]",
    ]


def compose(overrides: list[str]):
    from bionn.config.compose import compose_run

    return compose_run(*overrides, conf=ROOT / "conf")


def common(label: str, cache: Path) -> list[str]:
    return [
        "dataset=dmedium",
        f"dataset.label={label}",
        "dataset.shape.fresh_train_each_epoch=true",
        "dataset.shape.n_shards=8",
        "training.early_stopping_patience=0",
        "training.verbose=0",
        f"runtime.stats_cache_dir={cache}",
    ]


def shipped_run(model: str, label: str, args, cache: Path):
    overrides = [f"experiment={model}", *common(label, cache)]
    overrides += splits_overrides(args.train_samples, args.val_samples, args.test_samples)
    if args.epochs:
        overrides.append(f"training.epochs={args.epochs}")
    return compose(overrides)


def seed_run(arch: str, label: str, args, cache: Path):
    overrides = [f"model={arch}", *common(label, cache), "training.epochs=1", "training.save_interval=0"]
    overrides += splits_overrides(args.seed_train_samples, args.val_samples, args.test_samples)
    overrides.append(f"training.use_stats_of={args.seed_train_samples}")
    return compose(overrides)


def train(cfg, run_dir: Path) -> dict:
    import keras

    from bionn.train import run

    keras.backend.clear_session()
    run(cfg, run_dir)
    final = json.loads((run_dir / "final_results.json").read_text())
    if final["status"] != "completed":
        raise RuntimeError(f"{run_dir}: {final['status']}: {final.get('error')}")
    test = final["evaluation"]["test"]
    per_epoch = int(cfg.dataset.shape.n_samples * cfg.dataset.shape.splits[0] + 0.5)
    curve = []
    for path in sorted(run_dir.glob("results_epoch_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1])):
        epoch = int(path.stem.rsplit("_", 1)[1])
        r2 = json.loads(path.read_text())["evaluation"]["test"]["r2_mean"]
        curve.append([epoch * per_epoch, round(r2, 4)])
    seen = final["epochs_completed"] * per_epoch
    if not curve or curve[-1][0] != seen:
        curve.append([seen, round(test["r2_mean"], 4)])
    return {
        "r2_mean": round(test["r2_mean"], 4),
        "r2_per_output": [round(v, 4) for v in test["r2_per_output"]],
        "val_r2_mean": round(final["evaluation"]["validation"]["r2_mean"], 4),
        "train_samples_seen": seen,
        "training_time_s": final["training_time_s"],
        "samples_per_s": round(seen / final["training_time_s"], 1),
        "parameters": json.loads((run_dir / "info.json").read_text())["parameters"],
        "precision": str(cfg.training.precision),
        "curve": curve,
        "reference": final["reference"],
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from bionn.io import atomic_write_bytes

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), sharey=True)
    for ax, (key, res) in zip(axes, results.items(), strict=True):
        for name, model in res["models"].items():
            x, y = zip(*model["curve"], strict=True)
            ax.plot(x, y, marker="o", label=name)
        for i, (name, r2) in enumerate(res["seed_models"].items()):
            color = f"C{i + len(res['models'])}"
            ax.scatter(
                [res["seed_train_samples"]], [max(r2, -0.05)], marker="x", color=color, label=f"{name} (seed)"
            )
        ax.axhline(res["ridge_r2_mean"], color="grey", ls="--", label="ridge")
        ax.axhline(res["ceiling_r2_mean"], color="black", ls=":", label="ceiling")
        ax.axhline(TARGETS[key], color="red", ls="-.", lw=0.8, label="target")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training samples seen")
        ax.set_title(f"{key} (label {LABELS[key]})")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test r2_mean")
    axes[0].set_ylim(-0.05, 1.02)
    axes[-1].legend(fontsize=8, loc="lower right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def main() -> None:
    from bionn.machine import cpu_model

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--labels", default=",".join(LABELS), help="subset of seed_label,scale_free")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seed-models", default=",".join(SEED_MODELS), help="'' for none")
    parser.add_argument(
        "--epochs", type=int, help="epochs of the shipped models (default: their experiment's)"
    )
    parser.add_argument("--train-samples", type=int, default=TRAIN_SAMPLES)
    parser.add_argument("--val-samples", type=int, default=VAL_SAMPLES)
    parser.add_argument("--test-samples", type=int, default=TEST_SAMPLES)
    parser.add_argument("--seed-train-samples", type=int, default=SEED_TRAIN_SAMPLES)
    parser.add_argument("--plot", help="write the learning curves to this PNG")
    parser.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args()

    import tensorflow as tf

    from bionn.baseline import cached_baseline

    started, load_start = time.time(), os.getloadavg()
    output: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        cache = out / "cache"
        for key in args.labels.split(","):
            label = LABELS[key]
            models = {
                m: train(shipped_run(m, label, args, cache), out / key / m) for m in args.models.split(",")
            }
            seed = {  # seed-<arch>: apart from a shipped model of the same name
                a: train(seed_run(a, label, args, cache), out / key / f"seed-{a}")["r2_mean"]
                for a in filter(None, args.seed_models.split(","))
            }
            ridge = cached_baseline(
                shipped_run(args.models.split(",")[0], label, args, cache).dataset, cache, True
            )
            best = max(models, key=lambda m: models[m]["r2_mean"])
            reference = models[best]["reference"]
            above = [
                m > r for m, r in zip(models[best]["r2_per_output"], ridge["r2_per_output"], strict=True)
            ]
            output[key] = {
                "label": label,
                "best_model": best,
                "r2_mean": models[best]["r2_mean"],
                "r2_per_output": models[best]["r2_per_output"],
                "ridge_r2_mean": round(ridge["r2_mean"], 4),
                "ridge_r2_per_output": [round(v, 4) for v in ridge["r2_per_output"]],
                "ceiling_r2_mean": round(reference["ceiling_r2_mean"], 4),
                "ceiling_r2_per_output": [round(v, 4) for v in reference["ceiling_r2_per_output"]],
                "outputs_above_ridge": sum(above),
                "seed_models": seed,
                "seed_train_samples": args.seed_train_samples,
                "target_r2_mean": TARGETS[key],
                "target_met": models[best]["r2_mean"] >= TARGETS[key] and all(above),
                "models": models,
            }
            print(  # progress on stderr; stdout's last line is the JSON
                f"{key}: {best} {models[best]['r2_mean']} (ridge {ridge['r2_mean']:.4f}), seed {seed}",
                file=sys.stderr,
                flush=True,
            )
    if args.plot:
        plot(output, Path(args.plot))
    output["budget"] = {
        "train_samples_per_epoch": args.train_samples,
        "fresh_train_each_epoch": True,
        "val_samples": args.val_samples,
        "test_samples": args.test_samples,
        "seed_train_samples": args.seed_train_samples,
        "ridge_train_samples": args.train_samples,
    }
    output["wall_time_s"] = round(time.time() - started, 1)
    output["load_average_start_end"] = [round(load_start[0], 2), round(os.getloadavg()[0], 2)]
    output["machine"] = f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    output["tensorflow"] = tf.__version__
    print(json.dumps(output))


if __name__ == "__main__":
    main()
