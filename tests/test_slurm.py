"""Sweeps on a real Slurm cluster (scripts/local_slurm/start.sh) and with the local launcher.

Everything is real: slurmctld/slurmd/slurmdbd, sbatch job arrays, submitit, TensorFlow
(CPU only; the cluster's GRES GPUs are fake and only let `gpus_per_node=1` jobs schedule).
Without a cluster these tests skip, unless BIONN_REQUIRE_SLURM=1 (scripts/test.sh under
root sets it after starting the cluster): then a missing cluster is a failure.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, training_in_attempt

from bionn.run_folder import RunFolder, RunFolderError, Status

pytestmark = pytest.mark.slow

QUICK = ["debug=quick", "training.verbose=epoch"]


def _cluster_problem() -> str | None:
    for tool in ("sbatch", "sinfo", "sacct", "scontrol"):
        if not shutil.which(tool):
            return f"no `{tool}` on PATH"
    unusable = ("down", "drain", "fail", "inval", "unk", "not_resp", "no_resp", "maint")
    for _ in range(30):  # a node may be "completing" the previous test's job for a moment
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
        if not state.returncode and any(not s.startswith(unusable) for s in state.stdout.split()):
            break
        time.sleep(1)
    else:
        return f"no Slurm node is up (sinfo: {state.stdout.strip() or state.stderr.strip()})"
    if subprocess.run(["sacct", "-n"], capture_output=True).returncode:
        return "`sacct` does not answer (submitit needs Slurm accounting)"
    return None


def slurm_or_skip() -> None:
    """Skip the test without a usable cluster (fail it under BIONN_REQUIRE_SLURM=1)."""
    problem = _cluster_problem()
    if problem:
        if os.environ.get("BIONN_REQUIRE_SLURM") == "1":
            pytest.fail(f"BIONN_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(f"{problem}; start one with `sudo bash scripts/local_slurm/start.sh`")


@pytest.fixture(scope="session")
def slurm() -> list[str]:
    """Launcher overrides that fit the cluster; skips (or fails under BIONN_REQUIRE_SLURM=1) without one."""
    slurm_or_skip()
    gres = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True).stdout
    # The defaults ask for 1 GPU and 8 CPUs per job: keep the GPU when the cluster advertises any.
    return [
        "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1",
        *([] if "gpu" in gres else ["hydra.launcher.gpus_per_node=0"]),
    ]


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stats")


def sweep_command(*overrides: str, sweep: Path, cache: Path) -> list[str]:
    return [
        sys.executable,
        "train.py",
        "-m",
        *overrides,
        f"hydra.sweep.dir={sweep}",
        f"runtime.stats_cache_dir={cache}",
    ]


def sweep(*overrides: str, sweep: Path, cache: Path) -> subprocess.CompletedProcess:
    cmd = sweep_command(*overrides, sweep=sweep, cache=cache)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def epochs_in(history: Path) -> list[int]:
    with open(history) as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def job_logs(sweep_dir: Path, task: int = 0) -> list[Path]:
    return sorted((sweep_dir / ".submitit").rglob(f"*_{task}_log.out"))


@dataclass
class Interrupted:
    """A one-job sweep that was interrupted: its output, and every (attempts, status) seen meanwhile."""

    returncode: int
    output: str
    seen: list[tuple[int, str]]


def observe(run: Path) -> tuple[int, str] | None:
    folder = RunFolder(run)
    try:
        return len(folder.attempts()), folder.status()
    except (RunFolderError, OSError):  # not started yet
        return None


def sweep_interrupted(cmd: list[str], run: Path, log: Path, *interruptions: list[str]) -> Interrupted:
    """Run a one-job sweep; interruption k (a command to which the job id is appended) is sent once attempt k
    trains (it committed an epoch of its own: fit is under way), wherever in the next epoch that lands.
    Epochs must be long enough by data size that the job cannot finish within Slurm's KillWait."""
    seen: list[tuple[int, str]] = []
    with open(log, "w") as out:
        launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 1200

    def watch(until) -> None:
        while time.time() < deadline and launcher.poll() is None and not until():
            if (state := observe(run)) and (not seen or seen[-1] != state):
                seen.append(state)
            time.sleep(0.2)

    for attempt, interrupt in enumerate(interruptions, start=1):
        watch(lambda attempt=attempt: training_in_attempt(run, attempt))
        assert launcher.poll() is None, f"the sweep ended before attempt {attempt} could be interrupted"
        job = read(run / "info.json")["slurm"]["job_id"]
        subprocess.run([*interrupt, job], check=True, capture_output=True)
    watch(lambda: False)
    launcher.wait(timeout=60)
    return Interrupted(launcher.returncode, log.read_text(), seen)


REQUEUE = [
    "scontrol",
    "requeue",
]  # SIGTERM (submitit ignores it), SIGKILL KillWait seconds later, start again
PREEMPT = ["scancel", "--signal=USR2"]  # what a timeout or preemption sends: submitit requeues the job
# Epochs of several seconds by data size (not by timing): after an attempt's first commit, five epochs
# of 8,400 samples remain, several times Slurm's KillWait (5 s) even on a fast idle CPU, so a requeue's
# SIGKILL lands while the job trains.
LONG = ["debug=quick", "dataset.shape.n_samples=12000", "training.epochs=6", "training.save_interval=0"]


def assert_resumed_attempts(run: Path, interruptions: int, epochs: int) -> list[dict]:
    """Each restart resumed from a committed epoch (never from scratch); the history has each epoch once."""
    attempts = RunFolder(run).attempts()
    assert [a["outcome"] for a in attempts] == ["interrupted"] * interruptions + ["completed"], attempts
    starts = [a["start_epoch"] for a in attempts]
    assert starts[0] == 0 and all(1 <= s for s in starts[1:]) and starts == sorted(starts), attempts
    assert epochs_in(run / "history.csv") == list(range(epochs))
    final = read(run / "final_results.json")
    assert final["status"] == "completed" and final["epochs_completed"] == epochs
    assert read(run / "info.json")["slurm"]["restart_count"] == interruptions
    return attempts


def test_requeued_and_preempted_job_resumes_in_its_run_folder_and_never_says_failed(slurm, cache, tmp_path):
    out = tmp_path / "sweep"
    run = out / "0"
    args = ["model=P", *LONG, "training.early_stopping_patience=0"]
    cmd = sweep_command(*slurm, *args, sweep=out, cache=cache)
    done = sweep_interrupted(cmd, run, tmp_path / "launcher.log", REQUEUE, PREEMPT)
    assert done.returncode == 0, done.output[-3000:]

    first, second, _ = assert_resumed_attempts(run, interruptions=2, epochs=6)
    # requeue: SIGTERM, ignored by submitit, then SIGKILL; preemption: SIGUSR2, submitit requeues and exits
    assert first["reason"] in ("interrupted by SIGTERM", "ended without a record (killed)"), first
    assert second["reason"] == "interrupted by SIGUSR2" and "SIGUSR2" in second["signals"], second
    # While it waited to run again, and after, the folder never said failed.
    statuses = [status for _, status in done.seen]
    assert Status.FAILED not in statuses and (2, Status.INTERRUPTED) in done.seen, done.seen
    assert not (run / "error.json").exists()
    [row] = csv.DictReader(io.StringIO((out / "summary.csv").read_text()))
    assert (row["status"], row["restarts"], row["error"]) == ("completed", "2", "")
    # One run folder (the requeued job reused it) beside the sweep's own files.
    expected = ["0", "multirun.yaml", "summary.csv", "summary.md", "summary.png", "sweep.json"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == expected
    assert "Caught signal SIGUSR2" in job_logs(out)[0].with_suffix(".err").read_text()


@pytest.fixture(scope="session")
def one_process_two_replicas(cache, tmp_path_factory) -> Path:
    """The run folder of `model=P` + LONG trained in one process with 2 replicas: what every multi-worker
    training of that config must equal (here and in tests/test_multinode.py; trained once per session)."""
    single = tmp_path_factory.mktemp("one_process") / "run"
    cmd = [sys.executable, "train.py", "model=P", *LONG, "runtime.cpu_replicas=2", f"hydra.run.dir={single}"]
    alone = subprocess.run(
        [*cmd, f"runtime.stats_cache_dir={cache}"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    return single


def assert_weights_equal(run: Path, reference: Path) -> None:
    import keras

    import bionn.nn.metrics  # noqa: F401  (registers R_squared for loading)

    for a, b in zip(
        keras.models.load_model(run / "model.keras").get_weights(),
        keras.models.load_model(reference / "model.keras").get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)  # measured bit-equal: same split, same sums


def test_two_task_multi_worker_training_resumes_together_and_ends_with_identical_weights(
    slurm, cache, one_process_two_replicas, tmp_path
):
    out = tmp_path / "sweep"
    run = out / "0"
    args = ["model=P", *LONG]
    tasks = ["hydra.launcher.tasks_per_node=2", "hydra.launcher.gpus_per_node=0"]
    cmd = sweep_command(*slurm, *tasks, *args, sweep=out, cache=cache)
    done = sweep_interrupted(cmd, run, tmp_path / "launcher.log", REQUEUE)
    assert done.returncode == 0, done.output[-3000:]
    assert_resumed_attempts(run, interruptions=1, epochs=6)  # one writer: each epoch once
    info = read(run / "info.json")
    assert info["workers"] == 2 and info["replicas"] == 2 and info["slurm"]["ntasks"] == 2
    last_digests = []
    for task in (0, 1):
        [log] = job_logs(out, task)
        digests = re.findall(rf"worker {task}/2 weights sha256 ([0-9a-f]{{64}})", log.read_text())
        assert digests, log.read_text()[-2000:]
        last_digests.append(digests[-1])  # the attempt that finished (an earlier one may have logged too)
    assert last_digests[0] == last_digests[1]
    # Requeued or not, the two workers' batch slices make the same steps as one process with 2 replicas.
    assert_weights_equal(run, one_process_two_replicas)


def test_slurm_sweep_with_a_failing_job_names_it_lets_the_other_finish_and_fails(slurm, cache, tmp_path):
    out = tmp_path / "sweep"
    done = sweep(*slurm, "model=P", *QUICK, "training.epochs=1,0", sweep=out, cache=cache)
    assert done.returncode != 0
    assert read(out / "0" / "final_results.json")["status"] == "completed"
    error = read(out / "1" / "error.json")
    assert "training.epochs = 0 is invalid" in error["message"]
    assert read(out / "1" / "final_results.json")["status"] == "failed"
    # The sweep report (a Hydra callback in the launcher's process) names the failed job.
    assert "bionn: 1 of 2 job(s) failed" in done.stderr
    assert "job 1 failed: " in done.stderr and "training.epochs = 0 is invalid" in done.stderr
    assert str(out / "1" / "error.json") in done.stderr
    summary = (out / "summary.csv").read_text()
    assert "training.epochs=0" in summary and "failed" in summary


def test_slurm_sweep_with_a_job_cancelled_mid_training_names_it_and_fails(slurm, cache, tmp_path):
    out = tmp_path / "sweep"
    cmd = sweep_command(*slurm, "model=P", *QUICK, "training.epochs=1,30", sweep=out, cache=cache)
    launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and launcher.poll() is None and not (out / "1" / "info.json").exists():
        time.sleep(0.2)
    assert launcher.poll() is None, "the sweep ended before its second job started"
    # <array>_<task>: the last task's own job id is the array's id, and scancel would take every task
    slurm_job = read(out / "1" / "info.json")["slurm"]
    job = f"{slurm_job['array_job_id']}_{slurm_job['array_task_id']}"
    subprocess.run(["scancel", job], check=True, capture_output=True)  # killed: no error.json, no result
    _, stderr = launcher.communicate(timeout=900)

    assert launcher.returncode != 0
    assert read(out / "0" / "final_results.json")["status"] == "completed"  # the other job finished
    assert not (out / "1" / "final_results.json").exists()
    assert "1 of 2 sweep job(s) failed" in stderr and "training.epochs=30" in stderr
    assert re.search(r"ended CANCELLED.* without error.json; job log: \S+_log.err", stderr), stderr[-3000:]
    assert f"bionn-report {out}" in stderr


def test_local_launcher_sweep_runs_every_configuration_as_its_own_process(cache, tmp_path):
    out = tmp_path / "sweep"
    done = sweep("hydra/launcher=local", "model=P,E", *QUICK, sweep=out, cache=cache)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for job, model in enumerate(["P", "E"]):
        assert read(out / str(job) / "final_results.json")["status"] == "completed"
        info = read(out / str(job) / "info.json")
        assert info["config"]["model"]["name"] == model and info["slurm"] is None
    assert len(list((out / ".submitit").rglob("*_0_log.out"))) == 2  # one submitit process per job
