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
4. `backends`: per Keras backend (tensorflow, jax), each in its own processes:
   - `end_to_end`: `train.py experiment=TR runtime.backend=<b>` with its on-the-fly data
     (16 epochs of 50,000 fresh samples: 800k samples, batch 512; `--backend-epochs` for a
     quick check) in a temporary run folder; `samples_per_s` is final_results.json's
     `train_samples_per_s` (training samples over the fit's seconds, validation included)
     and `r2_mean` its test r2_mean; jax runs twice, with its own empty cache of compiled
     programs (`end_to_end`, the first run on a machine) and again with the cache the first run
     filled (`end_to_end_warm`: a requeue, a resume, a sweep's later jobs; the same programs, so
     the same r2_mean, `jax_warm_r2_mean_equal`);
   - the ceilings of the same model, loss and optimizer: `in_memory_samples_per_s` from
     NumPy batches already in memory (`model.fit`), `resident_samples_per_s` from batches
     resident on the device (JAX: one jitted `lax.scan` over `device_put` batches with
     Keras' stateless step; TensorFlow: `model.fit` of a cached `tf.data.Dataset` with
     `steps_per_execution` = the batches, one `tf.while_loop`);
   - `jax_to_tensorflow_end_to_end` (and `_warm`), `r2_mean_difference` and the issue's targets
     as `meets_speed_target` (>= 2x; `meets_speed_target_warm`) and `meets_r2_target` (<= 0.01);
     nothing fails on them.
   A backend whose run fails reports its `error` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"A": 64, "E": 64, "P": 64, "P2": 64, "TR": 512}
# Samples per timed fit: the seed CNNs run at tens to thousands of samples/s on 2 cores.
SAMPLES = {"A": 1_280, "E": 1_280, "P": 2_560, "P2": 256, "TR": 10_240}
ACC_TRAIN_SAMPLES = 40_000
ACC_EPOCHS = 5
ACC_TOLERANCE = 0.01
BACKENDS = ("tensorflow", "jax")
SPEED_TARGET, R2_TARGET = 2.0, 0.01  # issue 31: jax >= 2x tensorflow end to end, r2_mean within 0.01


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


def standardised(ds, n: int):
    """The first n samples of ds, features (n, *feature_shape) and labels standardised, float32."""
    import numpy as np

    samples = ds.generate(np.arange(n), concentrations=False)
    x = (samples.features - samples.features.mean(0)) / (samples.features.std(0) + 1e-7)
    y = (samples.labels - samples.labels.mean(0)) / samples.labels.std(0)
    return x.reshape(n, *ds.feature_shape).astype("float32"), y.astype("float32")


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
        x, y = standardised(ds, n)
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
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


def bare_model(cfg, ds, steps: int, steps_per_execution: int = 1):
    """TR's model, loss and optimizer (learning-rate schedule included) compiled without metrics: the
    ceilings time the training step alone."""
    import keras
    from omegaconf import OmegaConf

    from bionn.nn.model import build_model, check_compile
    from bionn.nn.optim import apply_precision, learning_rate

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    apply_precision(cfg.training)
    model = build_model(cfg.model, ds.feature_shape, ds.n_labels)
    rate, _ = learning_rate(cfg.training, steps)
    compile_cfg = OmegaConf.merge(cfg.training.compile, {"metrics": []})
    optimizer, loss, _ = check_compile(compile_cfg, rate)
    model.compile(optimizer=optimizer, loss=loss, steps_per_execution=steps_per_execution)
    return model


def timed(run, rounds: int) -> float:
    """The median seconds of `rounds` calls of run() after one untimed call (tracing, warm-up)."""
    run()
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def resident_scan(model, x, y, batch: int):
    """JAX: a function that trains one pass over (x, y) put on the device once, as one jitted
    `lax.scan` of Keras' stateless training step (STACK_NOTES' custom-loop pattern)."""
    import jax
    import keras

    loss_fn = model.loss
    model.optimizer.build(model.trainable_variables)
    xs = jax.device_put(x.reshape(-1, batch, *x.shape[1:]))
    ys = jax.device_put(y.reshape(-1, batch, *y.shape[1:]))

    def loss_of(trainable, non_trainable, xb, yb):
        predicted, non_trainable = model.stateless_call(trainable, non_trainable, xb, training=True)
        return keras.ops.mean(loss_fn(yb, predicted)), non_trainable

    gradient = jax.value_and_grad(loss_of, has_aux=True)

    def step(state, data):
        trainable, non_trainable, optimizer_vars = state
        (loss, non_trainable), grads = gradient(trainable, non_trainable, *data)
        trainable, optimizer_vars = model.optimizer.stateless_apply(optimizer_vars, grads, trainable)
        return (trainable, non_trainable, optimizer_vars), loss

    scan = jax.jit(lambda state: jax.lax.scan(step, state, (xs, ys)))
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
    )

    def run():
        nonlocal state
        state, losses = scan(state)
        losses.block_until_ready()

    return run


def ceilings(args) -> dict:
    """In this process, on Keras' backend: TR's training samples/s from NumPy batches in memory and
    from batches resident on the device (the same model, loss, optimizer and batches)."""
    import keras

    from bionn.data.dataset import KineticsDataset

    backend = keras.backend.backend()
    cfg = compose(["experiment=TR", *args.ceiling_overrides])
    batch = int(cfg.dataset.shape.batch_size)
    ds = KineticsDataset(cfg.dataset)
    n = args.ceiling_batches * batch
    x, y = standardised(ds, n)
    model = bare_model(cfg, ds, args.ceiling_batches)
    in_memory = timed(
        lambda: model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0), args.rounds
    )
    if backend == "jax":
        resident = timed(resident_scan(bare_model(cfg, ds, args.ceiling_batches), x, y, batch), args.rounds)
    else:
        import tensorflow as tf

        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
        whole = bare_model(cfg, ds, args.ceiling_batches, steps_per_execution=args.ceiling_batches)
        resident = timed(lambda: whole.fit(data, epochs=1, shuffle=False, verbose=0), args.rounds)
    return {
        "backend": backend,
        "batch_size": batch,
        "precision": str(cfg.training.precision),
        "ceiling_samples": n,
        "in_memory_samples_per_s": round(n / in_memory, 1),
        "resident_samples_per_s": round(n / resident, 1),
        "devices": [str(d) for d in keras.distribution.list_devices()],
        "versions": {"keras": keras.__version__, backend: version(backend)},
    }


def run_json(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[dict | None, str]:
    """The last stdout line of `command` as JSON (None if it failed) and its output's tail."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    tail = (done.stdout + done.stderr)[-1500:]
    if done.returncode != 0:
        return None, tail
    return json.loads(done.stdout.strip().splitlines()[-1]), tail


def end_to_end(backend: str, args, backend_key: bool, compiled: Path | None = None) -> dict:
    """`train.py experiment=TR runtime.backend=<backend>` in a temporary run folder: its training
    samples/s (final_results.json) and test r2_mean; `error` when it fails. `compiled`: the folder of
    JAX's compiled programs (bionn.backend.select), so that the bench chooses whether it is empty."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    if compiled is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(compiled)
    overrides = ["experiment=TR", *([f"runtime.backend={backend}"] if backend_key else [])]
    if args.backend_epochs:
        overrides.append(f"training.epochs={args.backend_epochs}")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [sys.executable, "train.py", *overrides, *args.train_overrides, f"hydra.run.dir={run_dir}"]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        final_path = run_dir / "final_results.json"
        if done.returncode != 0 or not final_path.exists():
            return {"error": (done.stdout + done.stderr)[-1500:], "command": " ".join(command[1:])}
        final = json.loads(final_path.read_text())
    return {
        "samples_per_s": final["train_samples_per_s"],
        "train_samples": final["train_samples"],
        "fit_s": final["training_time_s"],
        "epochs": final["epochs_completed"],
        "r2_mean": round(final["evaluation"]["test"]["r2_mean"], 4),
        "command_s": round(wall, 1),
        "command": " ".join(command[1:]),
    }


def per_backend(args) -> dict:
    """Part 4: each backend's end-to-end run and ceilings, each in its own processes, then the ratio."""
    # Until runtime.backend exists, KERAS_BACKEND alone picks the backend.
    shipped = compose(["experiment=TR"])
    backend_key = "backend" in shipped.runtime
    out: dict = {}
    for backend in args.backends:
        env = {**os.environ, "KERAS_BACKEND": backend}
        worker = [sys.executable, __file__, "--ceilings", "--rounds", str(args.rounds)]
        worker += [
            "--ceiling-batches",
            str(args.ceiling_batches),
            "--ceiling-overrides",
            *args.ceiling_overrides,
        ]
        found, tail = run_json(worker, env)
        if backend == "jax":  # twice: with JAX's cache of compiled programs empty, then filled by the first
            with tempfile.TemporaryDirectory() as compiled:
                runs = {
                    "end_to_end": end_to_end(backend, args, backend_key, Path(compiled)),
                    "end_to_end_warm": end_to_end(backend, args, backend_key, Path(compiled)),
                }
        else:
            runs = {"end_to_end": end_to_end(backend, args, backend_key)}
        out[backend] = {**runs, **(found or {"error": tail})}
        print(backend, out[backend], file=sys.stderr, flush=True)
    speeds = {b: out.get(b, {}).get("end_to_end", {}).get("samples_per_s") for b in BACKENDS}
    warm = out.get("jax", {}).get("end_to_end_warm", {})
    r2 = {b: out.get(b, {}).get("end_to_end", {}).get("r2_mean") for b in BACKENDS}
    ratio = round(speeds["jax"] / speeds["tensorflow"], 3) if all(speeds.values()) else None
    ratio_warm = (
        round(warm["samples_per_s"] / speeds["tensorflow"], 3)
        if speeds["tensorflow"] and "samples_per_s" in warm
        else None
    )
    difference = round(abs(r2["jax"] - r2["tensorflow"]), 4) if None not in r2.values() else None
    out.update(
        {
            "model": "TR",
            "epochs": args.backend_epochs or int(shipped.training.epochs),
            "train_overrides": args.train_overrides,
            "jax_to_tensorflow_end_to_end": ratio,
            "jax_to_tensorflow_end_to_end_warm": ratio_warm,
            "jax_warm_r2_mean_equal": warm.get("r2_mean") is not None and warm.get("r2_mean") == r2["jax"],
            "r2_mean_difference": difference,
            "meets_speed_target": ratio is not None and ratio >= SPEED_TARGET,
            "meets_speed_target_warm": ratio_warm is not None and ratio_warm >= SPEED_TARGET,
            "meets_r2_target": difference is not None and difference <= R2_TARGET,
        }
    )
    return out


def main() -> None:
    from bionn.machine import cpu_model

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--models", default=",".join(MODELS), help="part 1's models; empty skips it")
    parser.add_argument("--rounds", type=int, default=3, help="timed fits per model and option (and ceiling)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the samples per timed fit")
    parser.add_argument("--acc-samples", type=int, default=ACC_TRAIN_SAMPLES)
    parser.add_argument("--input-steps", type=int, default=150, help="0 skips the input-cost part")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="part 4's backends (comma-separated); empty skips it"
    )
    parser.add_argument("--backend-epochs", type=int, default=0, help="end-to-end epochs (0: TR's 16)")
    parser.add_argument(
        "--train-overrides", nargs="*", default=[], help="more train.py overrides for the end-to-end runs"
    )
    parser.add_argument("--ceiling-batches", type=int, default=98, help="batches per timed ceiling pass")
    parser.add_argument(
        "--ceiling-overrides",
        nargs="*",
        default=[],
        help="overrides of TR for the ceilings (batch, precision)",
    )
    parser.add_argument("--ceilings", action="store_true", help="only the ceilings, on $KERAS_BACKEND")
    args = parser.parse_args()
    if args.ceilings:  # a worker of part 4: one Keras backend per process
        print(json.dumps(ceilings(args)))
        return
    args.backends = [b for b in args.backends.split(",") if b]

    started, load_start = time.time(), os.getloadavg()
    result = {}
    if args.models:
        result["options"] = speed_options(args)
    if not args.skip_accuracy:
        result["accuracy"] = accuracy(args)
    if args.input_steps:
        result["input"] = input_cost(args)
    if args.backends:
        result["backends"] = per_backend(args)
    result.update(
        {
            "wall_time_s": round(time.time() - started, 1),
            "load_average_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
            "tensorflow": installed("tensorflow"),
            "keras": installed("keras"),
            "jax": installed("jax"),
            "machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        }
    )
    print(json.dumps(result))


def installed(package: str) -> str | None:
    """The package's installed version, None without it."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
