"""attempts.json: every start of a run folder's training and how it ended, the attempt state machine
(begun -> signalled -> ended, or closed as interrupted afterwards when it never recorded its end)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bionn.io import atomic_write_json
from bionn.run_folder.names import ATTEMPTS, Outcome
from bionn.run_folder.records import RunFolderError, now, read_object


def read_attempts(folder: Path) -> list[dict]:
    """The attempts recorded in `folder` (none without attempts.json); RunFolderError if not whole."""
    path = folder / ATTEMPTS
    record = read_object(path)
    if record is None:
        return []
    attempts = record.get("attempts")
    if not isinstance(attempts, list) or not all(isinstance(a, dict) for a in attempts):
        raise RunFolderError(f"{path}: 'attempts' must be a list of objects (hand-edited?)")
    for number, attempt in enumerate(attempts, start=1):
        outcome = attempt.get("outcome")
        if attempt.get("number") != number or outcome not in (None, *(o.value for o in Outcome)):
            raise RunFolderError(
                f"{path}: attempt {number} has number {attempt.get('number')!r} and outcome "
                f"{outcome!r} (expected number {number} and one of null, "
                f"{', '.join(o.value for o in Outcome)})"
            )
    return attempts


def unrecorded_end(attempt: dict) -> str:
    """Why an attempt that never recorded its end ended, as far as can be told afterwards: after a signal
    it noted, a kill; on a Slurm node that Slurm now reports down or not responding, that node's loss
    (named); else a kill (SIGKILL, out of memory, a requeue)."""
    from bionn.slurm import lost_nodes

    signals = attempt.get("signals") or []
    if signals:
        return f"killed after {signals[-1]}"
    lost = lost_nodes((attempt.get("slurm") or {}).get("nodelist"))
    if lost:
        nodes = ", ".join(f"{node} (Slurm: {state})" for node, state in lost.items())
        return f"lost node {nodes}; the attempt ended with it, without a record"
    return "ended without a record (killed)"


def close_unrecorded(attempt: dict) -> None:
    """Mark an attempt that never recorded its end as interrupted, saying why (unrecorded_end)."""
    attempt.update(outcome=Outcome.INTERRUPTED.value, ended=None, reason=unrecorded_end(attempt))


class AttemptLog:
    """This process's attempt in attempts.json of `folder`: begun, updated, signalled and ended, each
    written at once (a kill may follow). `epochs()` says how many epochs the folder holds when an
    attempt ends."""

    def __init__(self, folder: Path, epochs: Callable[[], int]):
        self.folder = folder
        self.epochs = epochs
        self.current: dict | None = None

    def begin(self, slurm: dict | None, start_epoch: int | None, attempts: list[dict]) -> dict:
        """Append this process's attempt after `attempts` (the record as read, closed by the caller)."""
        from bionn.provenance import provenance

        self.current = {
            "number": len(attempts) + 1,
            "started": now(),
            "ended": None,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slurm": slurm,
            "provenance": provenance(),  # what code and data engine ran this attempt
            "start_epoch": start_epoch,
            "end_epoch": None,
            "signals": [],
            "outcome": None,
        }
        self.write([*attempts, self.current])
        return self.current

    def update(self, **fields: Any) -> None:
        """Change this process's attempt record (written at once: a kill may follow)."""
        assert self.current is not None, "begin_attempt first"
        self.current.update(fields)
        attempts = read_attempts(self.folder)
        attempts[self.current["number"] - 1] = self.current
        self.write(attempts)

    def note_signal(self, name: str) -> None:
        """Record a signal at once as the attempt's end (interrupted, by the attempt's first signal);
        a later end replaces this record."""
        if self.current is not None:
            signals = [*self.current["signals"], name]
            self.update(
                signals=signals,
                outcome=Outcome.INTERRUPTED.value,
                reason=f"interrupted by {signals[0]}",
                ended=now(),
                end_epoch=self.epochs(),
            )

    def end(self, outcome: Outcome, **fields: Any) -> None:
        if self.current is None:
            return
        fields.setdefault("reason", None)  # an earlier note_signal's reason no longer applies
        self.update(outcome=outcome.value, ended=now(), end_epoch=self.epochs(), **fields)

    def end_requeued(self, job_id: str, number: int) -> dict | None:
        """Close attempt `number` as interrupted if it is still the last one, never recorded its end and
        ran as Slurm job `job_id`; returns the closed attempt, else None (RunFolder.end_requeued_attempt)."""
        from bionn.slurm import attempt_job_id

        attempts = read_attempts(self.folder)
        last = attempts[-1] if attempts else None
        if (
            last is None
            or last.get("number") != number
            or last.get("outcome") is not None
            or attempt_job_id(last.get("slurm")) != job_id
        ):
            return None
        close_unrecorded(last)
        self.write(attempts)
        return last

    def write(self, attempts: list[dict]) -> None:
        atomic_write_json(self.folder / ATTEMPTS, {"attempts": attempts})
