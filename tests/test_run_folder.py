"""The run folder's records (bionn.run_folder): statuses, attempts, the config ledger, bad records.

Fast: real files in tmp_path, no training. Real trainings that use these records are in test_train.py
and test_slurm.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import absent_pid

from bionn.run.signals import observe_signals
from bionn.run_folder import (
    ATTEMPTS,
    ERROR,
    FINAL,
    LEDGER,
    ConfigChanged,
    Outcome,
    RunFolder,
    RunFolderError,
    Status,
    find_runs,
    format_history,
    parse_history,
)

CONFIG = {
    "model": {"name": "E", "layers": [{"type": "Dense", "units": 12}]},
    "training": {"epochs": 3, "verbose": "auto", "save_interval": 1, "compile": {"learning_rate": 0.001}},
    "runtime": {"seed": 0, "stats_cache_dir": "/a"},
}


def other(**changes) -> dict:
    config = json.loads(json.dumps(CONFIG))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = config
        for key in parents:
            node = node[key] if not isinstance(node, list) else node[int(key)]
        node[int(last) if isinstance(node, list) else last] = value
    return config


def snapshot(folder: RunFolder) -> dict[str, bytes]:
    return {str(p.relative_to(folder.path)): p.read_bytes() for p in folder.path.rglob("*") if p.is_file()}


def test_attempts_record_each_start_signals_at_once_and_close_one_that_was_killed(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.begin_attempt({"job_id": "7", "restart_count": 0}, start_epoch=0)
    assert folder.status() == Status.RUNNING  # this process is alive
    # then killed outright (SIGKILL, out of memory): the attempt never records its end

    second = RunFolder(folder.path)
    second.begin_attempt(None)
    second.update_attempt(start_epoch=2)
    first, current = second.attempts()
    assert first["outcome"] == Outcome.INTERRUPTED and first["reason"] == "ended without a record (killed)"
    assert first["slurm"]["job_id"] == "7"
    assert current["number"] == 2 and current["outcome"] is None and current["start_epoch"] == 2
    assert current["host"] and current["pid"] == os.getpid()

    second.note_signal("SIGUSR2")  # recorded as the end at once: a crash or kill may follow
    second.note_signal("SIGTERM")  # the requeue that the preemption asked for
    assert second.status() == Status.INTERRUPTED
    assert second.attempts()[1]["reason"] == "interrupted by SIGUSR2"
    assert second.attempts()[1]["signals"] == ["SIGUSR2", "SIGTERM"]

    third = RunFolder(folder.path)
    third.begin_attempt(None)
    third.note_signal("SIGTERM")  # ignored by submitit: this attempt goes on and completes
    third.write_json(FINAL, {"status": "completed", "evaluation": {}})
    third.end_attempt(Outcome.COMPLETED)
    last = third.attempts()[2]
    assert (last["outcome"], last["reason"], last["signals"]) == ("completed", None, ["SIGTERM"])
    assert third.status() == Status.COMPLETED


def test_a_requeued_jobs_open_attempt_is_closed_naming_its_lost_node_and_no_other_is(tmp_path, monkeypatch):
    """RunFolder.end_requeued_attempt, which the waiting Slurm launcher calls once squeue shows the job
    pending again. sinfo's answer is given (a stand-in: a node Slurm reports down exists only on the
    two-node cluster, where tests/test_multinode.py loses one for real)."""
    down: dict[str, str] = {}
    monkeypatch.setattr("bionn.slurm.lost_nodes", lambda nodes: {n: down[n] for n in down if n in nodes})
    slurm = {"job_id": "12", "array_job_id": "11", "array_task_id": 0, "nodelist": "bionn-node2,vm"}
    RunFolder(tmp_path).begin_attempt(slurm, start_epoch=0)
    before = (tmp_path / ATTEMPTS).read_bytes()
    for other_job in ("12", "11_1", "13_0"):  # not this attempt's job (array task 11_0): untouched
        assert RunFolder(tmp_path).end_requeued_attempt(other_job, 1) is None
    assert RunFolder(tmp_path).end_requeued_attempt("11_0", 2) is None  # not the attempt that was seen
    assert (tmp_path / ATTEMPTS).read_bytes() == before

    down["bionn-node2"] = "down*"
    closed = RunFolder(tmp_path).end_requeued_attempt("11_0", 1)
    reason = "lost node bionn-node2 (Slurm: down*); the attempt ended with it, without a record"
    assert (closed["outcome"], closed["reason"], closed["ended"]) == ("interrupted", reason, None)
    assert RunFolder(tmp_path).status() == Status.INTERRUPTED
    assert RunFolder(tmp_path).end_requeued_attempt("11_0", 1) is None  # closed already: nothing to do
    # The job's next start (the node back) keeps that record; one killed on a node that answers is a kill.
    again = RunFolder(tmp_path)
    again.begin_attempt(slurm)
    down.clear()
    RunFolder(tmp_path).begin_attempt(slurm)
    assert [a.get("reason") for a in RunFolder(tmp_path).attempts()] == [
        reason,
        "ended without a record (killed)",
        None,
    ]


def test_an_attempt_without_a_record_whose_process_is_gone_is_interrupted_not_running(tmp_path):
    folder = RunFolder(tmp_path)
    folder.begin_attempt(None)
    folder.update_attempt(pid=absent_pid())
    assert folder.status() == Status.INTERRUPTED


def test_a_completed_attempt_after_a_failed_one_leaves_no_current_error_but_keeps_the_old_one(tmp_path):
    folder = RunFolder(tmp_path)
    folder.begin_attempt(None)
    error = {"type": "ValueError", "message": "boom", "traceback": "Traceback ..."}
    folder.end_attempt(Outcome.FAILED, error=error)
    folder.write_json(ERROR, error)
    folder.write_json(FINAL, {"status": "failed", "error": "ValueError: boom", "evaluation": None})
    assert folder.status() == Status.FAILED

    folder = RunFolder(tmp_path)
    folder.begin_attempt(None)
    assert not (folder / ERROR).exists() and not (folder / FINAL).exists()
    assert folder.status() == Status.RUNNING
    folder.write_json(FINAL, {"status": "completed", "evaluation": {}})
    folder.end_attempt(Outcome.COMPLETED)
    assert folder.status() == Status.COMPLETED
    failed, completed = folder.attempts()
    assert failed["error"]["message"] == "boom" and completed["outcome"] == Outcome.COMPLETED


def test_ledger_accepts_the_same_config_and_ignores_keys_that_cannot_change_the_result(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.check_ledger(CONFIG) is None
    folder.write_ledger(CONFIG)
    changed_harmlessly = other(
        training__verbose="silent", training__save_interval=0, runtime__stats_cache_dir="/b"
    )
    assert folder.check_ledger(changed_harmlessly)["config"] == CONFIG


def test_ledger_refuses_another_config_naming_each_key_old_and_new_and_the_two_ways_out(tmp_path):
    folder = RunFolder(tmp_path)
    folder.write_ledger(CONFIG)
    new = other(model__name="P", model__layers__0__units=10, training__compile__learning_rate=0.01)
    with pytest.raises(ConfigChanged) as refused:
        folder.check_ledger(new)
    message = str(refused.value)
    assert str(tmp_path / LEDGER) in message
    assert 'model.name: "E" (in the folder) -> "P" (this run)' in message
    assert "model.layers.0.units: 12 (in the folder) -> 10 (this run)" in message
    assert "training.compile.learning_rate: 0.001 (in the folder) -> 0.01 (this run)" in message
    assert "training.epochs" not in message  # only keys that differ
    assert "hydra.run.dir=" in message and "runtime.on_config_change=move_aside" in message


def test_move_aside_keeps_everything_in_previous_and_leaves_the_open_job_log(tmp_path):
    folder = RunFolder(tmp_path)
    folder.write_ledger(CONFIG)
    folder.write_json(FINAL, {"status": "completed"})
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("model: E\n")
    (tmp_path / "train.log").write_text("log of every attempt\n")
    before = snapshot(folder)

    target = folder.move_aside()
    assert target == tmp_path / "previous" / "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous", "train.log"]
    moved = {
        k.removeprefix("previous/1/"): v for k, v in snapshot(folder).items() if k.startswith("previous/")
    }
    assert moved == {k: v for k, v in before.items() if k != "train.log"}
    folder.write_ledger(other(model__name="P"))
    assert folder.move_aside() == tmp_path / "previous" / "2"
    assert find_runs(tmp_path) == []  # runs moved aside are no runs of the sweep
    folder.write_ledger(CONFIG)
    assert [f.path for f in find_runs(tmp_path)] == [tmp_path]  # previous/ holds no runs of the sweep


@pytest.mark.parametrize(
    ("name", "text", "complaint"),
    [
        (LEDGER, '{"fingerprint": "0123", "config": {}}', "fingerprint does not match its config"),
        (LEDGER, '{"config": ', "not valid JSON"),
        (LEDGER, "[1, 2]", "expected a JSON object"),
        (ATTEMPTS, '{"attempts": [{"number": 1, "outcome": "exploded"}]}', "outcome 'exploded'"),
        (ATTEMPTS, '{"attempts": "yes"}', "'attempts' must be a list"),
        (FINAL, '{"status": "done"}', "status 'done' is not one of"),
    ],
)
def test_a_corrupt_or_hand_edited_record_is_named_and_nothing_is_touched(tmp_path, name, text, complaint):
    folder = RunFolder(tmp_path)
    folder.write_history([{"epoch": 0, "loss": 1.0}])
    (tmp_path / name).write_text(text)
    before = snapshot(folder)
    readers = {  # every call that reads the record refuses it, each on its own
        LEDGER: [lambda: folder.check_ledger(CONFIG)],
        ATTEMPTS: [lambda: folder.begin_attempt(None), folder.status],
        FINAL: [lambda: folder.begin_attempt(None), folder.status],
    }
    for read in readers[name]:
        with pytest.raises(RunFolderError) as err:
            read()
        assert str(tmp_path / name) in str(err.value) and complaint in str(err.value)
        assert snapshot(folder) == before


def test_history_round_trips_and_a_torn_row_is_named():
    rows = [
        {"epoch": 0.0, "loss": 1.5, "val_loss": float("nan")},
        {"epoch": 1.0, "loss": 1.25, "val_loss": 2.0},
    ]
    text = format_history(rows)
    assert text.splitlines()[:2] == ["epoch,loss,val_loss", "0,1.5,nan"]
    again = parse_history(text)
    assert again[1] == rows[1] and again[0]["val_loss"] != again[0]["val_loss"]  # NaN stays NaN
    with pytest.raises(ValueError, match="row 1 has more cells than the header"):
        parse_history("epoch,loss\n0,1.0,2.0\n")


def test_a_signal_is_recorded_before_the_handler_that_was_there_runs():
    noted: list[str] = []
    chained: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: chained.append(signum))
    try:
        with observe_signals(noted.append) as received:
            os.kill(os.getpid(), signal.SIGUSR2)
        assert received == noted == ["SIGUSR2"] and chained == [signal.SIGUSR2]
        # A signal whose default ends the process ends it with SystemExit(128 + n), after the record.
        signal.signal(signal.SIGUSR2, signal.SIG_DFL)
        with pytest.raises(SystemExit) as ended, observe_signals(noted.append):
            os.kill(os.getpid(), signal.SIGUSR2)
        assert ended.value.code == 128 + signal.SIGUSR2 and noted == ["SIGUSR2", "SIGUSR2"]
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL  # restored
        # An ignored signal (SIGINT of a job a shell put in the background) stays ignored, unrecorded.
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        with observe_signals(noted.append) as received:
            os.kill(os.getpid(), signal.SIGUSR2)
        assert received == [] and noted == ["SIGUSR2", "SIGUSR2"]
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_written_files_have_the_mode_a_plain_open_gives_under_the_umask(tmp_path, umask):
    from bionn.io import atomic_save_npz, atomic_write_bytes, atomic_write_json, current_umask

    before = os.umask(umask)
    try:
        assert current_umask() == umask
        plain = tmp_path / "plain"
        plain.write_text("")
        written = [
            atomic_write_json(tmp_path / "a.json", {"x": 1}),
            atomic_write_bytes(tmp_path / "sub" / "b.csv", b"x\n"),
            atomic_save_npz(tmp_path / "c.npz", x=[1.0]),
        ]
        RunFolder(tmp_path / "run").begin_attempt(None)
        written.append(tmp_path / "run" / "attempts.json")
    finally:
        os.umask(before)
    want = plain.stat().st_mode & 0o777
    assert want == 0o666 & ~umask
    assert {str(p): p.stat().st_mode & 0o777 for p in written} == {str(p): want for p in written}


def test_train_py_ends_a_corrupt_record_in_one_paragraph_and_touches_nothing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "ledger.json").write_text('{"fingerprint": "f", "config": ')
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    done = subprocess.run(
        [sys.executable, "train.py", "debug=quick", f"hydra.run.dir={run}"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert f"{run / 'ledger.json'}: not valid JSON" in output
    assert "Traceback" not in output and "HYDRA_FULL_ERROR" not in output, output[-3000:]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != "train.log"} == before
