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

`--samples-axis` (issue 32) instead trains the shipped long experiments (LONG: TR_long,
TR_relative_long) through `train.py` at each of `--points` training-sample counts (epochs of
50,000 fresh samples, the cosine schedule over the whole run; the test split is dmedium's, as in
experiment=TR), and with `--long` also at their own length, each in `--runs`/<label>/<samples>
(a folder that already holds a completed run is read, not trained again). It fits
r2 = a - b * (samples / 1e6)^-c per label, writes every point with its fitted value to `--csv`
and the figure (log samples axis, both labels) to `--plot`, and prints one JSON object: per
label the points, the fit, ridge per output, and the samples the fit predicts for the target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
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
# The samples axis (--samples-axis): the long experiments, and the training-sample counts below theirs.
LONG = {"seed_label": "TR_long", "scale_free": "TR_relative_long"}
POINTS = (200_000, 400_000, 800_000, 1_600_000, 3_200_000, 6_400_000)


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
    from matplotlib.ticker import NullFormatter

    from bionn.io import figure, write_figure

    fig, axes = figure(ncols=len(results), figsize=(6 * len(results), 4.5), sharey=True)
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
    write_figure(fig, path, bbox_inches="tight")


def axis_point(experiment: str, samples: int | None, run_dir: Path, overrides: list[str]) -> dict:
    """`train.py experiment=<experiment> <overrides>` trained on `samples` (None: the experiment's own
    length) in run_dir, or read from there if it already completed; test r2_mean, per output, time."""
    from bionn.config.dataset import split_sizes

    final_path = run_dir / "final_results.json"
    command = [sys.executable, "train.py", f"experiment={experiment}", *overrides, f"hydra.run.dir={run_dir}"]
    shape = compose([f"experiment={experiment}", *overrides]).dataset.shape
    per_epoch = split_sizes(int(shape.n_samples), list(shape.splits))[0]  # fresh every epoch
    if samples is not None:
        epochs = max(1, samples // per_epoch)
        command += [f"training.epochs={epochs}", f"training.save_interval={epochs}"]
    reused = final_path.exists() and json.loads(final_path.read_text())["status"] == "completed"
    if not reused:
        started = time.time()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[1:])} failed:\n{(done.stdout + done.stderr)[-2000:]}")
        print(f"{run_dir}: {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    final = json.loads(final_path.read_text())
    test = final["evaluation"]["test"]
    return {
        "samples": final["train_samples"],
        "epochs": final["epochs_completed"],
        "r2_mean": round(test["r2_mean"], 4),
        "r2_per_output": [round(v, 4) for v in test["r2_per_output"]],
        "fit_s": final["training_time_s"],
        "wall_s": final["wall_time_s"],
        "samples_per_s": final["train_samples_per_s"],
        "run": str(run_dir),
        "reused": reused,
    }


def saturating(n, a, b, c):
    """The fitted curve: test r2_mean after n million training samples."""
    return a - b * n ** (-c)


def fit_curve(points: list[dict], target: float) -> dict:
    """r2 = a - b * n^-c (n in millions) by least squares; the samples it predicts for `target` (None
    when its asymptote a is at or below the target)."""
    import warnings

    import numpy as np
    from scipy.optimize import OptimizeWarning, curve_fit

    warnings.simplefilter("ignore", OptimizeWarning)  # no covariance with as many points as parameters
    n = np.array([p["samples"] / 1e6 for p in points])
    r2 = np.array([p["r2_mean"] for p in points])
    (a, b, c), _ = curve_fit(
        saturating, n, r2, p0=(r2.max() + 0.02, 0.05, 0.3), bounds=([0, 0, 0], [1, 10, 3])
    )
    residual = r2 - saturating(n, a, b, c)
    needed = (b / (a - target)) ** (1 / c) * 1e6 if a > target else None
    return {
        "a": float(f"{a:.6g}"),
        "b": float(f"{b:.6g}"),
        "c": float(f"{c:.6g}"),
        "rms_residual": round(float(np.sqrt(np.mean(residual**2))), 4),
        "target": target,
        "samples_for_target": None if needed is None else int(round(needed, -5)),
    }


def samples_axis(args) -> dict:
    """The long experiments at each point, and optionally at their own length; fit, CSV and figure."""
    from bionn.baseline import cached_baseline

    points = [int(p) for p in args.points.split(",")]
    out: dict = {}
    for key in args.labels.split(","):
        experiment, overrides = LONG[key], args.train_overrides
        cfg = compose([f"experiment={experiment}", *overrides])
        ridge = cached_baseline(cfg.dataset, cfg.runtime.stats_cache_dir, True)
        runs = [axis_point(experiment, n, Path(args.runs) / key / str(n), overrides) for n in points]
        if args.long:
            runs.append(axis_point(experiment, None, Path(args.runs) / key / "long", overrides))
        runs.sort(key=lambda p: p["samples"])
        largest = runs[-1]
        above = [m > r for m, r in zip(largest["r2_per_output"], ridge["r2_per_output"], strict=True)]
        out[key] = {
            "experiment": experiment,
            "points": runs,
            "fit": fit_curve(runs, TARGETS[key]),
            "ridge_r2_mean": round(ridge["r2_mean"], 4),
            "ridge_r2_per_output": [round(v, 4) for v in ridge["r2_per_output"]],
            "largest_outputs_above_ridge": sum(above),
            "largest_target_met": largest["r2_mean"] >= TARGETS[key] and all(above),
        }
    if args.csv:
        write_axis_csv(out, Path(args.csv))
    if args.plot:
        plot_axis(out, Path(args.plot))
    return out


def write_axis_csv(out: dict, path: Path) -> None:
    from bionn.io import atomic_write_bytes

    lines = ["label,experiment,samples,epochs,test_r2_mean,fitted_r2_mean,fit_s,samples_per_s"]
    for key, res in out.items():
        f = res["fit"]
        for p in res["points"]:
            fitted = saturating(p["samples"] / 1e6, f["a"], f["b"], f["c"])
            lines.append(
                f"{LABELS[key]},{res['experiment']},{p['samples']},{p['epochs']},{p['r2_mean']},"
                f"{fitted:.4f},{p['fit_s']},{p['samples_per_s']}"
            )
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def plot_axis(out: dict, path: Path) -> None:
    import numpy as np

    from bionn.io import figure, write_figure

    fig, ax = figure(figsize=(7, 4.5))
    for i, (key, res) in enumerate(out.items()):
        f, color = res["fit"], f"C{i}"
        n = np.array([p["samples"] for p in res["points"]])
        ax.plot(n, [p["r2_mean"] for p in res["points"]], "o", color=color, label=f"{LABELS[key]} label")
        end = max(n.max(), f["samples_for_target"] or 0) * 1.5
        grid = np.geomspace(n.min(), end, 200)
        ax.plot(
            grid,
            saturating(grid / 1e6, f["a"], f["b"], f["c"]),
            "-",
            color=color,
            lw=0.8,
            label=f"fit {f['a']:.3f} - {f['b']:.3f} n^-{f['c']:.2f} (n in millions)",
        )
        ax.axhline(TARGETS[key], color=color, ls="-.", lw=0.8, label=f"target {TARGETS[key]}")
    ax.set_ylim(top=max(TARGETS[key] for key in out) + 0.01)  # the targets stay in view
    ax.set_xscale("log")
    ax.set_xlabel("training samples (fresh, on the fly)")
    ax.set_ylabel("test r2_mean (dmedium's test split)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    write_figure(fig, path, bbox_inches="tight")


def parse_args() -> argparse.Namespace:
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
    parser.add_argument("--samples-axis", action="store_true", help="the long experiments against samples")
    parser.add_argument("--points", default=",".join(map(str, POINTS)), help="training samples per point")
    parser.add_argument("--long", action="store_true", help="also the long experiments at their own length")
    parser.add_argument("--runs", default="outputs/samples_axis", help="the samples axis' run folders (kept)")
    parser.add_argument("--csv", help="write the samples axis' points and fit to this CSV")
    parser.add_argument(
        "--train-overrides", nargs="*", default=[], help="overrides of every samples-axis run (a quick check)"
    )
    return parser.parse_args()


def main() -> None:
    from bionn.machine import cpu_model

    args = parse_args()
    if args.samples_axis:
        started = time.time()
        output = samples_axis(args)
        output["wall_time_s"] = round(time.time() - started, 1)
        output["machine"] = f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        print(json.dumps(output))
        return
    label_budgets(args, cpu_model())


def label_budgets(args, machine: str) -> None:
    """The shipped and seed models per label under a fixed sample budget (the script's first mode)."""
    import tensorflow as tf

    started, load_start = time.time(), os.getloadavg()
    output: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        for key in args.labels.split(","):
            output[key] = label_budget(key, args, out)
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
    output["machine"] = f"{machine}, {os.cpu_count()} cores, Python {platform.python_version()}"
    output["tensorflow"] = tf.__version__
    print(json.dumps(output))


def label_budget(key: str, args, out: Path) -> dict:
    """One label: the shipped models (the best of them), the seed models, ridge and the ceiling."""
    from bionn.baseline import cached_baseline

    label, cache = LABELS[key], out / "cache"
    models = {m: train(shipped_run(m, label, args, cache), out / key / m) for m in args.models.split(",")}
    seed = {  # seed-<arch>: apart from a shipped model of the same name
        a: train(seed_run(a, label, args, cache), out / key / f"seed-{a}")["r2_mean"]
        for a in filter(None, args.seed_models.split(","))
    }
    ridge = cached_baseline(shipped_run(args.models.split(",")[0], label, args, cache).dataset, cache, True)
    best = max(models, key=lambda m: models[m]["r2_mean"])
    reference = models[best]["reference"]
    above = [m > r for m, r in zip(models[best]["r2_per_output"], ridge["r2_per_output"], strict=True)]
    print(  # progress on stderr; stdout's last line is the JSON
        f"{key}: {best} {models[best]['r2_mean']} (ridge {ridge['r2_mean']:.4f}), seed {seed}",
        file=sys.stderr,
        flush=True,
    )
    return {
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


if __name__ == "__main__":
    main()
