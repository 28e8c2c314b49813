"""Watching a search (`bionn-report DIR --watch` on a search folder): each worker's state from its
worker.json, the sweep's record and squeue, the table of trials with their progress, and when it ended."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bionn.report.read import progress, quiet
from bionn.report.render import markdown_table
from bionn.report.search import SearchSummary
from bionn.report.search_render import value_text
from bionn.run_folder import RunFolder
from bionn.search.folder import WORKERS, SearchFolder
from bionn.search.schema import SearchConf
from bionn.search.space import SearchError
from bionn.slurm import DEAD, QUEUED
from bionn.sweep_folder import SweepFolder, SweepFolderError


@dataclass
class WorkerState:
    """What --watch shows of one worker job: its state, its trial, and whether it can still work."""

    index: int
    state: str
    trial: int | None = None
    job_id: str | None = None
    detail: str = ""
    active: bool = False  # alive, or waiting in the queue to start (again)


def launched_on_cluster(root: Path) -> bool:
    """False when the search's latest launch was local (squeue knows nothing of its workers)."""
    try:
        sweep = SweepFolder(root)
        return not sweep.exists() or (sweep.last_launch() or {}).get("launcher") != "local"
    except SweepFolderError:
        return True


def worker_states(root: Path, n_workers: int, queue: dict[str, str] | None) -> list[WorkerState]:
    """Every worker of the search in `root`, from workers/<i>/worker.json and, where the cluster answers,
    `queue` ({job id: squeue state}; None when there is no answer)."""
    folder = SearchFolder(root)
    try:
        ids = SweepFolder(root).slurm_ids() if SweepFolder(root).exists() else {}
    except SweepFolderError:
        ids = {}
    dead_after_s = _dead_after_s(folder)
    queue = queue if launched_on_cluster(root) else None
    # a re-launch may have asked for fewer workers than an earlier one left in workers/
    found = [int(p.name) + 1 for p in (folder / WORKERS).glob("*") if p.name.isdigit()]
    return [
        _worker_state(folder, index, ids.get(index), queue, dead_after_s)
        for index in range(max([n_workers, *found]))
    ]


def _dead_after_s(folder: SearchFolder) -> float:
    """The search's own dead_after_s (search.json of a search begun before it was recorded: the default)."""
    try:
        return float((folder.record() or {}).get("dead_after_s", SearchConf.dead_after_s))
    except (SearchError, TypeError, ValueError):
        return SearchConf.dead_after_s


def _worker_state(
    folder: SearchFolder, index: int, job_id: str | None, queue: dict[str, str] | None, dead_after_s: float
) -> WorkerState:
    """Worker `index`'s state from its worker.json, its heartbeat and its job's squeue state."""
    queued = queue.get(job_id) if (queue is not None and job_id) else None
    record = folder.worker_record(index)
    state = WorkerState(index, "unknown", job_id=job_id)
    if record is None:
        if queued in QUEUED or queued in ("RUNNING", "COMPLETING"):
            state.state, state.active = ("pending" if queued in QUEUED else "starting"), True
        elif queued in DEAD:
            state.state, state.detail = "never started", DEAD[queued]
        else:
            state.state, state.active = "not started", queue is None
            state.detail = "no worker.json yet" + ("" if queue is None else "; not in the queue")
    elif record.get("stopped"):
        state.state = "stopped"
        state.detail = f"stopped {record['stopped']}; trained trial(s) {_numbers(record.get('trials'))}"
    elif folder.worker_alive(index, dead_after_s):
        state.state, state.active, state.trial = "alive", True, record.get("trial")
        state.detail = f"host {record.get('host')}, heartbeat {record.get('heartbeat')}"
    elif queued in QUEUED:
        state.state, state.active = "requeued", True
        state.detail = f"waiting to run again (squeue: {queued})"
    else:
        state.state, state.trial = "dead", record.get("trial")
        why = f" (squeue: {queued})" if queued else ""
        state.detail = f"last heartbeat {record.get('heartbeat')}{why}; a live worker resumes its trial"
    return state


def watch_lines(summary: SearchSummary) -> tuple[list[str], list[list[str]]]:
    """The --watch table of trials: state, value or epoch progress, worker, run folder."""
    rows = []
    for t in summary.trials:
        run = RunFolder(summary.root / t.run_dir)
        if t.state == "running" and t.run_dir != "-":
            detail = progress(run) if run.path.is_dir() else "starting"
            status = quiet(run.status) if run.is_run() else None
            if status is not None and status.value == "interrupted":
                detail = f"interrupted at {t.epochs or 0} epoch(s); resumes when a worker takes it"
        elif t.state == "failed":
            detail = t.error[:100]
        else:
            detail = value_text(t) if t.value is not None else ""
            if t.epochs is not None:
                detail += f" after {t.epochs} epoch(s)"
        worker = "-" if t.worker is None else str(t.worker)
        rows.append([str(t.number), t.state, worker, detail.strip(), t.run_dir])
    return ["trial", "state", "worker", f"{summary.metric} / progress", "run folder"], rows


def render_search_watch(
    summary: SearchSummary, workers: list[WorkerState], cluster_answers: bool, when: str
) -> str:
    """The --watch screen: the trials and the workers at `when`; cluster_answers: squeue answered."""
    source = "the study, worker.json and squeue" if cluster_answers else "the study and worker.json"
    counts = summary.counts()
    of = f" of {summary.n_trials}" if summary.n_trials is not None else ""
    parts = [
        f"# Search {summary.root} at {when} ({source})",
        f"{len(summary.trials)}{of} trial(s): "
        + (", ".join(f"{n} {s}" for s, n in counts.items()) or "none"),
        "",
        markdown_table(*watch_lines(summary)),
        "",
        markdown_table(
            ["worker", "job id", "state", "trial", "detail"],
            [
                [str(w.index), w.job_id or "-", w.state, "-" if w.trial is None else str(w.trial), w.detail]
                for w in workers
            ],
        ),
    ]
    if summary.notes:
        parts += ["", "## Could not read", ""] + [f"- search: {n}" for n in summary.notes]
    return "\n".join(parts)


def search_ended(summary: SearchSummary, workers: list[WorkerState]) -> bool:
    """True once the study has n_trials ended trials and none running, or no worker can go on."""
    ended = [t for t in summary.trials if t.state in ("complete", "pruned", "failed")]
    running = [t for t in summary.trials if t.state == "running"]
    if summary.n_trials is not None and len(ended) >= summary.n_trials and not running:
        return True
    return bool(workers) and not any(w.active for w in workers)


def _numbers(values: Any) -> str:
    """The worker's trials as a list of numbers, "none" without one."""
    return ", ".join(str(v) for v in values) if isinstance(values, list) and values else "none"
