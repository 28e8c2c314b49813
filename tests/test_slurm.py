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
from conftest import LONG, ROOT, training_in_attempt

from bionn.run_folder import RunFolder

pytestmark = pytest.mark.slow

QUICK = ["debug=quick", "training.verbose=epoch"]


def _cluster_problem() -> str | None:
    for tool in ("sbatch", "sinfo", "sacct", "scontrol"):
        if not shutil.which(tool):
            return f"no `{tool}` on PATH"
    unusable = ("down", "drain", "fail", "inval", "unk", "not_resp", "no_resp", "maint")
    # States Slurm leaves by itself (a node completing the previous test's job, a slurmd registering or
    # answering again): wait for the node's next state while one is in them; any other state is final.
    passing = ("comp", "unk", "not_resp", "no_resp", "power")
    deadline = time.monotonic() + 300  # Slurm's own timeouts (SlurmdTimeout, KillWait) are shorter
    while True:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
        states = state.stdout.split() if not state.returncode else []
        if any(not s.startswith(unusable) for s in states):
            break
        if not any(s.startswith(passing) for s in states) or time.monotonic() > deadline:
            return f"no Slurm node is up (sinfo: {state.stdout.strip() or state.stderr.strip()})"
        time.sleep(1)
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
    """A one-job sweep that was interrupted: its return code and output."""

    returncode: int
    output: str


def sweep_interrupted(cmd: list[str], run: Path, log: Path, *interruptions: list[str]) -> Interrupted:
    """Run a one-job sweep; interruption k (a command to which the job id is appended) is sent once attempt k
    trains (it committed an epoch of its own: fit is under way), wherever in the next epoch that lands.
    Epochs must be long enough by data size that the job cannot finish within Slurm's KillWait."""
    with open(log, "w") as out:
        launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 1200

    def watch(until) -> None:  # wait for a state of the run folder
        while time.time() < deadline and launcher.poll() is None and not until():
            time.sleep(0.2)

    for attempt, interrupt in enumerate(interruptions, start=1):
        watch(lambda attempt=attempt: training_in_attempt(run, attempt))
        assert launcher.poll() is None, f"the sweep ended before attempt {attempt} could be interrupted"
        job = read(run / "info.json")["slurm"]["job_id"]
        subprocess.run([*interrupt, job], check=True, capture_output=True)
    watch(lambda: False)
    launcher.wait(timeout=60)
    return Interrupted(launcher.returncode, log.read_text())


REQUEUE = [
    "scontrol",
    "requeue",
]  # SIGTERM (submitit ignores it), SIGKILL KillWait seconds later, start again
PREEMPT = ["scancel", "--signal=USR2"]  # what a timeout or preemption sends: submitit requeues the job


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
    args = ["model=P", *LONG, "training.early_stopping_patience=0", "logger=mlflow"]
    cmd = sweep_command(*slurm, *args, sweep=out, cache=cache)
    done = sweep_interrupted(cmd, run, tmp_path / "launcher.log", REQUEUE, PREEMPT)
    assert done.returncode == 0, done.output[-3000:]

    first, second, third = assert_resumed_attempts(run, interruptions=2, epochs=6)
    # requeue: SIGTERM, ignored by submitit, then SIGKILL; preemption: SIGUSR2, submitit requeues and exits
    assert first["reason"] in ("interrupted by SIGTERM", "ended without a record (killed)"), first
    assert second["reason"] == "interrupted by SIGUSR2" and "SIGUSR2" in second["signals"], second
    # The attempts record is written at the time (a failure stays in it: a later attempt removes only
    # error.json). Never failed: no attempt says so. The preemption was recorded as interrupted when
    # the signal came, before the job started again (so the folder said interrupted while it waited).
    assert all(a["outcome"] != "failed" for a in (first, second, third))
    assert second["ended"] is not None and second["ended"] <= third["started"], (second, third)
    if first["reason"] == "interrupted by SIGTERM":
        assert first["ended"] <= second["started"], (first, second)
    assert not (run / "error.json").exists()
    [row] = csv.DictReader(io.StringIO((out / "summary.csv").read_text()))
    assert (row["status"], row["restarts"], row["error"]) == ("completed", "2", "")
    # One run folder (the requeued job reused it) beside the sweep's own files.
    expected = ["0", "multirun.yaml", "summary.csv", "summary.md", "summary.png", "sweep.json"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == expected
    assert "Caught signal SIGUSR2" in job_logs(out)[0].with_suffix(".err").read_text()
    # MLflow (the sweep folder's SQLite store): the three attempts are one run, every epoch once, FINISHED.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve()}/.mlflow/mlflow.db")
    [tracked] = client.search_runs([client.get_experiment_by_name(str(out.resolve())).experiment_id])
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == "0"
    for key in ("loss", "val_loss"):
        assert sorted(m.step for m in client.get_metric_history(tracked.info.run_id, key)) == list(range(6))
    assert (tracked.data.tags["slurm.restart_count"], tracked.data.tags["bionn_attempts"]) == ("2", "3")


def assert_weights_equal(run: Path, reference: Path) -> None:
    import keras

    import bionn.nn.metrics  # noqa: F401  (registers R_squared for loading)

    for a, b in zip(
        keras.models.load_model(run / "model.keras").get_weights(),
        keras.models.load_model(reference / "model.keras").get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)  # measured bit-equal: same split, same sums


def test_slurm_sweep_with_a_failing_and_a_cancelled_job_names_both_lets_the_other_finish_and_fails(
    slurm, cache, tmp_path
):
    """One array of three jobs: job 0 trains, job 1 fails its checks (error.json), job 2 is cancelled while
    it trains (killed: no error.json, no result). The sweep waits for all three, then names both failures."""
    out = tmp_path / "sweep"
    cmd = sweep_command(*slurm, "model=P", *QUICK, "training.epochs=1,0,30", sweep=out, cache=cache)
    launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and launcher.poll() is None and not (out / "2" / "info.json").exists():
        time.sleep(0.2)
    assert launcher.poll() is None, "the sweep ended before its third job started"
    # <array>_<task>: the last task's own job id is the array's id, and scancel would take every task
    slurm_job = read(out / "2" / "info.json")["slurm"]
    job = f"{slurm_job['array_job_id']}_{slurm_job['array_task_id']}"
    subprocess.run(["scancel", job], check=True, capture_output=True)
    stdout, stderr = launcher.communicate(timeout=900)

    assert launcher.returncode != 0
    assert read(out / "0" / "final_results.json")["status"] == "completed"  # the other job finished
    error = read(out / "1" / "error.json")
    assert "training.epochs = 0 is invalid" in error["message"]
    assert read(out / "1" / "final_results.json")["status"] == "failed"
    assert not (out / "2" / "final_results.json").exists()
    # The sweep report (a Hydra callback in the launcher's process) names both failed jobs.
    assert "bionn: 2 of 3 job(s) failed" in stderr and "# Sweep summary" in stdout
    assert "job 1 failed: " in stderr and "training.epochs = 0 is invalid" in stderr
    assert str(out / "1" / "error.json") in stderr
    assert re.search(
        r"job 2 failed: run folder \S+, job \S+: ended CANCELLED.* without error.json; job log: "
        r"\S+_log.err",
        stderr,
    ), stderr[-3000:]
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["completed", "failed", "failed"]
    assert "training.epochs=0" in (out / "summary.csv").read_text()


def test_a_job_sacct_says_ended_while_slurm_requeued_it_is_still_waited_for(slurm, tmp_path, monkeypatch):
    """When a node fails, sacct says NODE_FAIL for a moment before it shows the requeued job as PENDING
    (docs/slurm.md, "A lost node"). submitit, asking in that moment, takes the job as ended for good, and the
    waiting launcher would report a failure while the job runs on. The moment is too short to meet on
    purpose, so a `sacct` on PATH plays that one answer (the only fake here); the job, squeue and the
    rest of submitit are real."""
    import submitit

    from bionn.sweep_live import slurm_job_ended

    executor = submitit.SlurmExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(cpus_per_task=1, time=10)
    job = executor.submit(subprocess.check_output, ["sh", "-c", "sleep 5; echo done"], text=True)
    deadline = time.time() + 300
    while (
        subprocess.run(
            ["squeue", "-h", "-j", job.job_id, "-o", "%T"], capture_output=True, text=True
        ).stdout.strip()
        != "RUNNING"
    ):
        assert time.time() < deadline, "the job did not start"
        time.sleep(0.2)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "sacct").write_text(f"#!/bin/sh\necho 'JobID|State|NodeList'\necho '{job.job_id}|NODE_FAIL|n'\n")
    (shim / "sacct").chmod(0o755)
    with monkeypatch.context() as m:
        m.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
        assert job.done(force_check=True) and job.state == "NODE_FAIL"  # submitit alone stops waiting here
        assert not slurm_job_ended(job)  # squeue still runs it
    while not slurm_job_ended(job):
        assert time.time() < deadline, "the job did not end"
        time.sleep(1)
    assert job.result() == "done\n"  # the job's own end, its result


def test_the_launcher_keys_reach_sbatch(slurm, cache, tmp_path):
    """Each key of conf/hydra/launcher/slurm.yaml, as Slurm received it: a held job (it never runs) read
    back with `scontrol show job` and its generated sbatch script; the requeue budget in submitit's own
    record of the job; a constraint no node has, refused by sbatch itself."""
    import pickle

    keys = [
        "hydra.launcher.gpus_per_node=null",  # the GPU comes from gres here
        "hydra.launcher.partition=debug",
        "hydra.launcher.account=root",
        "hydra.launcher.qos=normal",
        "hydra.launcher.gres=gpu:1",
        "hydra.launcher.setup=[echo bionn-setup-line]",
        "+hydra.launcher.additional_parameters.hold=true",
        "+hydra.launcher.additional_parameters.comment=bionn-keys",
        "hydra.launcher.max_num_timeout=7",
        "hydra.launcher.wait=false",
    ]
    out = tmp_path / "held"
    held = sweep(*slurm, *keys, "model=P", *QUICK, sweep=out, cache=cache)
    assert held.returncode == 0, held.stderr[-3000:]
    [job] = re.findall(r"as Slurm array\(s\) (\d+)", held.stdout)
    try:
        shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
        for field in ("Partition=debug", "Account=root", "QOS=normal", "Comment=bionn-keys"):
            assert field in shown, shown
        assert "JobState=PENDING Reason=JobHeldUser" in shown and "gres:gpu:1" in shown, shown
        script = (out / ".submitit" / job / f"{job}_submission.sh").read_text()
        for line in ("--partition=debug", "--account=root", "--qos=normal", "--gres=gpu:1", "--hold"):
            assert f"#SBATCH {line}\n" in script, script
        assert "\n# setup\necho bionn-setup-line\n" in script, script
        with open(out / ".submitit" / job / f"{job}_submitted.pkl", "rb") as handle:
            assert pickle.load(handle)._timeout_countdown == 7  # requeues left after a timeout or USR2
    finally:
        subprocess.run(["scancel", job], capture_output=True)

    refused = sweep(
        *slurm,
        "hydra.launcher.constraint=bionn-no-such-feature",
        "model=P",
        *QUICK,
        sweep=tmp_path / "refused",
        cache=cache,
    )
    assert refused.returncode != 0 and "Invalid feature specification" in refused.stderr, refused.stderr[
        -3000:
    ]
    [script] = (tmp_path / "refused" / ".submitit").glob(".submission_file_*.sh")
    assert "#SBATCH --constraint=bionn-no-such-feature\n" in script.read_text()
