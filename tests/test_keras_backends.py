"""bionn's Keras parts on both Keras backends (issue 31): the R-squared metrics agree with the float64
sums on TensorFlow and JAX, every shipped model trains, saves and reloads under JAX, and a model saved
on one backend predicts the same on the other.

This process runs Keras on TensorFlow; the JAX side runs in a subprocess (`KERAS_BACKEND=jax`) that
imports this module and calls one of its functions, which prints JSON. The same function runs here, so
both backends do exactly the same thing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# Realistic labels for the R-squared metrics: means 3 to 8 times their spread (float32 sums of y and y^2
# would lose SS_tot to cancellation), predictions that explain some 60 to 97 percent of the variance.
N_SAMPLES, N_OUTPUTS, UPDATE_BATCH, EVALUATE_BATCH = 20_000, 12, 64, 512


def on_jax(function: str, *args: str) -> dict:
    """function(*args) of this module in a fresh process on Keras' JAX backend; its printed JSON."""
    code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_keras_backends as t; t.{function}"
    code += "(*sys.argv[1:])"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def labels_and_predictions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(31)
    spread = rng.uniform(0.5, 2.0, N_OUTPUTS)
    y = rng.normal(size=(N_SAMPLES, N_OUTPUTS)) * spread + rng.uniform(3, 8, N_OUTPUTS) * spread
    p = y + rng.normal(size=y.shape) * spread * rng.uniform(0.17, 0.63, N_OUTPUTS)
    return y.astype(np.float32), p.astype(np.float32)


def r_squared_here() -> dict:
    """The R-squared metrics of labels_and_predictions on this process's backend: fed batch by batch
    (update_state, result, per_output) and through a compiled model's evaluate (its jitted step)."""
    import keras

    from bionn.nn.metrics import PerOutputRSquared, PooledRSquared

    y, p = labels_and_predictions()
    pooled, per_output = PooledRSquared(), PerOutputRSquared(N_OUTPUTS)
    for lo in range(0, N_SAMPLES, UPDATE_BATCH):
        for metric in (pooled, per_output):
            metric.update_state(y[lo : lo + UPDATE_BATCH], p[lo : lo + UPDATE_BATCH])
    model = keras.Sequential([keras.Input((N_OUTPUTS,)), keras.layers.Identity()])  # predicts its input
    compiled = PerOutputRSquared(N_OUTPUTS)
    model.compile(loss="mse", metrics=[PooledRSquared(), compiled])
    logs = model.evaluate(p, y, batch_size=EVALUATE_BATCH, verbose=0, return_dict=True)
    result = {
        "backend": keras.backend.backend(),
        "updated": {
            "r_squared": float(pooled.result()),
            "r2_mean": float(per_output.result()),
            "r2_per_output": per_output.per_output().tolist(),
        },
        "evaluated": {
            "r_squared": logs["r_squared"],
            "r2_mean": logs["r2_mean"],
            "r2_per_output": compiled.per_output().tolist(),
        },
    }
    print(json.dumps(result))
    return result


def test_r_squared_metrics_agree_with_float64_sums_on_both_backends():
    from bionn.rsquared import RSquaredSums

    y, p = labels_and_predictions()
    sums = RSquaredSums(N_OUTPUTS)
    for lo in range(0, N_SAMPLES, UPDATE_BATCH):
        sums.update(y[lo : lo + UPDATE_BATCH], p[lo : lo + UPDATE_BATCH])
    expected = sums.summary()
    assert 0.6 < min(expected["r2_per_output"]) and max(expected["r2_per_output"]) < 0.98
    tensorflow, jax = r_squared_here(), on_jax("r_squared_here")
    assert (tensorflow["backend"], jax["backend"]) == ("tensorflow", "jax")
    for got in (tensorflow["updated"], tensorflow["evaluated"], jax["updated"], jax["evaluated"]):
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-5, err_msg=key)
    for way in ("updated", "evaluated"):  # the bar between the backends
        for key in expected:
            np.testing.assert_allclose(tensorflow[way][key], jax[way][key], rtol=0, atol=1e-4, err_msg=key)


# Every shipped model (conf/model/*.yaml), small, each with another learning-rate schedule; TR and TRX
# (its log-time pooling and convolutional front) narrowed so that they compile fast.
SMOKE_SHAPE = (64, 3, 1)
SMOKE = {
    "A": ["training.schedule.name=constant"],
    "E": ["training.schedule.warmup_epochs=1"],
    "P": ["training.schedule.name=exponential"],
    "P2": ["training.schedule.name=cosine", "training.schedule.warmup_epochs=0.5"],
    "TR": ["training.schedule.name=plateau", "model.vars.width=16", "model.vars.blocks=1"],
    "TRX": [
        "training.schedule.name=cosine",
        "model.vars.width=16",
        "model.vars.blocks=1",
        "model.vars.front=conv",
        "model.vars.pooling=log",
        "model.vars.bins=16",
    ],
}


def train_every_model_here(out: str) -> dict:
    """Each SMOKE model built, compiled (bionn.nn.optim.compile_for_training), fitted for two epochs of
    three steps with the callbacks of a run in a folder under `out`, evaluated, saved and reloaded."""
    import keras

    from bionn.config.compose import compose_run
    from bionn.nn.callbacks import HistoryCSV, PeriodicResults, ProgressLog, RunBackup, save_model
    from bionn.nn.inference import BestWeights
    from bionn.nn.model import build_model
    from bionn.nn.optim import apply_precision, compile_for_training
    from bionn.run_folder import RunFolder

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, *SMOKE_SHAPE)).astype(np.float32)
    y = (rng.normal(size=(96, 12)) * 0.5 + 3).astype(np.float32)
    scaling = (y.mean(axis=0), y.std(axis=0))
    results = {}
    for name, overrides in SMOKE.items():
        cfg = compose_run(f"model={name}", "training.epochs=2", *overrides, conf=ROOT / "conf")
        apply_precision(cfg.training)
        model = build_model(cfg.model, SMOKE_SHAPE, 12, scaling, source=f"conf/model/{name}.yaml")
        r2, callbacks = compile_for_training(model, cfg.training, steps_per_epoch=3, label_scaling=scaling)
        folder = RunFolder(Path(out) / name)
        folder.path.mkdir(parents=True)
        callbacks += [
            HistoryCSV(folder),
            ProgressLog(),
            PeriodicResults(1, folder, lambda m: m.evaluate(x, y, verbose=0, return_dict=True)),
            BestWeights(folder.best),
            RunBackup(folder.backup),
        ]
        model.fit(x, y, batch_size=32, epochs=2, validation_data=(x, y), callbacks=callbacks, verbose=0)
        logs = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
        save_model(model, folder / "model.keras")
        again = keras.saving.load_model(folder / "model.keras")
        results[name] = {"learning_rate_zero_change": plateau_zero_change(model, callbacks, x, y)}
        results[name] |= {
            "logs": logs,
            "r2_per_output": r2.per_output().tolist(),
            "reloaded": again.evaluate(x, y, batch_size=32, verbose=0, return_dict=True),
            "prediction_change": float(
                np.abs(again.predict(x, verbose=0) - model.predict(x, verbose=0)).max()
            ),
        }
    print(json.dumps({"backend": keras.backend.backend(), "models": results}))
    return results


def plateau_zero_change(model, callbacks: list, x: np.ndarray, y: np.ndarray) -> float | None:
    """With a plateau schedule: how much one more epoch moves the weights after the plateau callback set
    the learning rate to zero (a compiled step must see the new rate); None without one."""
    from bionn.nn.optim import PlateauCallback

    plateau = [c for c in callbacks if isinstance(c, PlateauCallback)]
    if not plateau:
        return None
    plateau[0].rate.plateau_scale.assign(0.0)
    before = model.get_weights()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    return float(max(np.abs(a - b).max() for a, b in zip(model.get_weights(), before, strict=True)))


@pytest.mark.slow
def test_every_shipped_model_trains_saves_and_reloads_under_jax(tmp_path):
    from bionn.run_folder import RunFolder

    got = on_jax("train_every_model_here", str(tmp_path))
    assert got["backend"] == "jax" and set(got["models"]) == {
        p.stem for p in (ROOT / "conf/model").glob("*.yaml")
    }
    for name, result in got["models"].items():
        logs = result["logs"]
        assert all(np.isfinite(v) for v in logs.values()), name
        assert logs["r2_mean"] == pytest.approx(np.mean(result["r2_per_output"]), abs=1e-6)
        assert result["reloaded"] == pytest.approx(logs, rel=1e-6) and result["prediction_change"] == 0
        assert result["learning_rate_zero_change"] == (0.0 if name == "TR" else None)
        folder = RunFolder(tmp_path / name)
        assert [row["epoch"] for row in folder.history_rows()] == [0, 1]
        assert folder.backup.state()["epoch"] == 2 and folder.best.state()["epoch"] in (1, 2)
        assert (tmp_path / name / "checkpoints" / "model_epoch_2.keras").is_file()


# The model that crosses backends: TRX with a convolutional front, log-time pooling and a Residual block,
# ending in Destandardise; it learns a few steps from real samples of the data engine.
CROSSING = [
    "model=TRX",
    "model.vars.width=16",
    "model.vars.blocks=1",
    "model.vars.front=conv",
    "model.vars.pooling=log",
    "model.vars.bins=16",
    "training.schedule.name=cosine",
    "training.schedule.warmup_epochs=0.5",
]


def write_samples(data: Path) -> None:
    """Raw test-split samples of a small dataset (samples.npz) and the statistics of its training split."""
    from bionn.config.compose import compose_run
    from bionn.data.dataset import KineticsDataset
    from bionn.data.stats import compute_statistics, save_statistics

    cfg = compose_run("debug=quick", "dataset.simulation.n_times=64", conf=ROOT / "conf")
    ds = KineticsDataset(cfg.dataset)
    samples = ds.generate(np.arange(*ds.splits["test"])[:96], concentrations=False)
    data.mkdir(parents=True)
    np.savez(data / "samples.npz", features=samples.features, labels=samples.labels)
    save_statistics(data / "statistics.npz", compute_statistics(ds, 256, progress=False))


def train_and_save_here(run: str, data: str) -> None:
    """CROSSING trained two epochs of three steps on this backend and saved as a run folder holds it:
    model.keras, statistics.npz, best/ and the inference models (bionn.trained.save_inference_models)."""
    from bionn.config.compose import compose_run
    from bionn.data.stats import STD_EPSILON, read_statistics, save_statistics
    from bionn.engine_version import ENGINE_VERSION
    from bionn.nn.callbacks import save_model
    from bionn.nn.inference import BestWeights
    from bionn.nn.model import build_model
    from bionn.nn.optim import compile_for_training
    from bionn.run_folder import INFO, STATISTICS, RunFolder
    from bionn.trained import save_inference_models

    stats = read_statistics(Path(data) / "statistics.npz")
    with np.load(Path(data) / "samples.npz") as samples:
        raw, labels = samples["features"], samples["labels"]
    x = ((raw - stats.feature_mean) / (stats.feature_std + STD_EPSILON)).astype(np.float32)[..., None]
    cfg = compose_run(*CROSSING, conf=ROOT / "conf")
    scaling = (stats.label_mean, stats.label_std + STD_EPSILON)
    model = build_model(cfg.model, x.shape[1:], labels.shape[1], scaling, source="conf/model/TRX.yaml")
    compile_for_training(model, cfg.training, steps_per_epoch=3, label_scaling=scaling)
    folder = RunFolder(Path(run))
    folder.path.mkdir(parents=True)
    best = BestWeights(folder.best)  # inference_best.keras: the best epoch's weights in a clone
    model.fit(x, labels, batch_size=32, epochs=2, validation_data=(x, labels), callbacks=[best], verbose=0)
    save_statistics(folder / STATISTICS, stats)
    folder.write_json(INFO, {"provenance": {"engine_version": ENGINE_VERSION}})
    save_model(model, folder / "model.keras")
    save_inference_models(folder, model)


def predictions_here(run: str, data: str) -> dict[str, np.ndarray]:
    """The predictions of a run folder's models on the samples: its inference models loaded as bionn-predict
    loads them (raw float64 features), its model.keras (standardised features)."""
    import keras

    from bionn.data.stats import STD_EPSILON, read_statistics
    from bionn.trained import load_model

    stats = read_statistics(Path(run) / "statistics.npz")
    with np.load(Path(data) / "samples.npz") as samples:
        raw = samples["features"]
    x = ((raw - stats.feature_mean) / (stats.feature_std + STD_EPSILON)).astype(np.float32)[..., None]
    got = {which: load_model(run, which).predict(raw[..., None], verbose=0) for which in ("best", "last")}
    got["model"] = keras.saving.load_model(Path(run) / "model.keras").predict(x, verbose=0)
    return got


def jax_side(tensorflow_run: str, jax_run: str, data: str) -> None:
    """On JAX: train and save jax_run, then predict with both runs' models (predicted_jax.npz in each)."""
    import keras

    train_and_save_here(jax_run, data)
    for run in (tensorflow_run, jax_run):
        np.savez(Path(run) / "predicted_jax.npz", **predictions_here(run, data))
    print(json.dumps({"backend": keras.backend.backend()}))


@pytest.mark.slow
def test_a_model_saved_on_one_backend_predicts_the_same_on_the_other(tmp_path):
    data, tensorflow_run, jax_run = tmp_path / "data", tmp_path / "tensorflow", tmp_path / "jax"
    write_samples(data)
    train_and_save_here(str(tensorflow_run), str(data))
    assert on_jax("jax_side", str(tensorflow_run), str(jax_run), str(data)) == {"backend": "jax"}
    for run in (tensorflow_run, jax_run):
        here = predictions_here(str(run), str(data))
        with np.load(run / "predicted_jax.npz") as there:
            assert set(there.files) == set(here) == {"best", "last", "model"}
            for name, predicted in here.items():
                assert np.all(np.isfinite(predicted)) and predicted.std(axis=0).min() > 0
                np.testing.assert_allclose(
                    there[name], predicted, rtol=1e-5, atol=1e-5, err_msg=f"{run} {name}"
                )
