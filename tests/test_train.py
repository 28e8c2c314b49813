"""Real trainings through train.py: every seed model, 2 replicas, resume after a kill, NaN, failure."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, committed_epoch

pytestmark = pytest.mark.slow


def train(*overrides: str, cache: Path, check: bool = True, **popen) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", *overrides, f"runtime.stats_cache_dir={cache}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, **popen)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "final_results.json").read_text())


def weights(run_dir: Path) -> list[np.ndarray]:
    import keras

    import bionn.nn.metrics  # noqa: F401  (registers R_squared for loading)

    return keras.models.load_model(run_dir / "model.keras").get_weights()


def test_every_seed_experiment_trains_and_leaves_a_complete_run_folder(tmp_path):
    sweep = tmp_path / "sweep"
    train("-m", "experiment=A,E,P,P2", "debug=quick", f"hydra.sweep.dir={sweep}", cache=tmp_path / "cache")
    for job, name in enumerate(["A", "E", "P", "P2"]):
        run = sweep / str(job)
        final = results(run)
        assert final["status"] == "completed" and final["epochs_completed"] == 1
        assert final["training_time_s"] > 0
        for split in ("train", "validation", "test"):
            metrics = final["evaluation"][split]
            assert {"loss", "r_squared", "mean_squared_error", "root_mean_squared_error"} <= set(metrics)
            metrics = dict(metrics)
            per_output = metrics.pop("r2_per_output")
            assert len(per_output) == 12 and metrics["r2_mean"] == pytest.approx(
                np.mean(per_output), abs=1e-6
            )
            assert all(isinstance(v, float) for v in metrics.values())
        info = json.loads((run / "info.json").read_text())
        assert info["config"]["model"]["name"] == name and info["config"]["dataset"]["name"] == "dbig"
        assert info["parameters"] > 0 and info["replicas"] == 1 and info["versions"]["tensorflow"]
        assert info["data"]["statistics"]["count"] == 256
        assert (run / ".hydra" / "config.yaml").is_file() and (run / "model.keras").is_file()
        assert (run / "results_epoch_1.json").is_file() and (
            run / "checkpoints" / "model_epoch_1.keras"
        ).is_file()
        assert {p.name for p in (run / "plots").iterdir()} >= {"loss.png", "r_squared.png"}
        assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
        with open(run / "history.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 1 and {"loss", "val_loss", "r_squared", "r2_mean", "val_r2_mean"} <= set(rows[0])
        periodic = json.loads((run / "results_epoch_1.json").read_text())["evaluation"]["test"]
        assert periodic["r2_per_output"] == pytest.approx(final["evaluation"]["test"]["r2_per_output"])
    assert not list(sweep.rglob("*.tmp*"))


def test_two_replica_mirrored_strategy_on_cpu(tmp_path):
    run = tmp_path / "run"
    train(
        "model=P", "debug=quick", "runtime.cpu_replicas=2", f"hydra.run.dir={run}", cache=tmp_path / "cache"
    )
    info = json.loads((run / "info.json").read_text())
    assert info["replicas"] == 2 and sum("CPU" in d for d in info["devices"]) >= 2
    final = results(run)
    assert final["status"] == "completed"
    test = final["evaluation"]["test"]  # the per-output sums are summed over both replicas
    assert test["r2_mean"] == pytest.approx(np.mean(test["r2_per_output"]), abs=1e-6)


def test_killed_run_resumes_at_the_next_epoch_and_ends_bit_equal(tmp_path):
    args = [
        "model=E",
        "debug=quick",
        "training.epochs=4",
        "training.save_interval=0",
        "training.early_stopping_patience=0",
        "training.verbose=2",
    ]
    cache = tmp_path / "cache"
    straight = tmp_path / "straight"
    train(*args, f"hydra.run.dir={straight}", cache=cache)

    resumed = tmp_path / "resumed"
    cmd = [sys.executable, "train.py", f"runtime.stats_cache_dir={cache}", *args, f"hydra.run.dir={resumed}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = resumed / "history.csv"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if committed_epoch(resumed) == 2:  # right after epoch 2's commit, the moment a torn backup once lost
            os.kill(proc.pid, signal.SIGKILL)  # epoch 2's history row
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed in epoch 3"
    assert not (resumed / "final_results.json").exists()

    again = train(*args, f"hydra.run.dir={resumed}", cache=cache)
    assert "Epoch 3/4" in again.stdout and "Epoch 1/4" not in again.stdout and "Epoch 2/4" not in again.stdout
    final = results(resumed)
    assert final["status"] == "completed" and final["epochs_completed"] == 4
    with open(history) as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [0, 1, 2, 3]
    for a, b in zip(weights(straight), weights(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert results(straight)["evaluation"] == final["evaluation"]
    assert not (resumed / "backup").exists()  # a finished run keeps no resume point

    finished = train(*args, f"hydra.run.dir={resumed}", cache=cache)  # a finished run is not redone
    assert "already finished" in finished.stdout


def test_diverging_run_is_recorded_as_nan(tmp_path):
    run = tmp_path / "run"
    train(
        "model=P",
        "debug=quick",
        "training.epochs=3",
        "training.compile.optimizer=sgd",
        "training.compile.learning_rate=1e12",
        "training.compile.clipvalue=null",
        f"hydra.run.dir={run}",
        cache=tmp_path / "cache",
    )
    final = results(run)
    assert final["status"] == "nan" and final["epochs_completed"] == 1
    assert final["evaluation"]["validation"]["loss"] is None  # NaN is written as null


def test_failing_run_writes_error_json_and_exits_nonzero(tmp_path):
    run = tmp_path / "run"
    done = train(
        "model=P",
        "debug=quick",
        "model.layers.6.units=10",
        f"hydra.run.dir={run}",
        cache=tmp_path / "cache",
        check=False,
    )
    assert done.returncode != 0
    error = json.loads((run / "error.json").read_text())
    assert "last layer gives 10 outputs" in error["message"] and "Traceback" in error["traceback"]
    assert results(run)["status"] == "failed"
    assert (run / ".hydra" / "config.yaml").is_file()  # what was written before the failure stays
