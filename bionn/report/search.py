"""Reading a search folder (one holding search.json) for the report: the search's record and its study's
trials as TrialRow, best first, in a SearchSummary (rendered by search_render.py, watched by search_watch.py).

The study is read through bionn.search.folder, the trials' run folders through
bionn.run_folder. Like the rest of the report this never raises on what it reads: an
unreadable search.json, study journal or run folder becomes a note naming the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bionn.run_folder import RunFolder, RunFolderError
from bionn.search.folder import JOURNAL, OVERRIDES, OWNER, RUN_DIR, SEARCH, STUDY_NAME, TRIALS, SearchFolder
from bionn.search.space import Param, SearchError, parse_param

# Optuna's trial states as the report names them, in the order trials without a value are listed
STATES = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}


@dataclass
class TrialRow:
    """One trial of the study as the report shows it."""

    number: int
    state: str
    value: float | None  # complete: its objective; pruned: its last reported value (value_epoch)
    value_epoch: int | None  # pruned: the epoch (step) of that last reported value
    params: dict[str, Any]
    epochs: int | None  # rows of the run folder's history.csv
    run_dir: str  # relative to the sweep folder
    worker: int | None
    overrides: list[str] = field(default_factory=list)
    error: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def pruned_value(self) -> bool:
        """True for a pruned trial shown with its last reported value."""
        return self.state == "pruned" and self.value is not None


@dataclass
class SearchSummary:
    """What a search folder says: the search's record and its trials, best first; notes on what failed."""

    root: Path
    record: dict | None
    metric: str = "objective"
    direction: str = "maximize"
    n_trials: int | None = None
    n_workers: int | None = None
    params: dict[str, Param] = field(default_factory=dict)
    trials: list[TrialRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> TrialRow | None:
        """The best complete trial, None before one completes."""
        complete = [t for t in self.trials if t.state == "complete" and t.value is not None]
        return complete[0] if complete else None  # trials are sorted best first

    def counts(self) -> dict[str, int]:
        """How many trials are in each state, e.g. {"complete": 3, "running": 1}."""
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.state] = counts.get(trial.state, 0) + 1
        return counts


def is_search(root: Path) -> bool:
    """True when `root` holds a search (its search.json)."""
    return SearchFolder(root).is_search()


def read_search(root: Path) -> SearchSummary:
    """The search in `root`: its record (search.json), its trials (study.journal) and their run folders."""
    folder = SearchFolder(root)
    summary = SearchSummary(root=Path(root), record=None)
    try:
        summary.record = folder.record()
    except SearchError as err:
        summary.notes.append(str(err))
    record = summary.record or {}
    spec = record.get("spec") if isinstance(record.get("spec"), dict) else {}
    objective = spec.get("objective") if isinstance(spec.get("objective"), dict) else {}
    summary.metric = str(objective.get("metric") or summary.metric)
    summary.direction = str(objective.get("direction") or summary.direction)
    summary.n_trials = record.get("n_trials") if isinstance(record.get("n_trials"), int) else None
    summary.n_workers = record.get("n_workers") if isinstance(record.get("n_workers"), int) else None
    for key, text in (spec.get("params") or {}).items() if isinstance(spec.get("params"), dict) else []:
        try:
            summary.params[str(key)] = parse_param(str(key), text, str(folder / SEARCH))
        except SearchError as err:
            summary.notes.append(str(err))
    try:
        trials = folder.trials()
    except Exception as err:  # a torn or foreign journal: Optuna's replay raises anything
        summary.notes.append(_journal_problem(folder, err))
        trials = []
    if not trials and not summary.notes:
        what = "no study yet" if not (folder / JOURNAL).exists() else f"no trial in its study {STUDY_NAME!r}"
        summary.notes.append(f"{folder / JOURNAL}: {what}")
    rows = [_trial_row(folder, trial) for trial in trials]
    summary.trials = sort_trials(rows, summary.direction)
    return summary


def sort_trials(rows: list[TrialRow], direction: str) -> list[TrialRow]:
    """Complete trials best first (by direction), then every other trial by number."""
    sign = -1.0 if direction == "maximize" else 1.0
    valued = [r for r in rows if r.state == "complete" and r.value is not None and math.isfinite(r.value)]
    rest = [r for r in rows if r not in valued]
    return sorted(valued, key=lambda r: (sign * r.value, r.number)) + sorted(rest, key=lambda r: r.number)


def _trial_row(folder: SearchFolder, trial: Any) -> TrialRow:
    attrs = trial.user_attrs or {}
    state = STATES.get(trial.state.name, trial.state.name.lower())
    value, epoch = trial.value, None
    if state == "pruned" and trial.intermediate_values:
        epoch = max(trial.intermediate_values)
        value = trial.intermediate_values[epoch]
    run_dir = str(attrs.get(RUN_DIR) or Path(TRIALS) / str(trial.number))
    if RUN_DIR not in attrs and not (folder.path / run_dir).exists():
        run_dir = "-"  # a waiting trial: no worker has taken it yet
    row = TrialRow(
        number=trial.number,
        state=state,
        value=float(value) if isinstance(value, int | float) else None,
        value_epoch=epoch,
        params=dict(trial.params),
        epochs=None,
        run_dir=run_dir,
        worker=attrs.get(OWNER) if isinstance(attrs.get(OWNER), int) else None,
        overrides=[str(o) for o in attrs.get(OVERRIDES) or []],
        error=str(attrs.get("error") or ""),
    )
    run = RunFolder(folder.path / run_dir)
    if run_dir != "-" and run.path.is_dir():
        try:
            row.epochs = len(run.history_rows())
        except RunFolderError as err:
            row.problems.append(str(err).replace(f"{folder.path}/", ""))
    return row


def _journal_problem(folder: SearchFolder, err: Exception) -> str:
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    if str(folder / JOURNAL) in message:
        return message
    return f"{folder / JOURNAL}: the study cannot be read ({type(err).__name__}: {message})"
