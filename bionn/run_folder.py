"""The run folder: the one owner of its file names, statuses, records, readers and writers.

A run folder holds one configuration's training, across every attempt to run it
(a first start, a requeue, a re-run of the same command). Training, callbacks,
the sweep report and the launchers read and write it only through this module.

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

import csv
import datetime as _dt
import enum
import hashlib
import io
import json
import math
import os
import shutil
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bionn.io import atomic_write_bytes, atomic_write_json

HYDRA = ".hydra"
LEDGER = "ledger.json"
ATTEMPTS = "attempts.json"
INFO = "info.json"
HISTORY = "history.csv"
FINAL = "final_results.json"
ERROR = "error.json"
BACKUP = "backup"
BACKUP_STATE = "state.json"
MODEL = "model.keras"
STATISTICS = "statistics.npz"  # the normalisation statistics the network was trained with
BEST = "best"  # the best validation epoch's weights: state.json names the epoch and the file
# Raw features -> labels, self-contained (bionn.nn.inference): from the best or the last epoch's weights.
INFERENCE = {"best": "inference_best.keras", "last": "inference_last.keras"}
EVALUATION_PREFIX = "evaluation_"  # evaluation_<name>.json: bionn-evaluate on another dataset
CHECKPOINTS = "checkpoints"
PLOTS = "plots"
TENSORBOARD = "tensorboard"
TRACKING = "mlflow.json"  # the MLflow run of this folder: store, experiment, run id (bionn.tracking)
PREVIOUS = "previous"
JOB_LOG = "train.log"  # Hydra's log of the job (hydra.job.name = train); it stays open while the job runs
# A folder holding any of these is a run folder (Hydra creates the folder first, then bionn writes these).
MARKERS = (HYDRA, LEDGER, ATTEMPTS, INFO, HISTORY, FINAL)

# The data engine's version sits in the ledger beside the config: other samples, another run.
ENGINE_KEY = "engine_version"
# Config keys that cannot change a run's result; a re-run may change them freely (docs/results.md).
LEDGER_EXCLUDED = (
    "training.verbose",
    "training.save_interval",
    "runtime.stats_cache_dir",
    "runtime.on_config_change",
    "logger",  # with every key under it: where metrics go besides the run folder
)


def ledger_excluded(key: str) -> bool:
    """A flattened or an override's key that cannot change a result: in LEDGER_EXCLUDED or under it."""
    return any(key == e or key.startswith(f"{e}.") for e in LEDGER_EXCLUDED)


class Status(enum.StrEnum):
    """What a run folder says about its run."""

    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    NAN = "nan"  # the loss became NaN or infinite: training stopped
    PRUNED = "pruned"  # a hyperparameter search stopped this trial early (bionn.search)
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # signalled, requeued, killed: it resumes when run again
    RUNNING = "running"


FINISHED = frozenset({Status.COMPLETED, Status.EARLY_STOPPED, Status.NAN, Status.PRUNED})
FINAL_STATUSES = FINISHED | {Status.FAILED}


class Outcome(enum.StrEnum):
    """How one attempt ended (None in the record while it runs)."""

    COMPLETED = "completed"  # wrote final_results.json (status completed, early_stopped, nan or pruned)
    INTERRUPTED = "interrupted"
    FAILED = "failed"


class RunFolderError(ValueError):
    """A record in a run folder that cannot be read or is not what bionn writes; names the file."""


class ConfigChanged(RunFolderError):
    """A run into a folder that holds another configuration's run."""


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def read_json(path: Path) -> Any:
    """The JSON value in `path`, None if it does not exist; RunFolderError if it cannot be parsed."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise RunFolderError(f"{path}: unreadable ({err})") from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise RunFolderError(f"{path}: not valid JSON ({err})") from None


def _require_dict(path: Path, value: Any) -> dict | None:
    if value is not None and not isinstance(value, dict):
        raise RunFolderError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


# ---- history.csv ----------------------------------------------------------------------


def parse_history(text: str) -> list[dict[str, float]]:
    """history.csv rows: {"epoch": 0.0, "loss": ..., ...}; empty cells become NaN."""
    rows = list(csv.DictReader(io.StringIO(text)))
    parsed = []
    for number, row in enumerate(rows, start=1):
        if None in row:
            raise ValueError(f"row {number} has more cells than the header")
        parsed.append({k: float(v) if v not in (None, "") else math.nan for k, v in row.items()})
    return parsed


def format_history(rows: list[dict[str, float]]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (int(v) if k == "epoch" else v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def history_columns(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    """Metric name -> values over epochs (the epoch column left out)."""
    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if k != "epoch"]
    return {k: [row.get(k, math.nan) for row in rows] for k in keys}


# ---- the ledger -------------------------------------------------------------------------


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"training.compile.learning_rate": 0.001, "model.layers.0.filters": 32, ...}; empty dicts and
    lists stay as values, so two configs differ exactly where a flattened key differs."""
    if isinstance(value, dict | list) and value:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        flat: dict[str, Any] = {}
        for key, sub in items:
            flat.update(flatten(sub, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def result_config(config: dict) -> dict[str, Any]:
    """The flattened config less LEDGER_EXCLUDED: everything that decides the result."""
    return {k: v for k, v in flatten(config).items() if not ledger_excluded(k)}


def fingerprint(config: dict, engine_version: int | None | str = "current") -> str:
    """Hash of the result-deciding config and the data engine's version: this bionn's ("current"), or
    a ledger's (None: a ledger of a bionn that did not record it)."""
    if engine_version == "current":
        engine_version = engine_version_now()
    result = result_config(config)
    if engine_version is not None:
        result[ENGINE_KEY] = engine_version
    text = json.dumps(result, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def engine_version_now() -> int:
    """This bionn's data engine version (imported here, not at the top: reading a run folder loads no
    data code, tests/test_config_layering.py)."""
    from bionn.data import ENGINE_VERSION

    return ENGINE_VERSION


def config_differences(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every result-deciding key that differs; a missing key is None."""
    a, b = result_config(old), result_config(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


# ---- attempts ---------------------------------------------------------------------------


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunFolder:
    """One run folder; every read and write of its files goes through here."""

    path: Path
    _attempt: dict | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def is_run(self) -> bool:
        return self.path.is_dir() and any((self.path / m).exists() for m in MARKERS)

    # ---- readers -------------------------------------------------------------------

    def final(self) -> dict | None:
        final = _require_dict(self / FINAL, read_json(self / FINAL))
        if final is not None and final.get("status") not in {s.value for s in FINAL_STATUSES}:
            allowed = ", ".join(s.value for s in FINAL_STATUSES)
            raise RunFolderError(f"{self / FINAL}: status {final.get('status')!r} is not one of {allowed}")
        return final

    def info(self) -> dict | None:
        return _require_dict(self / INFO, read_json(self / INFO))

    def error(self) -> dict | None:
        return _require_dict(self / ERROR, read_json(self / ERROR))

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
        for path in self.path.glob("results_epoch_*.json"):
            number = path.stem.removeprefix("results_epoch_")
            if number.isdigit():
                found.append((int(number), path))
        return sorted(found)

    def ledger(self) -> dict | None:
        path = self / LEDGER
        ledger = _require_dict(path, read_json(path))
        if ledger is None:
            return None
        if not isinstance(ledger.get("config"), dict) or not isinstance(ledger.get("fingerprint"), str):
            raise RunFolderError(f"{path}: needs a 'fingerprint' string and a 'config' object (hand-edited?)")
        if fingerprint(ledger["config"], ledger.get(ENGINE_KEY)) != ledger["fingerprint"]:
            raise RunFolderError(
                f"{path}: its fingerprint does not match its config (hand-edited?); "
                "restore it or run into another folder"
            )
        return ledger

    def attempts(self) -> list[dict]:
        path = self / ATTEMPTS
        record = _require_dict(path, read_json(path))
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

    def committed_epoch(self) -> int:
        """The epoch the backup would resume at (0 without one)."""
        state = self.backup_state()
        return int(state["epoch"]) if state else 0

    def backup_state(self) -> dict | None:
        return _require_dict(self / BACKUP / BACKUP_STATE, read_json(self / BACKUP / BACKUP_STATE))

    def evaluations(self) -> dict[str, dict]:
        """{name: evaluation} of every evaluation_<name>.json (bionn-evaluate), by name."""
        found = {}
        for path in sorted(self.path.glob(f"{EVALUATION_PREFIX}*.json")):
            found[path.stem.removeprefix(EVALUATION_PREFIX)] = _require_dict(path, read_json(path))
        return found

    def best_state(self) -> dict | None:
        """best/state.json: {"epoch", "val_loss", "weights"} of the best validation epoch so far."""
        return _require_dict(self / BEST / BACKUP_STATE, read_json(self / BEST / BACKUP_STATE))

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
        if outcome == Outcome.INTERRUPTED or (outcome is None and _dead_here(last)):
            return Status.INTERRUPTED
        if outcome == Outcome.FAILED:
            return Status.FAILED
        return Status.RUNNING

    # ---- writers -------------------------------------------------------------------

    def write_json(self, name: str, value: Any) -> Path:
        return atomic_write_json(self / name, value)

    def write_history(self, rows: list[dict[str, float]]) -> None:
        atomic_write_bytes(self / HISTORY, format_history(rows).encode())

    def write_hydra(self, files: dict[str, str]) -> None:
        """.hydra/<name> for every name -> YAML text (config.yaml, hydra.yaml, overrides.yaml)."""
        for name, text in files.items():
            atomic_write_bytes(self / HYDRA / name, text.encode())

    def check_ledger(self, config: dict) -> dict | None:
        """The ledger if it holds exactly `config`'s result-deciding keys, None if there is none;
        ConfigChanged naming every differing key otherwise."""
        ledger = self.ledger()
        if ledger is None or ledger["fingerprint"] == fingerprint(config):
            return ledger
        lines = [
            f"  {k}: {_show(old)} (in the folder) -> {_show(new)} (this run)"
            for k, old, new in config_differences(ledger["config"], config)
        ]
        if ledger.get(ENGINE_KEY) != engine_version_now():
            lines.append(
                f"  data engine version (bionn.data.ENGINE_VERSION): {_show(ledger.get(ENGINE_KEY))} (in the "
                f"folder) -> {engine_version_now()} (this bionn): the same config now generates other samples"
            )
        raise ConfigChanged(
            f"{self.path} holds a run of another config ({self / LEDGER}); refusing to mix them:\n"
            + "\n".join(lines)
            + "\nEither run into another folder (hydra.run.dir=..., or hydra.sweep.dir=... for a sweep), or "
            f"add runtime.on_config_change=move_aside to move the folder's contents into "
            f"{self / PREVIOUS}/<n>/ (nothing is deleted) and start afresh."
        )

    def write_ledger(self, config: dict, superseded: dict | None = None) -> None:
        """The ledger of `config`. superseded: the ledger it replaces, kept inside the new one (a config
        whose attempts never committed an epoch, bionn.train.claim)."""
        record = {
            "fingerprint": fingerprint(config),
            ENGINE_KEY: engine_version_now(),
            "excluded_keys": list(LEDGER_EXCLUDED),
            "created": now(),
            "config": {k: v for k, v in config.items()},
        }
        if superseded is not None:
            earlier = superseded.get("superseded") or []
            record["superseded"] = [*earlier, {k: v for k, v in superseded.items() if k != "superseded"}]
        self.write_json(LEDGER, record)

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

    def begin_attempt(self, slurm: dict | None, start_epoch: int | None = None) -> dict:
        """Append this process's attempt to attempts.json. An earlier attempt that never recorded its end
        (killed, out of memory, node failure) is closed as interrupted. A failure left by an earlier
        attempt (error.json, a failed final_results.json) is removed: its record keeps it."""
        from bionn.provenance import provenance

        attempts = self.attempts()
        for attempt in attempts:
            if attempt.get("outcome") is None:
                _close_unrecorded(attempt)
        final = self.final()
        if final is not None and final["status"] == Status.FAILED:
            (self / FINAL).unlink()
        (self / ERROR).unlink(missing_ok=True)
        self._attempt = {
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
        self._write_attempts([*attempts, self._attempt])
        return self._attempt

    def end_requeued_attempt(self, job_id: str, number: int) -> dict | None:
        """Close attempt `number` as interrupted (unrecorded_end says why) if it is still the last one, never
        recorded its end and ran as Slurm job `job_id`, which the caller saw waiting in the queue again
        after reading that attempt: Slurm requeued the job (its node was lost, or a requeue killed it), so
        no process of it writes here until it starts again, seconds later at the least. Returns the closed
        attempt, else None. (The job's next start would close it too; this says so while the job waits,
        e.g. for a lost node to come back.)"""
        from bionn.slurm import attempt_job_id

        attempts = self.attempts()
        last = attempts[-1] if attempts else None
        if (
            last is None
            or last.get("number") != number
            or last.get("outcome") is not None
            or attempt_job_id(last.get("slurm")) != job_id
        ):
            return None
        _close_unrecorded(last)
        self._write_attempts(attempts)
        return last

    def update_attempt(self, **fields: Any) -> None:
        """Change this process's attempt record (written at once: a kill may follow)."""
        assert self._attempt is not None, "begin_attempt first"
        self._attempt.update(fields)
        attempts = self.attempts()
        attempts[self._attempt["number"] - 1] = self._attempt
        self._write_attempts(attempts)

    def note_signal(self, name: str) -> None:
        """Record a signal at once as the attempt's end (interrupted, by the attempt's first signal: a
        preemption's SIGUSR2 is followed by the requeue's SIGTERM): the process may be killed, or crash,
        before it can say more. If it goes on instead (submitit ignores SIGTERM and trains until Slurm's
        KillWait ends), its later end replaces this record."""
        if self._attempt is not None:
            signals = [*self._attempt["signals"], name]
            self.update_attempt(
                signals=signals,
                outcome=Outcome.INTERRUPTED.value,
                reason=f"interrupted by {signals[0]}",
                ended=now(),
                end_epoch=self.committed_epoch_or_history(),
            )

    def end_attempt(self, outcome: Outcome, **fields: Any) -> None:
        if self._attempt is None:
            return
        fields.setdefault("reason", None)  # an earlier note_signal's reason no longer applies
        self.update_attempt(
            outcome=outcome.value, ended=now(), end_epoch=self.committed_epoch_or_history(), **fields
        )

    def committed_epoch_or_history(self) -> int:
        """Epochs this folder holds: the backup's commit while it exists, else history.csv's rows."""
        return self.committed_epoch() or len(self.history_rows())

    def _write_attempts(self, attempts: list[dict]) -> None:
        self.write_json(ATTEMPTS, {"attempts": attempts})


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


def _close_unrecorded(attempt: dict) -> None:
    attempt.update(outcome=Outcome.INTERRUPTED.value, ended=None, reason=unrecorded_end(attempt))


def _dead_here(attempt: dict) -> bool:
    """An unfinished attempt whose process no longer exists on this host."""
    pid = attempt.get("pid")
    return attempt.get("host") == socket.gethostname() and isinstance(pid, int) and not process_alive(pid)


def _show(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value)


def find_runs(root: Path) -> list[RunFolder]:
    """Run folders at or under root in natural order (2 before 10); hidden and previous/ folders skipped."""
    import re

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
