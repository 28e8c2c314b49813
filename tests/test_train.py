"""Real trainings through train.py: every seed model, 2 replicas, resume after a kill, NaN, failure."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, composed, training_in_attempt

from bionn.run_folder import RunFolder, Status

pytestmark = pytest.mark.slow


def train(*overrides: str, cache: Path, check: bool = True, **popen) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", *overrides, f"runtime.stats_cache_dir={cache}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, **popen)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "final_results.json").read_text())


def model(run_dir: Path, name: str = "model.keras"):
    import keras

    import bionn.nn  # noqa: F401  (registers bionn's metrics and layers for loading)

    return keras.models.load_model(run_dir / name)


def weights(run_dir: Path, name: str = "model.keras") -> list[np.ndarray]:
    return model(run_dir, name).get_weights()


def test_every_seed_experiment_trains_and_leaves_a_complete_run_folder(tmp_path):
    sweep = tmp_path / "sweep"
    # debug=quick on 400 samples instead of its 640: P2 trains at ~10 samples/s here (most of the test's
    # time). The training split (320) stays above debug=quick's use_stats_of (256), so the statistics'
    # count below is still use_stats_of's, not the split's cap.
    quick = ["debug=quick", "dataset.shape.n_samples=400"]
    train("-m", "experiment=A,E,P,P2", *quick, f"hydra.sweep.dir={sweep}", cache=tmp_path / "cache")
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
        assert (
            info["parameters"] > 0 and info["replicas"] == 1 and info["provenance"]["libraries"]["tensorflow"]
        )
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
    assert final["status"] == "completed" and (run / "inference_best.keras").is_file()
    test = final["evaluation"]["test"]
    assert test["r2_mean"] == pytest.approx(np.mean(test["r2_per_output"]), abs=1e-6)
    # The per-output sums are summed over both replicas: the saved model, evaluated on the whole test split
    # in this one process, gives the same R-squared (one replica's half of the split would not).
    from bionn.backend.tensorflow import make_dataset
    from bionn.data.dataset import KineticsDataset
    from bionn.data.pipeline import batch_source
    from bionn.data.stats import load_or_compute_statistics
    from bionn.rsquared import r2_per_output

    cfg = composed("model=P", "debug=quick")
    ds = KineticsDataset(cfg.dataset)
    stats = load_or_compute_statistics(ds, cfg.training.use_stats_of, tmp_path / "cache", progress=False)
    batches = list(make_dataset(batch_source(ds, "test", stats)).as_numpy_iterator())
    features, labels = (np.concatenate(part) for part in zip(*batches, strict=True))
    predicted = model(run).predict(features, verbose=0)
    assert len(labels) == ds.split_size("test")
    # float32 sums in another order: R-squared agrees to ~1e-6 of the residual share
    np.testing.assert_allclose(test["r2_per_output"], r2_per_output(labels, predicted), atol=1e-4)


def start(*overrides: str, cache: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "train.py", *overrides, f"runtime.stats_cache_dir={cache}"]

    def sigint_as_at_a_terminal() -> None:  # a suite started in the background inherits an ignored SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    with open(log, "w") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, preexec_fn=sigint_as_at_a_terminal
        )


def interrupt_in_attempt(proc: subprocess.Popen, run: Path, attempt: int, sig: signal.Signals) -> None:
    """Send `sig` once attempt number `attempt` trains (it committed an epoch of its own), wherever in the
    next epoch that lands; the run must not have ended before."""
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not training_in_attempt(run, attempt):
        time.sleep(0.01)
    assert proc.poll() is None, f"attempt {attempt} ended before it could be interrupted"
    os.kill(proc.pid, sig)
    proc.wait(timeout=600)


def test_interrupted_then_killed_run_resumes_as_recorded_attempts_and_ends_bit_equal(tmp_path, mlflow_server):
    args = [
        "model=E",
        "debug=quick",
        # epochs of a few seconds (about 9 s of 896 samples here, loaded): a signal sent within 10 ms of an
        # epoch's commit lands inside the next epoch's training
        "dataset.shape.n_samples=1280",
        # 3 epochs: attempt 1 is interrupted in epoch 2, attempt 2 killed in epoch 3, attempt 3 trains epoch 3
        "training.epochs=3",
        "training.save_interval=0",
        "training.early_stopping_patience=0",
    ]
    cache = tmp_path / "cache"
    straight = tmp_path / "straight"
    train(*args, f"hydra.run.dir={straight}", cache=cache)

    run = tmp_path / "resumed"
    folder = RunFolder(run)
    # Every attempt logs to one MLflow run on a real server (loggers are outside the ledger: the straight
    # run without it is the same config).
    args += ["logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={mlflow_server.uri}"]
    first = start(*args, f"hydra.run.dir={run}", cache=cache, log=tmp_path / "1.log")
    interrupt_in_attempt(first, run, 1, signal.SIGINT)  # Ctrl-C
    assert first.returncode == 128 + signal.SIGINT  # recorded, then ended in one paragraph
    assert folder.status() == Status.INTERRUPTED
    assert not (run / "error.json").exists() and not (run / "final_results.json").exists()
    [interrupted] = folder.attempts()
    assert interrupted["outcome"] == "interrupted" and interrupted["reason"] == "interrupted by SIGINT"
    assert interrupted["end_epoch"] == folder.committed_epoch() >= 1
    console = (tmp_path / "1.log").read_text()
    assert f"interrupted by SIGINT after {interrupted['end_epoch']} committed epoch(s)" in console
    assert "Traceback" not in console and "KeyboardInterrupt" not in console, console[-3000:]
    client = mlflow_server.client()
    run_id = json.loads((run / "mlflow.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "KILLED"  # interrupted: not finished, not failed

    second = start(*args, f"hydra.run.dir={run}", cache=cache, log=tmp_path / "2.log")
    interrupt_in_attempt(second, run, 2, signal.SIGKILL)  # no chance to record anything
    assert second.returncode == -signal.SIGKILL

    again = train(*args, f"hydra.run.dir={run}", cache=cache)
    attempts = folder.attempts()
    assert [a["outcome"] for a in attempts] == ["interrupted", "interrupted", "completed"]
    assert attempts[1]["reason"] == "ended without a record (killed)"
    starts = [a["start_epoch"] for a in attempts]
    assert starts[0] == 0 and starts[1] == interrupted["end_epoch"] and starts[2] > starts[1]
    assert attempts[2]["end_epoch"] == 3
    final = results(run)
    assert final["status"] == "completed" and final["epochs_completed"] == 3
    with open(run / "history.csv") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [0, 1, 2]
    for a, b in zip(weights(straight), weights(run), strict=True):
        np.testing.assert_array_equal(a, b)
    assert results(straight)["evaluation"] == final["evaluation"]
    assert not (run / "backup").exists()  # a finished run keeps no resume point
    # the best validation epoch survives the interruptions: the straight run's epoch, value and weights
    assert folder.best.state() == RunFolder(straight).best.state()
    assert final["best_epoch"] == 1 + int(np.argmin(folder.history()["val_loss"]))
    for a, b in zip(
        weights(straight, "inference_best.keras"), weights(run, "inference_best.keras"), strict=True
    ):
        np.testing.assert_array_equal(a, b)

    # The console: bionn's lines, no TensorFlow C++ chatter, one closing line; Hydra's job log has them too.
    output = again.stdout + again.stderr
    assert f"resuming {run} at epoch {starts[2] + 1}" in output
    assert "{{node" not in output and not re.search(r"^[IWE]\d{4} ", output, re.M), output[-3000:]
    test = final["evaluation"]["test"]
    closing = f"completed after 3 epoch(s): test r2_mean {test['r2_mean']:.4f}, pooled R-squared "
    assert closing + f"{test['r_squared']:.4f}; run folder {run}" in output
    assert (
        closing in (run / "train.log").read_text()
        and "interrupted by SIGINT" in (run / "train.log").read_text()
    )

    finished = train(*args, f"hydra.run.dir={run}", cache=cache)  # a finished run is not redone
    assert "already finished (completed)" in finished.stdout and len(folder.attempts()) == 3

    # One MLflow run for the three attempts: each epoch once (step = epoch), FINISHED, the attempts tagged.
    from bionn.tracking import FOLDER_TAG

    experiment = client.get_experiment_by_name("bionn")
    [tracked] = client.search_runs([experiment.experiment_id], f"tags.`{FOLDER_TAG}` = '{run.resolve()}'")
    assert tracked.info.run_id == run_id
    assert tracked.info.status == "FINISHED" and tracked.data.tags["bionn_attempts"] == "3"
    for key in ("loss", "val_loss"):
        assert sorted(m.step for m in client.get_metric_history(tracked.info.run_id, key)) == [0, 1, 2]
    assert f"to browse: open {mlflow_server.uri}" in output and any((run / "tensorboard").rglob("events.*"))


def test_config_errors_lock_no_folder_a_failed_start_takes_a_corrected_config_and_another_is_refused(
    tmp_path,
):
    cache = tmp_path / "cache"
    run = tmp_path / "run"
    args = ["debug=quick", f"hydra.run.dir={run}"]

    # A typo found while the model is built and compiled, before the statistics and the ledger: one
    # paragraph naming the override, no traceback, no TensorFlow start-up lines although the user set
    # TF_CPP_MIN_LOG_LEVEL; recorded as a failed attempt, with no ledger to lock the folder.
    quiet = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    typo = train("model=E", "training.compile.optimizer=adamm", *args, cache=cache, check=False, env=quiet)
    output = typo.stdout + typo.stderr
    assert typo.returncode == 1, output[-3000:]
    assert (
        "the command-line override training.compile.optimizer=adamm: training.compile.optimizer: " in output
    )
    assert "unknown optimizer 'adamm'; allowed: " in output
    assert "Traceback" not in output and "HYDRA_FULL_ERROR" not in output, output[-3000:]
    assert "oneDNN" not in output and not re.search(r"^[IWE]\d{4} ", output, re.M), output[-3000:]
    assert not (run / "ledger.json").exists() and not cache.exists()  # no statistics computed
    assert json.loads((run / "error.json").read_text())["type"] == "ConfigError"

    # A failure while training starts (its statistics cannot be cached): recorded, with its traceback in
    # error.json, ended in one line; no epoch was committed.
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    failed = train("model=E", "training.epochs=2", *args, cache=blocked / "cache", check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stdout + failed.stderr
    assert [a["error"]["type"] for a in RunFolder(run).attempts()] == ["ConfigError", "NotADirectoryError"]
    error = json.loads((run / "error.json").read_text())
    assert error["type"] == "NotADirectoryError" and "Traceback" in error["traceback"]
    assert results(run)["status"] == "failed" and (run / ".hydra" / "config.yaml").is_file()

    # The corrected config takes the folder (nothing was trained), the failed attempt stays on record.
    # Written under umask 002: every file is group-writable, as a plain open() would make it.
    train("model=E", *args, cache=cache, umask=0o002)
    folder = RunFolder(run)
    assert [a["outcome"] for a in folder.attempts()] == ["failed", "failed", "completed"]
    ledger = json.loads((run / "ledger.json").read_text())
    assert ledger["config"]["training"]["epochs"] == 1
    assert [old["config"]["training"]["epochs"] for old in ledger["superseded"]] == [2]
    written = [p for p in run.rglob("*") if p.is_file() and p.name != "train.log"]  # the log: the first run's
    modes = {str(p.relative_to(run)): p.stat().st_mode & 0o777 for p in written}
    assert set(modes.values()) == {0o664}, modes
    kept = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "train.log"}

    # another cache folder too: a key that cannot change the result never refuses
    refused = train(
        "model=P", "training.compile.learning_rate=0.01", *args, cache=tmp_path / "c2", check=False
    )
    assert refused.returncode == 1
    message = refused.stdout + refused.stderr
    assert 'model.name: "E" (in the folder) -> "P" (this run)' in message
    assert "training.compile.learning_rate: 0.001 (in the folder) -> 0.01 (this run)" in message
    assert "runtime.on_config_change=move_aside" in message and "hydra.run.dir=" in message
    assert "Traceback" not in message and "Error executing job" not in message, message[-3000:]
    assert {p: p.read_bytes() for p in kept} == kept  # nothing written: not even .hydra/
    assert "  runtime.stats_cache_dir:" not in message

    train("model=P", "runtime.on_config_change=move_aside", *args, cache=cache)
    assert results(run)["status"] == "completed"
    assert json.loads((run / "ledger.json").read_text())["config"]["model"]["name"] == "P"
    assert "name: P" in (run / ".hydra" / "config.yaml").read_text()
    aside = run / "previous" / "1"
    assert {aside / p.relative_to(run): b for p, b in kept.items()} == {
        p: p.read_bytes() for p in aside.rglob("*") if p.is_file()
    }


def test_nan_and_early_stopped_runs_count_as_finished_not_trained_again_and_watched_as_ended(tmp_path):
    """Produced by bionn for real, in a sweep of bionn's local launcher: SGD at 1e12 diverges (nan);
    at 1e-30 nothing changes, so early stopping (patience 1) ends the run after epoch 2 (early_stopped).
    The sweep exits 0; the same command again starts no job; the watch sees both ended."""
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        "train.py",
        "-m",
        "hydra/launcher=local",
        "model=P",
        "debug=quick",
        "training.epochs=4",
        "training.early_stopping_patience=1",
        "training.compile.optimizer=sgd",
        "training.compile.learning_rate=1e12,1e-30",
        "training.compile.clipvalue=null",
        f"hydra.sweep.dir={sweep}",
        f"runtime.stats_cache_dir={tmp_path / 'cache'}",
    ]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    nan, early = results(sweep / "0"), results(sweep / "1")
    assert nan["status"] == "nan" and nan["epochs_completed"] == 1
    assert nan["evaluation"]["validation"]["loss"] is None  # NaN is written as null
    assert early["status"] == "early_stopped" and early["epochs_completed"] == 2
    written = {job: (sweep / job / "final_results.json").read_bytes() for job in ("0", "1")}

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    for job in ("0", "1"):  # no new attempt, no new results: neither job ran again
        assert len(RunFolder(sweep / job).attempts()) == 1
        assert (sweep / job / "final_results.json").read_bytes() == written[job]
    watched = subprocess.run(
        [sys.executable, "-m", "bionn.report", str(sweep), "--watch", "--interval", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Both ended; the watch exits 0 only if every job completed or stopped early (docs/sweeps.md), so the
    # nan job alone makes it 1: the early-stopped one counts as done.
    assert watched.returncode == 1, watched.stdout[-3000:]
    assert "2 job(s): 1 nan, 1 early_stopped" in watched.stdout
    assert "ended: 1 of 2 did not complete" in watched.stdout
