"""The sweep folder: the one owner of sweep.json, the record of a sweep's job list and its launches.

    sweep.json      the command, the job list (number, overrides, run folder) and every launch
                    (time, host, wait or not, jobs submitted and skipped, Slurm arrays and job ids)
    ended.json      the jobs of the running launch that ended without a result in their run folder
                    (refused, raised, killed), each with why and the process that noted it; the sweep
                    report of that process reads and removes it (bionn.report.SweepReport)
    <subdir>/       each job's run folder (bionn.run_folder), usually the job number
    .submitit/      submitit's pickles and the jobs' logs
    multirun.yaml   Hydra's own record of the config (not read here)

The launcher writes sweep.json before it submits anything; `bionn-sweep resume DIR`,
the report and `bionn-report DIR --watch` read it. Readers raise SweepFolderError
naming the folder and what is missing or wrong; nothing here deletes anything but
ended.json, once read.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bionn.io import atomic_write_json
from bionn.run_folder import FINAL_STATUSES, RunFolder, RunFolderError, ledger_excluded, now, read_json

SWEEP = "sweep.json"
ENDED_JOBS = "ended.json"
VERSION = 1


class SweepFolderError(ValueError):
    """A folder that is no sweep folder, or a sweep record that cannot be read; names the folder."""


class SweepRefused(SweepFolderError):
    """A (re-)launch whose job list or values differ from what the sweep folder holds."""


@dataclass(frozen=True)
class Job:
    """One job of the sweep: its number (stable across launches), overrides and run folder."""

    num: int
    overrides: tuple[str, ...]
    run_dir: str  # relative to the sweep folder

    def as_record(self) -> dict:
        return {"num": self.num, "overrides": list(self.overrides), "run_dir": self.run_dir}


class SweepFolder:
    """One sweep folder; every read and write of sweep.json goes through here."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return (self / SWEEP).exists()

    def record(self) -> dict:
        """sweep.json; SweepFolderError if the folder or the record is missing or unreadable."""
        if not self.path.is_dir():
            raise SweepFolderError(f"{self.path}: no such folder (expected a sweep folder holding {SWEEP})")
        try:
            record = read_json(self / SWEEP)
        except RunFolderError as err:
            raise SweepFolderError(
                f"{err}; the sweep's record cannot be read (nothing was changed)"
            ) from None
        if record is None:
            raise SweepFolderError(
                f"{self.path} is no sweep folder: it has no {SWEEP} (the record of the job list, "
                "written by the launcher; sweeps started before it cannot be resumed by name)"
            )
        problem = _record_problem(record)
        if problem:
            raise SweepFolderError(f"{self / SWEEP}: {problem} (hand-edited?); nothing was changed")
        return record

    def record_or_none(self) -> dict | None:
        return self.record() if self.exists() else None

    def jobs(self) -> list[Job]:
        return [_job(j) for j in self.record()["jobs"]]

    def run_folder(self, job: Job) -> RunFolder:
        return RunFolder(self.path / job.run_dir)

    def slurm_ids(self) -> dict[int, str]:
        """The latest Slurm (or local) job id of every job that was ever submitted."""
        ids: dict[int, str] = {}
        for launch in self.record()["launches"]:
            for array in launch.get("arrays", []):
                for num, job_id in array.get("job_ids", {}).items():
                    ids[int(num)] = str(job_id)
        return ids

    def last_launch(self) -> dict | None:
        launches = self.record()["launches"]
        return launches[-1] if launches else None

    def every_job_ended(self) -> bool:
        """True once every job of sweep.json has a run folder whose run ended (finished or failed)."""
        for job in self.jobs():
            run = self.run_folder(job)
            if not run.is_run() or run.status() not in FINAL_STATUSES:
                return False
        return True

    def take_ended(self) -> list[tuple[str, list[str], str]]:
        """(run folder, overrides, why) of every job this process noted (note_ended); ended.json removed.
        Notes of another process (one that ended before its report) are dropped with it."""
        notes = _ended_notes(self / ENDED_JOBS)
        (self / ENDED_JOBS).unlink(missing_ok=True)
        mine = [n for n in notes if (n.get("host"), n.get("pid")) == (socket.gethostname(), os.getpid())]
        return [(str(n["run_dir"]), [str(o) for o in n["overrides"]], str(n["why"])) for n in mine]

    # ---- writers -----------------------------------------------------------------

    def check_jobs(self, jobs: list[Job], sweep_overrides: list[str]) -> None:
        """SweepRefused naming each difference if this folder's record holds another job list."""
        record = self.record_or_none()
        if record is None:
            return
        differences = []
        if _deciding(record["sweep_overrides"]) != _deciding(sweep_overrides):
            differences.append(
                f"  the sweep's overrides: {' '.join(record['sweep_overrides']) or '(none)'} (recorded) -> "
                f"{' '.join(sweep_overrides) or '(none)'} (this run)"
            )
        recorded = {j.num: j for j in (_job(j) for j in record["jobs"])}
        for job in jobs:
            old = recorded.get(job.num)
            if old is None:
                continue
            if _deciding(old.overrides) != _deciding(job.overrides):
                differences.append(
                    f"  job #{job.num}: {' '.join(old.overrides)} (recorded) -> {' '.join(job.overrides)} "
                    "(this run)"
                )
            elif old.run_dir != job.run_dir:
                differences.append(f"  job #{job.num}: run folder {old.run_dir} (recorded) -> {job.run_dir}")
        if differences:
            raise SweepRefused(
                f"{self.path} holds another sweep ({self / SWEEP}); refusing to mix them, nothing was "
                "submitted:\n" + "\n".join(differences) + "\nRun the same command again to resume it "
                "(bionn-sweep resume DIR does), or sweep into another folder (hydra.sweep.dir=...)."
            )

    def record_launch(self, jobs: list[Job], sweep_overrides: list[str], command: dict, launch: dict) -> None:
        """Add this launch's jobs (new numbers only) and the launch itself to sweep.json."""
        record = self.record_or_none() or {
            "version": VERSION,
            "created": now(),
            "command": command,
            "sweep_overrides": list(sweep_overrides),
            "jobs": [],
            "launches": [],
        }
        known = {j["num"] for j in record["jobs"]}
        new = [j.as_record() for j in jobs if j.num not in known]
        record["jobs"] = sorted(record["jobs"] + new, key=lambda j: j["num"])
        launch = {"time": now(), "host": socket.gethostname(), "pid": os.getpid(), **launch}
        record["launches"].append(launch)
        atomic_write_json(self / SWEEP, record)

    def update_launch(self, **fields: Any) -> None:
        """Change the latest launch (e.g. its Slurm arrays, known once submitted)."""
        record = self.record()
        record["launches"][-1].update(fields)
        atomic_write_json(self / SWEEP, record)

    def note_ended(self, run_dir: Path | str, overrides: list[str], why: str) -> None:
        """Note in ended.json a job that ended without a result in its run folder `run_dir`, and why; the
        sweep report of this process shows it as failed (take_ended)."""
        note = {"run_dir": str(run_dir), "overrides": list(overrides), "why": why}
        note.update(host=socket.gethostname(), pid=os.getpid())
        atomic_write_json(self / ENDED_JOBS, [*_ended_notes(self / ENDED_JOBS), note])


def _deciding(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """The overrides that can change a result: those of LEDGER_EXCLUDED keys (verbosity, ...) left out."""
    return [o for o in overrides if not ledger_excluded(o.split("=", 1)[0].lstrip("+~"))]


def _job(record: dict) -> Job:
    return Job(int(record["num"]), tuple(str(o) for o in record["overrides"]), str(record["run_dir"]))


def _ended_notes(path: Path) -> list[dict]:
    """The notes of ended.json ([] without one); SweepFolderError if it is not what note_ended writes."""
    try:
        notes = read_json(path)
    except RunFolderError as err:
        raise SweepFolderError(str(err)) from None
    keys = {"run_dir", "overrides", "why"}
    if notes is not None and not (
        isinstance(notes, list) and all(isinstance(n, dict) and keys <= set(n) for n in notes)
    ):
        raise SweepFolderError(
            f"{path}: expected a list of {{run_dir, overrides, why}} objects (hand-edited?)"
        )
    return notes or []


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"expected a JSON object, found {type(record).__name__}"
    for key, kind in (("jobs", list), ("launches", list), ("sweep_overrides", list), ("command", dict)):
        if not isinstance(record.get(key), kind):
            return f"'{key}' must be a {kind.__name__}"
    for job in record["jobs"]:
        if not isinstance(job, dict) or not {"num", "overrides", "run_dir"} <= set(job):
            return f"every job needs 'num', 'overrides' and 'run_dir' (found {job!r})"
    return None
