"""A sweep's life (docs/sweeps.md): resume in its folder, refuse a changed re-run, submit and return,
watch, split into arrays of the cluster's MaxArraySize.

The Slurm tests run real sweeps (debug=quick) on the local cluster (tests/test_slurm.py says how it
is found or skipped); the others use the real launcher with hydra/launcher=local, or no launcher.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from test_slurm import QUICK, read, slurm, sweep_command  # noqa: F401  (fixtures)

from bionn.report.cli import main as report_main
from bionn.report.read import watch_states
from bionn.run_folder import RunFolder
from bionn.sweep import main as sweep_main
from bionn.sweep_folder import SWEEP, Job, SweepFolder

FOUR = ["model=P", *QUICK, "training.save_interval=0", "runtime.seed=1,2,3,4"]


def run(cmd: list[str], timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def rows(sweep_dir: Path) -> list[dict]:
    return list(csv.DictReader((sweep_dir / "summary.csv").open()))


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"gave up waiting for {what}"
        time.sleep(0.5)


def cli(main, *args: str, capsys) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- no cluster -------------------------------------------------------------------------


def test_resume_and_watch_name_a_folder_that_is_no_sweep_and_change_nothing(tmp_path, capsys):
    code, _, err = cli(sweep_main, "resume", str(tmp_path / "missing"), capsys=capsys)
    assert code == 2 and f"{tmp_path / 'missing'}: no such folder" in err
    plain = tmp_path / "plain"
    plain.mkdir()
    code, _, err = cli(sweep_main, "resume", str(plain), capsys=capsys)
    assert code == 2 and f"{plain} is no sweep folder: it has no sweep.json" in err
    code, _, err = cli(report_main, str(plain), "--watch", capsys=capsys)
    assert code == 2 and "no sweep.json" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / SWEEP).write_text('{"jobs": [')
    (broken / "0").mkdir()
    code, _, err = cli(sweep_main, "resume", str(broken), capsys=capsys)
    assert code == 2 and f"{broken / SWEEP}: not valid JSON" in err
    assert (broken / SWEEP).read_text() == '{"jobs": [' and (broken / "0").is_dir()  # nothing changed
    (broken / SWEEP).write_text('{"jobs": 3}')
    code, _, err = cli(sweep_main, "resume", str(broken), capsys=capsys)
    assert code == 2 and "'jobs' must be a list" in err


def test_watch_states_requeued_died_without_a_trace_and_not_submitted(tmp_path):
    """The watch's reading of squeue's answer: the answer is given (a stand-in: an out-of-memory kill or a
    node failure cannot be provoked here on demand); the run folders and sweep.json are real records."""
    folder = SweepFolder(tmp_path)
    jobs = [Job(n, (f"runtime.seed={n}",), str(n)) for n in range(4)]
    ids = {"0": "50_0", "1": "50_1", "2": "50_2"}  # job 3 was never submitted (the launcher died first)
    folder.record_launch(
        jobs, ["runtime.seed=0,1,2,3"], {}, {"launcher": "slurm", "arrays": [{"job_ids": ids}]}
    )
    preempted = RunFolder(tmp_path / "0")
    preempted.begin_attempt({"job_id": "50_0"}, start_epoch=0)
    preempted.note_signal("SIGUSR2")  # recorded at once; the job waits in the queue to run again
    RunFolder(tmp_path / "1").begin_attempt({"job_id": "50_1"}, start_epoch=0)  # never recorded an end
    (tmp_path / ".submitit" / "50_2").mkdir(parents=True)
    (tmp_path / ".submitit" / "50_2" / "50_2_0_log.err").write_text("killed before its run folder\n")
    queue = {"50_0": "PENDING", "50_1": "OUT_OF_MEMORY"}  # 50_2 has left the queue
    states = {s.num: s for s in watch_states(tmp_path, queue)}
    assert (states[0].state, states[0].ended) == ("requeued", False)
    assert states[0].detail == "interrupted by SIGUSR2; waiting to run again"
    assert (states[1].state, states[1].ended) == ("died without a trace (out of memory)", True)
    assert states[1].detail == "its last attempt never recorded an end"
    assert states[2].state.startswith("died without a trace (") and states[2].ended
    assert "started but made no run folder" in states[2].detail
    assert (states[3].state, states[3].ended) == ("not submitted", True)
    assert not any(s.ok for s in states.values())


@pytest.mark.slow
def test_local_sweep_resumes_only_unfinished_jobs_and_refuses_a_changed_one(cache, tmp_path):  # noqa: F811
    out = tmp_path / "sweep"
    local = ["hydra/launcher=local", "model=P", *QUICK, "training.save_interval=0", "runtime.seed=1,2"]
    first = run(sweep_command(*local, sweep=out, cache=cache))
    assert first.returncode == 0, first.stderr[-3000:]
    # Each configuration trained in a process of its own (submitit's local executor), outside Slurm.
    assert len(list((out / ".submitit").rglob("*_0_log.out"))) == 2
    assert all(json.loads((out / j / "info.json").read_text())["slurm"] is None for j in ("0", "1"))
    # A run folder lost its result (as if the job had been killed): only it is run again.
    aside = tmp_path / "final_results.json"
    os.replace(out / "1" / "final_results.json", aside)
    again = run([sys.executable, "-m", "bionn.sweep", "resume", str(out)])
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    launches = SweepFolder(out).record()["launches"]
    assert [(la["submitted"], la["finished"]) for la in launches] == [([0, 1], []), ([1], [0])]
    assert len(RunFolder(out / "0").attempts()) == 1 and len(RunFolder(out / "1").attempts()) == 2
    assert [(r["job"], r["status"]) for r in rows(out)] == [("0", "completed"), ("1", "completed")]
    # Another value for the same folder: refused before anything starts, naming the job and the values.
    changed = run(sweep_command(*local[:-1], "runtime.seed=1,3", sweep=out, cache=cache))
    assert changed.returncode != 0
    assert "job #1: model=P" in changed.stderr and "runtime.seed=2" in changed.stderr
    assert "runtime.seed=3 " in changed.stderr and "nothing was submitted" in changed.stderr
    assert len(SweepFolder(out).record()["launches"]) == 2
    assert len(RunFolder(out / "1").attempts()) == 2
    # A finished job's run folder lost since: the resume is refused, naming it; nothing is deleted.
    os.replace(out / "0", tmp_path / "0-elsewhere")
    lost = run([sys.executable, "-m", "bionn.sweep", "resume", str(out)])
    assert lost.returncode != 0 and f"job #0: its run folder {out / '0'} is missing" in lost.stderr
    assert len(SweepFolder(out).record()["launches"]) == 2 and not (out / "0").exists()
    assert (tmp_path / "0-elsewhere" / "final_results.json").exists()


# ---- on the local Slurm cluster -------------------------------------------------------------


def slurm_ids(sweep_dir: Path) -> dict[int, str]:
    try:
        return SweepFolder(sweep_dir).slurm_ids()
    except ValueError:  # not written yet
        return {}


def queue() -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, check=True)
    return dict(line.split("|", 1) for line in out.stdout.split())


def max_array_size() -> int:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    return int(next(line.split("=")[1] for line in out.splitlines() if line.startswith("MaxArraySize")))


@pytest.mark.slow
def test_killed_sweep_with_two_cancelled_jobs_resumes_exactly_those_two(slurm, cache, tmp_path):  # noqa: F811
    out = tmp_path / "sweep"
    cmd = sweep_command(
        *slurm, "hydra.launcher.array_parallelism=2", "logger=mlflow", *FOUR, sweep=out, cache=cache
    )
    launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(slurm_ids(out)) == 4, 300, "the four jobs to be submitted")
    ids = slurm_ids(out)
    # At most two run at once: two wait in the queue; hold them (a held job cannot start, so they are
    # still pending when cancelled, however the queue moves meanwhile), cancel them, kill the launcher.
    cancelled: list[int] = []

    def hold_two_pending() -> bool:
        snapshot = queue()
        pending = sorted(n for n, i in ids.items() if snapshot.get(i) == "PENDING")[:2]
        if len(pending) < 2:
            return False
        subprocess.run(["scontrol", "hold", *(ids[n] for n in pending)], capture_output=True)
        after = queue()
        if all(after.get(ids[n]) == "PENDING" for n in pending):
            cancelled.extend(pending)
            return True
        # one started between the two queries: let the other go and look again
        still = [ids[n] for n in pending if after.get(ids[n]) == "PENDING"]
        subprocess.run(["scontrol", "release", *still], capture_output=True)
        return False

    wait_for(hold_two_pending, 120, "two pending jobs, held")
    subprocess.run(["scancel", *(ids[n] for n in cancelled)], check=True)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    others = [n for n in range(4) if n not in cancelled]
    finished = lambda: all((out / str(n) / "final_results.json").exists() for n in others)  # noqa: E731
    wait_for(finished, 900, "the two other jobs to complete")

    watched = run([sys.executable, "-m", "bionn.report", str(out), "--watch", "--interval", "1"], timeout=300)
    assert watched.returncode == 1, watched.stdout[-3000:]
    last = watched.stdout.rsplit("# Sweep", 1)[1]
    assert "2 completed, 2 cancelled" in last or "2 cancelled, 2 completed" in last, last

    resumed = run([sys.executable, "-m", "bionn.sweep", "resume", str(out)])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    launch = SweepFolder(out).last_launch()
    assert launch["submitted"] == cancelled and launch["finished"] == others
    assert sorted(int(n) for a in launch["arrays"] for n in a["job_ids"]) == cancelled
    for n in others:  # not started again
        assert len(RunFolder(out / str(n)).attempts()) == 1
    assert [r["status"] for r in rows(out)] == ["completed"] * 4
    assert "4 job(s): 4 completed" in resumed.stdout
    # MLflow: the sweep is one experiment (its folder's SQLite store), its four jobs the runs, all finished.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve()}/.mlflow/mlflow.db")
    experiment = client.get_experiment_by_name(str(out.resolve()))
    tracked = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in tracked) == ["0", "1", "2", "3"]
    assert {r.info.status for r in tracked} == {"FINISHED"}

    # The same folder with another job list: refused, nothing submitted.
    before = sorted(p.name for p in (out / ".submitit").iterdir())
    changed = run(sweep_command(*slurm, *FOUR[:-1], "runtime.seed=1,2,3,5", sweep=out, cache=cache))
    assert changed.returncode != 0 and "nothing was submitted" in changed.stderr
    assert "job #3: " in changed.stderr and "runtime.seed=4" in changed.stderr
    assert sorted(p.name for p in (out / ".submitit").iterdir()) == before
    assert len(SweepFolder(out).record()["launches"]) == 2


@pytest.mark.slow
def test_detached_sweep_split_into_arrays_returns_at_once_completes_and_is_watched_to_its_end(
    slurm,  # noqa: F811
    cache,  # noqa: F811
    tmp_path,
):
    limit = max_array_size()
    if limit >= 5:
        message = f"the cluster's MaxArraySize is {limit}: scripts/local_slurm/start.sh sets 3"
        pytest.fail(message) if os.environ.get("BIONN_REQUIRE_SLURM") == "1" else pytest.skip(message)
    out = tmp_path / "sweep"
    five = [*FOUR[:-1], "runtime.seed=1,2,3,4,5"]
    # Job 4 (seed 5) asks for other resources: an array of its own.
    per_job = "hydra.launcher.per_job=[{when: {runtime.seed: 5}, timeout_min: 30}]"
    args = [*slurm, "hydra.launcher.wait=false", "hydra.launcher.array_parallelism=2", per_job, *five]
    started = run(sweep_command(*args, sweep=out, cache=cache), timeout=300)
    assert started.returncode == 0, started.stderr[-3000:]
    launch = SweepFolder(out).last_launch()
    arrays = launch["arrays"]
    assert [a["jobs"] for a in arrays] == [list(range(i, min(i + limit, 4))) for i in range(0, 4, limit)] + [
        [4]
    ]
    assert len({a["array_id"] for a in arrays}) == len(arrays) > 2
    assert [a["resources"]["timeout_min"] for a in arrays] == [4320] * (len(arrays) - 1) + [30]
    for array in arrays:
        assert array["array_id"] in started.stdout
    assert f"bionn-report {out} --watch" in started.stdout and str(out) in started.stdout
    # Two at a time across all arrays: more arrays than that, so one job at a time each, and array k
    # starts after array k - 2 has ended.
    for k, array in enumerate(arrays):
        [script] = (out / ".submitit").rglob(f"{array['array_id']}*_submission.sh")
        size = len(array["jobs"])  # submitit submits a one-job array as a plain job
        assert ("#SBATCH --array" in script.read_text()) == (size > 1)
        assert size == 1 or f"--array=0-{size - 1}%1" in script.read_text()
        waits = f"--dependency=afterany:{arrays[k - 2]['array_id']}" if k >= 2 else "--dependency"
        assert (waits in script.read_text()) == (k >= 2)
    assert not (out / "summary.csv").exists()  # nothing has ended when the launcher returns

    watched = run(
        [sys.executable, "-m", "bionn.report", str(out), "--watch", "--interval", "2"], timeout=1500
    )
    assert watched.returncode == 0, watched.stdout[-3000:]
    screens = watched.stdout.split("# Sweep ")[1:]
    assert "5 job(s): 5 completed" in screens[-1] and "all completed" in watched.stdout
    assert len(screens) > 1 and "5 completed" not in screens[0]
    # The last job to end wrote the report (nobody else did: --watch writes nothing).
    wait_for(lambda: (out / "summary.csv").exists(), 120, "the report of the last job")
    assert [r["status"] for r in rows(out)] == ["completed"] * 5
    assert all(read(out / str(n) / "final_results.json")["status"] == "completed" for n in range(5))
    assert json.loads((out / SWEEP).read_text())["launches"][0]["wait"] is False


@pytest.mark.slow
def test_resume_submits_no_second_copy_of_a_pending_job_and_names_it(slurm, cache, tmp_path):  # noqa: F811
    out = tmp_path / "sweep"
    held = "+hydra.launcher.additional_parameters.hold=true"  # sbatch --hold: pending, nothing trains
    cmd = sweep_command(*slurm, "hydra.launcher.wait=false", held, "model=P", *QUICK, sweep=out, cache=cache)
    submitted = run(cmd, timeout=300)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    [job_id] = slurm_ids(out).values()
    try:
        assert queue().get(job_id) == "PENDING"
        for again in (cmd, [sys.executable, "-m", "bionn.sweep", "resume", str(out)]):  # -m again; resume
            done = run(again, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            assert f"#0: Slurm job {job_id} is PENDING (cancel it: scancel {job_id})" in done.stderr
            launch = SweepFolder(out).last_launch()
            assert (launch["submitted"], launch["live"], launch["arrays"]) == ([], [0], [])
        assert [i for i, state in queue().items() if state == "PENDING" and i == job_id] == [job_id]
        assert not (out / "0").exists()  # no job of it ran

        subprocess.run(["scancel", job_id], check=True)  # once cancelled, resume submits it again
        wait_for(lambda: queue().get(job_id) in (None, "CANCELLED"), 60, "the job to leave the queue")
        done = run([sys.executable, "-m", "bionn.sweep", "resume", str(out)], timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert SweepFolder(out).last_launch()["submitted"] == [0]
    finally:
        subprocess.run(["scancel", *slurm_ids(out).values(), job_id], check=False)


@pytest.mark.slow
def test_a_sweep_of_hydras_own_launcher_names_failed_and_refused_jobs_in_its_summary_and_fails(tmp_path):
    out = tmp_path / "sweep"
    cmd = [sys.executable, "train.py", "-m", "training.compile.optimizer=adamm,sgdd", *QUICK]
    done = run([*cmd, f"hydra.sweep.dir={out}"], timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "Traceback" not in output and "Error executing job" not in output, output[-3000:]
    for job, name in ((0, "adamm"), (1, "sgdd")):  # both ran (the first did not stop the sweep), both named
        source = f"the command-line override training.compile.optimizer={name}"
        assert f"bionn: job {job} failed: {source}: training.compile.optimizer: unknown optimizer" in output
        assert not (out / str(job) / "ledger.json").exists()  # recorded as failed, not locked
    assert "2 job(s): 2 failed" in output and [r["status"] for r in rows(out)] == ["failed", "failed"]
