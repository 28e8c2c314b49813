"""Asynchronous searches on the real local Slurm cluster (docs/search.md): hparams_search=smoke.

Workers are Slurm array tasks (bionn's launcher), the study a journal file in the sweep folder,
each trial a real TensorFlow training in trials/<n>/. The cluster is found or skipped as in
tests/test_slurm.py. Interruptions wait for a state (the trial's attempt has committed an epoch of
its own), never for a time, and the tests assert outcomes: the study's trials and states, the run
folders' attempts, and which files were left untouched.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, training_in_attempt
from omegaconf import OmegaConf
from test_slurm import (  # noqa: F401  (fixtures)
    LONG,
    PREEMPT,
    assert_resumed_attempts,
    epochs_in,
    read,
    slurm,
    sweep_command,
    sweep_interrupted,
)

from bionn.run_folder import RunFolder, RunFolderError
from bionn.search.folder import OVERRIDES, SearchFolder
from bionn.sweep_folder import SweepFolder

pytestmark = pytest.mark.slow
SMOKE = ["hparams_search=smoke"]


def search(*overrides: str, sweep: Path, cache: Path) -> subprocess.CompletedProcess:  # noqa: F811
    cmd = sweep_command(*SMOKE, *overrides, sweep=sweep, cache=cache)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)


def states(sweep: Path) -> dict[int, str]:
    return {t.number: t.state.name for t in SearchFolder(sweep).trials()}


def untouched(sweep: Path, numbers) -> dict[int, bytes]:
    """What must not change for a finished trial: its attempts and its final results."""
    return {
        n: (sweep / "trials" / str(n) / "attempts.json").read_bytes()
        + (sweep / "trials" / str(n) / "final_results.json").read_bytes()
        for n in numbers
    }


def assert_trials_match_their_run_folders(sweep: Path) -> None:
    for trial in SearchFolder(sweep).trials():
        run = RunFolder(sweep / "trials" / str(trial.number))
        final = run.final()
        assert final is not None, f"trial {trial.number} has no final results"
        expected = {"COMPLETE": "completed", "PRUNED": "pruned"}[trial.state.name]
        assert final["status"] == expected, (trial.number, trial.state, final["status"])
        if trial.state.name == "COMPLETE":  # the study holds the run's final validation r2_mean
            assert trial.value == pytest.approx(final["evaluation"]["validation"]["r2_mean"])
        # The run folder records the overrides the trial was composed with, its parameters among them.
        overrides = trial.user_attrs[OVERRIDES]
        assert list(OmegaConf.load(run / ".hydra" / "overrides.yaml")) == overrides
        for key, value in trial.params.items():
            assert any(o.startswith(f"{key}=") for o in overrides), (key, value, overrides)
        assert epochs_in(run / "history.csv") == list(range(final["epochs_completed"]))
        assert sorted(trial.intermediate_values) == list(range(final["epochs_completed"]))


def test_smoke_search_with_two_workers_accounts_for_every_trial_and_continues_to_a_new_total(
    slurm,  # noqa: F811
    cache,  # noqa: F811
    tmp_path,
):
    out = tmp_path / "search"
    done = search(*slurm, sweep=out, cache=cache)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert sorted(states(out)) == [0, 1, 2, 3]
    assert set(states(out).values()) <= {"COMPLETE", "PRUNED"} and "COMPLETE" in states(out).values()
    assert_trials_match_their_run_folders(out)
    # Two workers, each a Slurm array task, took trials and ended. (That they do not wait for each other,
    # no batch barrier, is measured, not asserted: scripts/bench_search.py's idle worker-seconds.)
    # The report: the trials by objective, best first (complete ones), in search.csv; best.yaml written.
    rows = list(csv.DictReader((out / "search.csv").open()))
    assert sorted(int(r["number"]) for r in rows) == [0, 1, 2, 3]
    complete = [float(r["objective"]) for r in rows if r["state"] == "complete"]
    assert complete == sorted(complete, reverse=True) and (out / "best.yaml").exists()
    workers = [read(out / "workers" / str(i) / "worker.json") for i in (0, 1)]
    assert sorted(n for w in workers for n in w["trials"]) == [0, 1, 2, 3]
    assert all(w["trials"] and w["stopped"] and w["slurm"]["job_id"] for w in workers), workers
    assert sorted(SweepFolder(out).slurm_ids()) == [0, 1]

    # The same command again: the study has its 4 trials, nothing is trained again.
    before = untouched(out, range(4))
    again = search(*slurm, sweep=out, cache=cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(states(out)) == [0, 1, 2, 3] and untouched(out, range(4)) == before

    # A larger n_trials continues the same study: one new trial, the old ones untouched.
    more = search(*slurm, "hydra.sweeper.n_trials=5", sweep=out, cache=cache)
    assert more.returncode == 0, more.stderr[-3000:]
    assert sorted(states(out)) == [0, 1, 2, 3, 4] and untouched(out, range(4)) == before
    assert_trials_match_their_run_folders(out)


@pytest.mark.full  # USR2 preemption per commit: test_slurm.py's requeued and preempted job
def test_a_worker_preempted_mid_trial_resumes_that_trial_in_its_run_folder(slurm, cache, tmp_path):  # noqa: F811
    out = tmp_path / "search"
    run = out / "trials" / "0"
    one = ["hydra.sweeper.n_trials=1", "hydra.sweeper.n_workers=1", "hydra.sweeper.pruner.name=none"]
    cmd = sweep_command(
        *slurm, *SMOKE, *one, *[o for o in LONG if o != "debug=quick"], sweep=out, cache=cache
    )
    done = sweep_interrupted(cmd, run, tmp_path / "launcher.log", PREEMPT)
    assert done.returncode == 0, done.output[-3000:]
    # One trial, the same one, completed after resuming at a committed epoch (not a new failed trial).
    assert states(out) == {0: "COMPLETE"}
    first, _ = assert_resumed_attempts(run, interruptions=1, epochs=6)
    assert first["reason"] == "interrupted by SIGUSR2", first
    assert_trials_match_their_run_folders(out)
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0"]


def test_a_pruned_trial_stops_and_says_pruned_in_the_study_and_its_run_folder(slurm, cache, tmp_path):  # noqa: F811
    out = tmp_path / "search"
    # r2 never exceeds 1: a threshold of 2 prunes every trial once its warm-up epoch has passed.
    prune = ["hydra.sweeper.pruner.name=threshold", "hydra.sweeper.pruner.lower=2.0"]
    done = search(*slurm, "hydra.sweeper.n_trials=2", *prune, sweep=out, cache=cache)
    assert done.returncode == 0, done.stderr[-3000:]  # pruning is no failure
    assert states(out) == {0: "PRUNED", 1: "PRUNED"}
    for number in (0, 1):
        final = read(out / "trials" / str(number) / "final_results.json")
        assert (final["status"], final["epochs_completed"]) == ("pruned", 2)  # of 3: pruned after epoch 2
        assert RunFolder(out / "trials" / str(number)).status() == "pruned"
    assert_trials_match_their_run_folders(out)
    rows = (out / "summary.csv").read_text()
    assert rows.count(",pruned,") == 2, rows


@pytest.mark.full  # a re-run repeating no finished trial per commit: the smoke search with two workers
def test_a_killed_search_run_again_resumes_its_running_trials_and_repeats_no_finished_one(
    slurm,  # noqa: F811
    cache,  # noqa: F811
    tmp_path,
):
    out = tmp_path / "search"
    # Trials of several seconds per epoch (by data size), so the kill lands while one trains.
    long = [o for o in LONG if o != "debug=quick"]
    cmd = sweep_command(*slurm, *SMOKE, *long, "hydra.sweeper.pruner.name=none", sweep=out, cache=cache)
    with open(tmp_path / "launcher.log", "w") as log:
        launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    # Once a trial has completed and another trains, the launcher and every worker job are killed.
    deadline = time.time() + 600

    def trains(number: int) -> bool:
        """Its first attempt has committed an epoch and has at least 3 of its 6 epochs still to train
        (several seconds each by data size): a kill sent now lands while it trains."""
        run = out / "trials" / str(number)
        try:
            early = RunFolder(run).committed_epoch() <= 3
        except (RunFolderError, OSError):  # a file being replaced: ask again
            return False
        return training_in_attempt(run, 1) and early

    def running() -> list[int]:
        return [n for n, state in states(out).items() if state == "RUNNING"]

    while not ("COMPLETE" in states(out).values() and any(trains(n) for n in running())):
        assert time.time() < deadline and launcher.poll() is None, (tmp_path / "launcher.log").read_text()
        time.sleep(0.2)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    jobs = list(SweepFolder(out).slurm_ids().values())
    # SIGKILL at once (scancel's default SIGTERM would let a trial train on through KillWait).
    subprocess.run(["scancel", "--signal=KILL", *jobs], check=True)
    while subprocess.run(
        ["squeue", "-h", "-j", ",".join(jobs)], capture_output=True, text=True
    ).stdout.strip():
        assert time.time() < deadline, "the cancelled worker jobs did not end"
        time.sleep(0.5)
    at_kill = states(out)
    finished = [n for n, s in at_kill.items() if s == "COMPLETE"]
    unfinished = [n for n, s in at_kill.items() if s == "RUNNING"]
    assert finished and unfinished, at_kill
    before = untouched(out, finished)
    resume_points = {n: RunFolder(out / "trials" / str(n)).committed_epoch() for n in unfinished}
    started = {n: len(RunFolder(out / "trials" / str(n)).attempts()) for n in unfinished}
    assert any(resume_points.values()), resume_points  # a trial was killed while it trained

    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    # The study continued to its 4 trials: the running ones resumed as themselves, none was repeated.
    assert sorted(states(out)) == [0, 1, 2, 3] and set(states(out).values()) == {"COMPLETE"}
    assert untouched(out, finished) == before
    for number in unfinished:
        attempts = RunFolder(out / "trials" / str(number)).attempts()
        assert [a["outcome"] for a in attempts] == ["interrupted"] * started[number] + ["completed"], attempts
        assert attempts[-1]["start_epoch"] == resume_points[number], (resume_points, attempts)
    assert_trials_match_their_run_folders(out)
    assert json.loads((out / "search.json").read_text())["n_trials"] == 4
