"""Training speed per model under each speed option, and what the fastest option costs in accuracy.

One run, three parts (the last line of output is one JSON object):

1. `options`: for each model (the seed models and the shipped ones, each with the
   batch size of its experiment: 64 for the seed models, 512 for TR), training
   samples/s from the same in-memory batches under each speed option: float32,
   mixed_bfloat16, mixed_float16 (only where `bionn.nn.optim.check_precision`
   allows them on this machine), XLA (`training.jit_compile`, float32) and
   `training.steps_per_execution` = 8 (float32). Every option gets a fresh model,
   a warm-up fit (tracing) and then `--rounds` timed fits, alternating options;
   `ratio_to_float32` is the median of the per-round ratios.
2. `accuracy`: TR on dmedium's distribution with the relative label, trained for
   ACC_EPOCHS epochs of ACC_TRAIN_SAMPLES fixed samples in float32 and in every
   mixed precision the machine can run, test `r2_mean` of each and its difference
   to float32 (tolerance ACC_TOLERANCE).
3. `input`: model E fed by the on-the-fly pipeline against the same batches from
   memory (`input_bound_ratio`; 1.0 means generating the data costs nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"A": 64, "E": 64, "P": 64, "P2": 64, "TR": 512}
# Samples per timed fit: the seed CNNs run at tens to thousands of samples/s on 2 cores.
SAMPLES = {"A": 1_280, "E": 1_280, "P": 2_560, "P2": 256, "TR": 10_240}
ACC_TRAIN_SAMPLES = 40_000
ACC_EPOCHS = 5
ACC_TOLERANCE = 0.01


def compose(overrides: list[str]):
    from bionn.config.compose import compose_run

    return compose_run(*overrides, conf=ROOT / "conf")


def options() -> dict[str, list[str]]:
    from bionn.config.errors import ConfigError
    from bionn.config.schema import Precision
    from bionn.nn.optim import check_precision

    found = {"float32": []}
    for precision in (Precision.mixed_bfloat16, Precision.mixed_float16):
        try:
            check_precision(precision)
        except ConfigError:
            continue
        found[precision.value] = [f"training.precision={precision.value}"]
    found["xla"] = ["training.jit_compile=true", "runtime.deterministic=false"]
    found["steps_per_execution_8"] = ["training.steps_per_execution=8"]
    return found


def build(cfg, ds, steps_per_epoch: int):
    import keras

    from bionn.nn.model import build_model
    from bionn.nn.optim import apply_precision, compile_for_training

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    apply_precision(cfg.training)
    model = build_model(cfg.model, ds.feature_shape, ds.n_labels)
    compile_for_training(model, cfg.training, steps_per_epoch)
    return model


def speed_options(args) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from bionn.data.dataset import KineticsDataset

    results = {}
    for model_name in args.models.split(","):
        batch = MODELS[model_name]
        n = max(batch, int(SAMPLES[model_name] * args.scale) // batch * batch)
        base = ["dataset=dmedium", f"dataset.shape.batch_size={batch}"]
        model_override = f"experiment={model_name}" if model_name == "TR" else f"model={model_name}"
        variants = {name: compose([model_override, *base, *extra]) for name, extra in options().items()}
        ds = KineticsDataset(variants["float32"].dataset)
        samples = ds.generate(np.arange(n), concentrations=False)
        x = ((samples.features - samples.features.mean(0)) / (samples.features.std(0) + 1e-7)).astype(
            "float32"
        )
        y = ((samples.labels - samples.labels.mean(0)) / samples.labels.std(0)).astype("float32")
        data = tf.data.Dataset.from_tensor_slices((x[..., None], y)).batch(batch).cache()
        models = {}
        for name, cfg in variants.items():
            models[name] = build(cfg, ds, n // batch)
            models[name].fit(data.take(3), verbose=0)  # trace and warm up
        seconds = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model.fit(data, epochs=1, verbose=0, shuffle=False)
                seconds[name].append(time.perf_counter() - start)
        results[model_name] = {
            "batch_size": batch,
            "samples_per_fit": n,
            "samples_per_s": {name: round(n / statistics.median(s), 1) for name, s in seconds.items()},
            "ratio_to_float32": {
                name: round(statistics.median(f / s for f, s in zip(seconds["float32"], t, strict=True)), 3)
                for name, t in seconds.items()
            },
        }
        keras.config.set_dtype_policy("float32")
        print(  # progress on stderr; stdout's last line is the JSON
            model_name,
            results[model_name]["samples_per_s"],
            results[model_name]["ratio_to_float32"],
            file=sys.stderr,
            flush=True,
        )
    return results


def accuracy(args) -> dict:
    import keras
    import numpy as np

    from bionn.data.dataset import KineticsDataset
    from bionn.rsquared import r2_per_output

    out = {}
    for precision in [p for p in options() if p.startswith("mixed") or p == "float32"]:
        cfg = compose(
            [
                "experiment=TR",
                "dataset.label=relative",
                f"training.precision={precision}",
                "training.epochs=5",
            ]
        )
        ds = KineticsDataset(cfg.dataset)
        train = ds.generate(np.arange(args.acc_samples), concentrations=False)
        test = ds.generate(np.arange(10**6, 10**6 + 5000), concentrations=False)
        fm, fs = train.features.mean(0), train.features.std(0) + 1e-7
        lm, ls = train.labels.mean(0), train.labels.std(0)
        batch = int(cfg.dataset.shape.batch_size)
        model = build(cfg, ds, args.acc_samples // batch)
        start = time.perf_counter()
        model.fit(
            ((train.features - fm) / fs)[..., None].astype("float32"),
            ((train.labels - lm) / ls).astype("float32"),
            batch_size=batch,
            epochs=ACC_EPOCHS,
            verbose=0,
            shuffle=True,
        )
        fit_s = time.perf_counter() - start
        predicted = model.predict(((test.features - fm) / fs)[..., None].astype("float32"), verbose=0)
        r2 = r2_per_output(test.labels, np.asarray(predicted, dtype=np.float64) * ls + lm)
        out[precision] = {"r2_mean": round(float(r2.mean()), 4), "fit_s": round(fit_s, 1)}
        print("accuracy", precision, out[precision], file=sys.stderr, flush=True)
        keras.config.set_dtype_policy("float32")
    for res in out.values():
        res["difference_to_float32"] = round(res["r2_mean"] - out["float32"]["r2_mean"], 4)
        res["within_tolerance"] = abs(res["difference_to_float32"]) <= ACC_TOLERANCE
    return {
        "model": "TR",
        "label": "relative",
        "train_samples": args.acc_samples,
        "epochs": ACC_EPOCHS,
        "test_samples": 5000,
        "tolerance": ACC_TOLERANCE,
        "results": out,
    }


def input_cost(args) -> dict:
    import keras

    from bionn.backend.tensorflow import make_dataset
    from bionn.clock import EpochClock
    from bionn.data.dataset import KineticsDataset
    from bionn.data.pipeline import batch_source
    from bionn.data.stats import load_or_compute_statistics
    from bionn.nn.model import build_model, compile_model

    cfg = compose(["model=E", "dataset=dbig"])
    ds = KineticsDataset(cfg.dataset)
    with tempfile.TemporaryDirectory() as cache:
        stats = load_or_compute_statistics(ds, 4096, cache, progress=False)
    streamed = make_dataset(batch_source(ds, "train", stats, EpochClock())).take(args.input_steps)
    in_memory = streamed.cache()
    for _ in in_memory:  # fill the cache: the very batches the streamed run trains on
        pass
    keras.backend.clear_session()
    model = build_model(cfg.model, ds.feature_shape, ds.n_labels)
    compile_model(model, cfg.training.compile)
    model.fit(in_memory.take(10), verbose=0)  # trace and warm up
    seconds = {"streamed": 0.0, "in_memory": 0.0}
    for _ in range(2):
        for name, data in (("streamed", streamed), ("in_memory", in_memory)):
            start = time.perf_counter()
            model.fit(data, epochs=1, verbose=0, shuffle=False)
            seconds[name] += time.perf_counter() - start
    samples = 2 * args.input_steps * ds.batch_size
    return {
        "model": "E",
        "samples_per_s_streamed": round(samples / seconds["streamed"], 1),
        "samples_per_s_in_memory": round(samples / seconds["in_memory"], 1),
        "input_bound_ratio": round(seconds["streamed"] / seconds["in_memory"], 3),
        "steps": args.input_steps,
    }


def main() -> None:
    from bionn.machine import cpu_model

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=3, help="timed fits per model and option")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the samples per timed fit")
    parser.add_argument("--acc-samples", type=int, default=ACC_TRAIN_SAMPLES)
    parser.add_argument("--input-steps", type=int, default=150, help="0 skips the input-cost part")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    started, load_start = time.time(), os.getloadavg()
    result = {"options": speed_options(args)}
    if not args.skip_accuracy:
        result["accuracy"] = accuracy(args)
    if args.input_steps:
        result["input"] = input_cost(args)
    result.update(
        {
            "wall_time_s": round(time.time() - started, 1),
            "load_average_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
