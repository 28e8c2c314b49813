"""The run folder: the one owner of its file names, statuses, records, readers and writers.

A run folder holds one configuration's training, across every attempt to run it
(a first start, a requeue, a re-run of the same command). Training, callbacks,
the sweep report and the launchers read and write it only through this package: names (file
names, statuses), records (JSON readers, errors), ledger, attempts, history (CSV) and pids.

    .hydra/              the composed config, overrides and Hydra's config (written by bionn.train)
    ledger.json          the fingerprint of everything that decides the result: the config (LEDGER_EXCLUDED
                         left out) and the data engine's version
    attempts.json        every start: time, host, pid, Slurm ids, provenance, epochs, and how it ended
    info.json            data, parameters, provenance (bionn.provenance) and devices of the latest attempt
    history.csv          one row per finished epoch
    results_epoch_N.json, checkpoints/model_epoch_N.keras   every save_interval epochs
    backup/              the resume point (state.json names the epoch and the weights file)
    statistics.npz       the normalisation statistics (written at every start)
    best/                the best validation epoch's weights (state.json names the epoch and the file)
    model.keras, final_results.json, plots/                  at the end
    inference_best.keras, inference_last.keras               at the end: raw features -> labels
    evaluation_<name>.json                                   bionn-evaluate on another dataset
    mlflow.json          the MLflow run that tracks this folder (logger=mlflow; bionn.tracking)
    error.json           the current failure (also kept in that attempt's record)
    previous/<n>/        what a run with another config left, moved aside (never deleted)

Readers raise RunFolderError naming the file and what is wrong; the report turns
those into notes. Nothing here deletes a record it cannot read.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bionn.io import atomic_write_bytes, atomic_write_json
from bionn.run_folder.attempts import AttemptLog, close_unrecorded, read_attempts
from bionn.run_folder.history import format_history, history_columns, parse_history
from bionn.run_folder.ledger import (
    check_ledger,
    fingerprint,
    ledger_excluded,
    ledger_record,
    read_ledger,
    result_config,
)
from bionn.run_folder.names import (
    ATTEMPTS,
    BACKUP,
    BEST,
    CHECKPOINTS,
    ERROR,
    EVALUATION_PREFIX,
    FINAL,
    FINAL_STATUSES,
    FINISHED,
    HISTORY,
    HYDRA,
    INFERENCE,
    INFO,
    JOB_LOG,
    LEDGER,
    MARKERS,
    MODEL,
    PLOTS,
    PREVIOUS,
    RESULTS_PREFIX,
    STATISTICS,
    TENSORBOARD,
    TRACKING,
    Outcome,
    Status,
)
from bionn.run_folder.pids import dead_here, process_alive
from bionn.run_folder.records import ConfigChanged, RunFolderError, StateFolder, now, read_json, read_object

__all__ = [
    "ATTEMPTS",
    "BACKUP",
    "ERROR",
    "EVALUATION_PREFIX",
    "FINAL",
    "FINAL_STATUSES",
    "FINISHED",
    "HISTORY",
    "HYDRA",
    "INFERENCE",
    "INFO",
    "LEDGER",
    "MARKERS",
    "MODEL",
    "PLOTS",
    "STATISTICS",
    "TENSORBOARD",
    "TRACKING",
    "ConfigChanged",
    "Outcome",
    "RunFolder",
    "RunFolderError",
    "StateFolder",
    "Status",
    "find_runs",
    "finished_validation_loss",
    "fingerprint",
    "format_history",
    "ledger_excluded",
    "now",
    "parse_history",
    "process_alive",
    "read_json",
    "remove_backup",
    "result_config",
]


@dataclass
class RunFolder:
    """One run folder; every read and write of its files goes through here. Its collaborators: the
    ledger (bionn.run_folder.ledger), this process's attempt (`attempt_log`), the resume point
    (`backup`) and the best epoch's weights (`best`)."""

    path: Path
    attempt_log: AttemptLog = field(init=False, repr=False, compare=False)
    backup: StateFolder = field(init=False, repr=False, compare=False)
    best: StateFolder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.attempt_log = AttemptLog(self.path, self.committed_epoch_or_history)
        self.backup = StateFolder(self.path / BACKUP)
        self.best = StateFolder(self.path / BEST)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def is_run(self) -> bool:
        return self.path.is_dir() and any((self.path / m).exists() for m in MARKERS)

    # ---- readers -------------------------------------------------------------------

    def final(self) -> dict | None:
        final = read_object(self / FINAL)
        if final is not None and final.get("status") not in {s.value for s in FINAL_STATUSES}:
            allowed = ", ".join(s.value for s in FINAL_STATUSES)
            raise RunFolderError(f"{self / FINAL}: status {final.get('status')!r} is not one of {allowed}")
        return final

    def info(self) -> dict | None:
        return read_object(self / INFO)

    def error(self) -> dict | None:
        return read_object(self / ERROR)

    def history_rows(self) -> list[dict[str, float]]:
        path = self / HISTORY
        try:
            return parse_history(path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as err:
            raise RunFolderError(f"{path}: unreadable ({err})") from None

    def history(self) -> dict[str, list[float]]:
        return history_columns(self.history_rows())

    def periodic_results(self) -> list[tuple[int, Path]]:
        """(epoch, path) of every results_epoch_N.json, in epoch order."""
        found = []
        for path in self.path.glob(f"{RESULTS_PREFIX}*.json"):
            number = path.stem.removeprefix(RESULTS_PREFIX)
            if number.isdigit():
                found.append((int(number), path))
        return sorted(found)

    def ledger(self) -> dict | None:
        return read_ledger(self.path)

    def attempts(self) -> list[dict]:
        return read_attempts(self.path)

    def committed_epoch(self) -> int:
        """The epoch the backup would resume at (0 without one)."""
        state = self.backup.state()
        return int(state["epoch"]) if state else 0

    def committed_epoch_or_history(self) -> int:
        """Epochs this folder holds: the backup's commit while it exists, else history.csv's rows."""
        return self.committed_epoch() or len(self.history_rows())

    def evaluations(self) -> dict[str, dict]:
        """{name: evaluation} of every evaluation_<name>.json (bionn-evaluate), by name."""
        found = {}
        for path in sorted(self.path.glob(f"{EVALUATION_PREFIX}*.json")):
            found[path.stem.removeprefix(EVALUATION_PREFIX)] = read_object(path)
        return found

    def status(self) -> Status:
        """completed / early_stopped / nan / pruned / failed from final_results.json; otherwise from the
        attempts: interrupted when the last attempt ended so (or its process is gone from this host), else
        running."""
        final = self.final()
        attempts = self.attempts()
        last = attempts[-1] if attempts else None
        if final is not None and (last is None or last.get("outcome") is not None):
            return Status(final["status"])
        if last is None:
            return Status.FAILED if self.error() else Status.RUNNING
        outcome = last.get("outcome")
        if outcome == Outcome.INTERRUPTED or (outcome is None and dead_here(last)):
            return Status.INTERRUPTED
        if outcome == Outcome.FAILED:
            return Status.FAILED
        return Status.RUNNING

    # ---- writers -------------------------------------------------------------------

    def write_json(self, name: str, value: Any) -> Path:
        return atomic_write_json(self / name, value)

    def write_history(self, rows: list[dict[str, float]]) -> None:
        atomic_write_bytes(self / HISTORY, format_history(rows).encode())

    def checkpoint(self, epoch: int) -> Path:
        """Where the model of the periodic results after `epoch` epochs goes."""
        return self / CHECKPOINTS / f"model_epoch_{epoch}.keras"

    def write_periodic_results(self, epoch: int, results: dict) -> None:
        self.write_json(f"{RESULTS_PREFIX}{epoch}.json", results)

    def write_hydra(self, files: dict[str, str]) -> None:
        """.hydra/<name> for every name -> YAML text (config.yaml, hydra.yaml, overrides.yaml)."""
        for name, text in files.items():
            atomic_write_bytes(self / HYDRA / name, text.encode())

    def check_ledger(self, config: dict) -> dict | None:
        """The ledger if it holds exactly `config`'s result-deciding keys, None if there is none;
        ConfigChanged naming every differing key otherwise."""
        return check_ledger(self.path, config)

    def write_ledger(self, config: dict, superseded: dict | None = None) -> None:
        """The ledger of `config`. superseded: the ledger it replaces, kept inside the new one (a config
        whose attempts never committed an epoch, bionn.train.claim)."""
        self.write_json(LEDGER, ledger_record(config, superseded))

    def move_aside(self) -> Path:
        """Move everything but previous/ and Hydra's open job log into previous/<n>/; returns that folder."""
        previous = self / PREVIOUS
        number = 1 + max((int(p.name) for p in previous.glob("*") if p.name.isdigit()), default=0)
        target = previous / str(number)
        target.mkdir(parents=True)
        for entry in sorted(self.path.iterdir()):
            if entry.name not in (PREVIOUS, JOB_LOG):
                os.replace(entry, target / entry.name)
        return target

    # ---- this process's attempt (bionn.run_folder.attempts) -------------------------

    def begin_attempt(self, slurm: dict | None, start_epoch: int | None = None) -> dict:
        """Append this process's attempt to attempts.json. An earlier attempt that never recorded its end
        (killed, out of memory, node failure) is closed as interrupted. A failure left by an earlier
        attempt (error.json, a failed final_results.json) is removed: its record keeps it."""
        attempts = self.attempts()
        for attempt in attempts:
            if attempt.get("outcome") is None:
                close_unrecorded(attempt)
        final = self.final()
        if final is not None and final["status"] == Status.FAILED:
            (self / FINAL).unlink()
        (self / ERROR).unlink(missing_ok=True)
        return self.attempt_log.begin(slurm, start_epoch, attempts)

    def end_requeued_attempt(self, job_id: str, number: int) -> dict | None:
        """Close attempt `number` as interrupted (unrecorded_end says why) if it is still the last one, never
        recorded its end and ran as Slurm job `job_id`, which the caller saw waiting in the queue again
        after reading that attempt: Slurm requeued the job (its node was lost, or a requeue killed it), so
        no process of it writes here until it starts again, seconds later at the least. Returns the closed
        attempt, else None. (The job's next start would close it too; this says so while the job waits,
        e.g. for a lost node to come back.)"""
        return self.attempt_log.end_requeued(job_id, number)

    def update_attempt(self, **fields: Any) -> None:
        """Change this process's attempt record (written at once: a kill may follow)."""
        self.attempt_log.update(**fields)

    def note_signal(self, name: str) -> None:
        """Record a signal at once as the attempt's end (interrupted, by the attempt's first signal: a
        preemption's SIGUSR2 is followed by the requeue's SIGTERM): the process may be killed, or crash,
        before it can say more. If it goes on instead (submitit ignores SIGTERM and trains until Slurm's
        KillWait ends), its later end replaces this record."""
        self.attempt_log.note_signal(name)

    def end_attempt(self, outcome: Outcome, **fields: Any) -> None:
        self.attempt_log.end(outcome, **fields)


def find_runs(root: Path) -> list[RunFolder]:
    """Run folders at or under root in natural order (2 before 10); hidden and previous/ folders skipped."""

    def natural(path: Path) -> list:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]

    root = Path(root)
    folder = RunFolder(root)
    if folder.is_run():
        return [folder]
    found: list[RunFolder] = []
    children: Iterable[Path] = sorted(root.iterdir(), key=natural) if root.is_dir() else []
    for child in children:
        if child.is_dir() and not child.name.startswith(".") and child.name != PREVIOUS:
            found += find_runs(child)
    return found


def remove_backup(folder: RunFolder) -> None:
    """Once final_results.json marks the run finished, its resume point is no longer needed."""
    shutil.rmtree(folder / BACKUP, ignore_errors=True)


def finished_validation_loss(final: dict) -> float:
    """What a finished run hands to Hydra (its sweeper minimises it): the validation loss of its
    final_results.json `final`; infinity where it has none."""
    loss = ((final.get("evaluation") or {}).get("validation") or {}).get("loss")
    return float("inf") if loss is None else float(loss)
