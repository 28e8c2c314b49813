"""Reading a sweep: one JobSummary per run folder (through bionn.run_folder only), the --watch state of
each recorded job of a sweep folder, and the baseline rows.

Any file may be missing, half-written by a job still running, corrupt or
hand-edited: such problems become `problems` of the job, never an exception.
`ridge_baseline` is the report's one door to the data engine (bionn.baseline loads bionn.data and Numba).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bionn.run_folder import (
    FINAL,
    FINAL_STATUSES,
    FINISHED,
    HISTORY,
    HYDRA,
    Outcome,
    RunFolder,
    RunFolderError,
    Status,
    find_runs,
    read_json,
)
from bionn.search.folder import SEARCH
from bionn.slurm import DEAD, QUEUED
from bionn.sweep_folder import SweepFolder, SweepFolderError

# A baseline provider maps a composed dataset config (a dict) and the run's statistics cache
# folder (None: the default) to test metrics {"r2_mean": ..., ...}, or None when it has none.
BaselineProvider = Callable[[dict, "str | None"], "dict | None"]
BASELINE = "baseline"  # the status of a baseline row (not a run)
NOT_STARTED = "not started"  # a job of the sweep's record (sweep.json) without a run folder


@dataclass
class JobSummary:
    """What one run folder says about its job; `problems` lists what could not be read."""

    job: str
    path: Path
    status: str
    overrides: list[str] = field(default_factory=list)
    epochs: int | None = None
    training_time_s: float | None = None
    best_val_loss: float | None = None
    test: dict[str, Any] = field(default_factory=dict)
    test_source: str = ""
    val_loss: list[float] = field(default_factory=list)
    dataset: dict | None = None
    stats_cache_dir: str | None = None
    restarts: int = 0  # attempts after the first (requeues, re-runs after an interruption)
    interruption: str | None = None  # how the last interrupted attempt ended, e.g. "interrupted by SIGUSR2"
    error: str | None = None
    evaluations: dict[str, dict] = field(default_factory=dict)  # bionn-evaluate's, by name
    problems: list[str] = field(default_factory=list)

    def test_r2(self) -> tuple[str, float] | None:
        """The test R-squared the plot shows: r2_mean (per-output, averaged) when present, else R_squared."""
        for name in ("r2_mean", "r_squared"):
            for key, value in self.test.items():
                if key.lower() == name and is_number(value):
                    return key, float(value)
        return None


def read_job(folder: RunFolder, root: Path) -> JobSummary:
    """Summarise one run folder; never raises on missing or unreadable files."""
    path = folder.path
    problems: list[str] = []

    def load(reader: Callable[[], Any], default: Any = None) -> Any:
        try:
            return reader()
        except (OSError, ValueError) as err:  # RunFolderError is a ValueError
            problems.append(_problem(path, err))
            return default

    name = str(path.relative_to(root)) if path != root else path.name
    final = load(folder.final) or {}
    attempts = load(folder.attempts, [])
    history = load(folder.history, {})
    info = load(folder.info) or {}
    overrides = load(lambda: read_yaml(path / HYDRA / "overrides.yaml"))
    if overrides is None and not (path / HYDRA / "overrides.yaml").exists():
        problems.append(f"{HYDRA}/overrides.yaml: missing (overrides unknown)")
    status = load(folder.status)

    job = JobSummary(job=name, path=path, status=str(status or "unknown"), problems=problems)
    slurm = info.get("slurm") if isinstance(info.get("slurm"), dict) else {}
    job.restarts = max(len(attempts) - 1, 0) if attempts else int(slurm.get("restart_count") or 0)
    interrupted = [a for a in attempts if a.get("outcome") == Outcome.INTERRUPTED]
    if status == Status.INTERRUPTED:
        job.interruption = interrupted[-1].get("reason") if interrupted else "ended without a record"
    job.overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    job.val_loss = list(history.get("val_loss", []))
    job.epochs = final.get("epochs_completed", len(job.val_loss) if history else None)
    job.training_time_s = final.get("training_time_s")
    finite = [v for v in job.val_loss if math.isfinite(v)]
    # A failed or unfinished job has no best_val_loss of its own: take it from history.csv.
    job.best_val_loss = final.get("best_val_loss") if "best_val_loss" in final else min(finite, default=None)
    if status == Status.FAILED:
        job.error = _failure_message(load(folder.error) or {}, final, attempts)
    if isinstance(final.get("evaluation"), dict):
        job.test, job.test_source = _final_test(final), FINAL
    elif status not in FINISHED:
        job.test, job.test_source = _latest_periodic_test(folder, problems)
    config = info.get("config")
    if config is None:
        config = load(lambda: read_yaml(path / HYDRA / "config.yaml"))
    job.dataset = config.get("dataset") if isinstance(config, dict) else None
    runtime = (config or {}).get("runtime") if job.dataset else None
    job.stats_cache_dir = runtime.get("stats_cache_dir") if isinstance(runtime, dict) else None
    job.evaluations = load(folder.evaluations, {}) or {}
    if status in (Status.RUNNING, Status.INTERRUPTED) and not history:
        problems.append("history.csv: missing (no epoch finished yet)")
    job.problems = list(dict.fromkeys(problems))  # a file read by two readers is named once
    return job


def _failure_message(error: dict, final: dict, attempts: list[dict]) -> str | None:
    """A failed job's message: error.json's, else final_results.json's, else its last failed attempt's."""
    failed = [a for a in attempts if a.get("outcome") == Outcome.FAILED]
    return (
        error.get("message") or final.get("error") or ((failed or [{}])[-1].get("error") or {}).get("message")
    )


def _final_test(final: dict) -> dict[str, Any]:
    """The test metrics of final_results.json and, beside the run's r2_mean, its label's ceiling and,
    when cached, the ridge baseline."""
    test = dict(final["evaluation"].get("test") or {})
    reference = final.get("reference") if isinstance(final.get("reference"), dict) else {}
    for key in ("ceiling_r2", "ridge_r2"):
        if f"{key}_mean" in reference:
            test[key] = reference[f"{key}_mean"]
    return test


def collect(root: Path) -> list[JobSummary]:
    """Every run folder under root; in a sweep folder also every recorded job that has none yet (not in a
    search folder: its recorded jobs are the workers, its runs the trials)."""
    root = Path(root)
    jobs = [read_job(folder, root) for folder in find_runs(root)]
    try:
        sweep = SweepFolder(root)
        recorded = sweep.jobs() if sweep.exists() and not (root / SEARCH).exists() else []
    except SweepFolderError as err:
        jobs.append(JobSummary(job=SWEEP_NAME, path=root, status="unknown", problems=[str(err)]))
        recorded = []
    seen = {job.path for job in jobs}
    for job in recorded:
        folder = sweep.run_folder(job)
        if folder.path not in seen:
            summary = JobSummary(job=job.run_dir, path=folder.path, status=NOT_STARTED)
            summary.overrides = list(job.overrides)
            summary.problems = ["no run folder: the job has not started (pending, cancelled, not submitted)"]
            jobs.append(summary)
    return sorted(jobs, key=lambda j: natural(j.job))


SWEEP_NAME = "sweep.json"


def natural(name: str) -> list:
    """A sort key that orders numbers in a name by value (job 2 before job 10)."""
    import re

    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]


# ---- watching a sweep -----------------------------------------------------------------------

OK = {Status.COMPLETED.value, Status.EARLY_STOPPED.value, Status.PRUNED.value}


@dataclass
class JobState:
    """What --watch shows of one job: its state, a detail, and whether it has ended for good."""

    num: int
    run_dir: str
    overrides: list[str]
    job_id: str | None
    state: str
    detail: str = ""
    ended: bool = False

    @property
    def ok(self) -> bool:
        return self.state in OK


def watch_states(root: Path, queue: dict[str, str] | None) -> list[JobState]:
    """Every recorded job of the sweep folder `root`, from its run folder and, where the cluster answers,
    `queue` ({job id: squeue state}; None when there is no answer). SweepFolderError without a record."""
    sweep = SweepFolder(root)
    jobs = sweep.jobs()
    ids = sweep.slurm_ids()
    launch = sweep.last_launch() or {}
    local = launch.get("launcher") == "local"
    return [_job_state(sweep.run_folder(j), j, ids.get(j.num), None if local else queue) for j in jobs]


def _job_state(folder: RunFolder, job: Any, job_id: str | None, queue: dict[str, str] | None) -> JobState:
    state = JobState(job.num, job.run_dir, list(job.overrides), job_id, "unknown")
    queued = queue.get(job_id) if (queue is not None and job_id) else None
    try:
        status = folder.status() if folder.is_run() and folder.attempts() else None
    except (RunFolderError, OSError) as err:
        state.detail = f"unreadable: {err}"
        return state
    if status in FINAL_STATUSES:
        state.state, state.ended = status.value, True
        if status == Status.FAILED:
            error = quiet(folder.error) or {}
            state.detail = str(error.get("message") or "")[:120]
        return state
    if job_id is None:
        state.state, state.ended = "not submitted", True
        state.detail = "no launch submitted it (bionn-sweep resume DIR does)"
        return state
    if status is None:
        if queue is None:
            state.state = "pending"
            state.detail = "no run folder yet" + ("" if job_id is None else "; the cluster does not answer")
        elif queued in QUEUED or queued in ("RUNNING", "COMPLETING"):
            state.state = "pending" if queued in QUEUED else "starting"
        elif queued in DEAD:
            state.state, state.ended = _died(queued)
            state.detail = "never started"
        else:
            # Gone from the queue without a run folder: a job that never started can only have been
            # cancelled (squeue forgets a cancelled pending array task at once), unless its log says it ran.
            logs = sorted((folder.path.parent / ".submitit").rglob(f"{job_id}_*_log.err"))
            if logs:
                state.state, state.ended = _died(queued)
                state.detail = f"started but made no run folder; its log: {logs[-1]}"
            else:
                state.state, state.ended = "cancelled", True
                state.detail = "left the queue before it started"
        return state
    if status == Status.INTERRUPTED or (queue is not None and queued in QUEUED):
        attempts = quiet(folder.attempts) or []
        reason = next((a.get("reason") for a in reversed(attempts) if a.get("reason")), None) or "interrupted"
        if queue is not None and queued in QUEUED | {"RUNNING", "COMPLETING"}:
            state.state = "requeued"
            state.detail = f"{reason}; {'waiting to run again' if queued in QUEUED else 'starting again'}"
        elif queue is not None and queued in DEAD:
            state.state, state.ended = _died(queued)
            state.detail = reason
        else:
            state.state, state.ended = "interrupted", True
            state.detail = f"{reason}; not queued (bionn-sweep resume DIR resumes it)"
        return state
    if queue is not None and queued not in ("RUNNING", "COMPLETING", "COMPLETED"):
        state.state, state.ended = _died(queued)
        state.detail = "its last attempt never recorded an end"
        return state
    state.state = "running"
    state.detail = progress(folder)
    return state


def _died(queued: str | None) -> tuple[str, bool]:
    if queued == "CANCELLED":
        return "cancelled", True
    why = DEAD.get(queued or "", "no longer queued: cancelled, out of memory or node failure")
    return f"died without a trace ({why})", True


def progress(folder: RunFolder) -> str:
    """A running job's progress from its run folder, e.g. "epoch 3 of 10, last val_loss 0.0123"."""
    rows = quiet(folder.history_rows) or []
    config = (quiet(folder.ledger) or quiet(folder.info) or {}).get("config") or {}
    epochs = (config.get("training") or {}).get("epochs")
    if isinstance(epochs, int) and len(rows) >= epochs:
        text = f"{len(rows)} of {epochs} epochs done, finishing"
    else:
        text = f"epoch {len(rows) + 1} of {epochs if epochs is not None else '?'}"
    if rows and math.isfinite(rows[-1].get("val_loss", math.nan)):
        text += f", last val_loss {rows[-1]['val_loss']:.4g}"
    elif not (folder / HISTORY).exists():
        text += " (starting)"
    return text


def quiet(reader: Callable[[], Any]) -> Any:
    """What reader() returns, None when the file it reads is missing or unreadable."""
    try:
        return reader()
    except (RunFolderError, OSError):
        return None


def baseline_rows(jobs: list[JobSummary], provider: BaselineProvider | None) -> list[JobSummary]:
    """One row per distinct dataset of the jobs, from provider(dataset config, cache folder)."""
    if provider is None:
        return []
    rows, seen = [], set()
    for job in jobs:
        key = json.dumps([job.dataset, job.stats_cache_dir], sort_keys=True)
        if job.dataset is None or key in seen:
            continue
        seen.add(key)
        result = provider(job.dataset, job.stats_cache_dir)
        if result:
            name = f"baseline ({job.dataset.get('name', '?')})"
            rows.append(JobSummary(job=name, path=job.path, status=BASELINE, test=dict(result)))
    return rows


def ridge_baseline(dataset: dict, cache_dir: str | None) -> dict | None:
    """The ridge baseline of a dataset if `scripts/baseline_ridge.py` (or bench_accuracy) cached it; None
    otherwise (never fitted here). The one place the report loads the data engine (bionn.baseline, hence
    bionn.data and Numba), lazily: only for a report whose runs name a dataset, whose cache key needs it."""
    from omegaconf import OmegaConf

    from bionn.baseline import cached_baseline

    try:
        return cached_baseline(OmegaConf.create(dataset), cache_dir)
    except Exception:  # a dataset this version cannot read has no baseline row
        return None


def read_yaml(path: Path) -> Any:
    """The YAML file at path (None when missing); RunFolderError naming it when it is not valid YAML."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as err:
        raise RunFolderError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None


def _problem(path: Path, err: Exception) -> str:
    """What could not be read, with the file named relative to the run folder."""
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    message = message.replace(f"{path}/", "")
    return message if isinstance(err, RunFolderError) else f"unreadable ({type(err).__name__}: {message})"


def _latest_periodic_test(folder: RunFolder, problems: list[str]) -> tuple[dict, str]:
    """Test metrics of the newest results_epoch_N.json of an unfinished job, if any."""
    for _, file in reversed(folder.periodic_results()):
        try:
            return dict(read_json(file)["evaluation"]["test"]), file.name
        except (ValueError, KeyError, TypeError) as err:  # RunFolderError is a ValueError
            problems.append(f"{file.name}: unreadable ({type(err).__name__})")
    return {}, ""


def is_number(value: Any) -> bool:
    """True for an int or float (a bool is no number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
