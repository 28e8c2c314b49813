"""The report of a search folder (one holding search.json): its trials by objective, best.yaml, a plot.

    search.csv   one row per trial: complete trials best first (by the study's direction), then the
                 trials without a value (pruned, failed, running, waiting) by number
    best.yaml    the best complete trial as a primary config:
                 python train.py --config-dir <sweep folder> --config-name best [more overrides]
    search.png   the objective over trial number (best so far as a line) and against each parameter

The study is read through bionn.search.folder, the trials' run folders through
bionn.run_folder. Like the rest of the report this never raises on what it reads: an
unreadable search.json, study journal or run folder becomes a note naming the file.

best.yaml is `defaults: [train, override <group>: <option>..., _self_]` followed by the
trial's composed, unresolved config (trials/<n>/.hydra/config.yaml). The groups are the
trial's config-group choices: those of its own overrides, and those the search's config
(hparams_search/<name>) or an experiment made, as the trial's .hydra/hydra.yaml records them.
Only the hparams_search choice is left out (it would make the run a search again). Training
from it has the trial's ledger fingerprint: the same result-deciding config.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bionn.report.read import _progress, _quiet, _yaml
from bionn.report.render import markdown_table
from bionn.run_folder import HYDRA, RunFolder, RunFolderError
from bionn.search.folder import (
    JOURNAL,
    OVERRIDES,
    OWNER,
    RUN_DIR,
    SEARCH,
    STUDY_NAME,
    TRIALS,
    WORKERS,
    SearchFolder,
)
from bionn.search.space import Param, SearchError, parse_param

SEARCH_FILES = ("search.csv", "best.yaml", "search.png")
SEARCH_GROUP = "hparams_search"
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
        complete = [t for t in self.trials if t.state == "complete" and t.value is not None]
        return complete[0] if complete else None  # trials are sorted best first

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.state] = counts.get(trial.state, 0) + 1
        return counts


def is_search(root: Path) -> bool:
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


# ---- table and csv -------------------------------------------------------------------------


def value_text(row: TrialRow) -> str:
    if row.value is None:
        return "-"
    text = f"{row.value:.4g}"
    return f"{text} (pruned at epoch {row.value_epoch + 1})" if row.pruned_value else text


def trial_table(summary: SearchSummary) -> tuple[list[str], list[list[str]]]:
    keys = list(summary.params) or list(dict.fromkeys(k for t in summary.trials for k in t.params))
    headers = ["trial", "state", summary.metric, *keys, "epochs", "run folder"]
    rows = [
        [
            str(t.number),
            t.state,
            value_text(t),
            *(_param_text(t.params.get(k)) for k in keys),
            "-" if t.epochs is None else str(t.epochs),
            t.run_dir,
        ]
        for t in summary.trials
    ]
    return headers, rows


def render_search_markdown(summary: SearchSummary, best_in: Path | None = None) -> str:
    """The search's part of the report; best_in: the folder best.yaml was written in (None: not written)."""
    counts = summary.counts()
    of = f" of {summary.n_trials}" if summary.n_trials is not None else ""
    parts = [
        f"# Search: {summary.root}",
        "",
        f"Objective: {summary.metric} ({summary.direction}); {len(summary.trials)}{of} trial(s): "
        + (", ".join(f"{n} {s}" for s, n in counts.items()) or "none"),
    ]
    best = summary.best
    if best is not None:
        parts.append(f"Best: trial {best.number}, {summary.metric} = {best.value:.4g} ({best.run_dir})")
        if best_in is not None:
            parts.append(f"Its config: {Path(best_in) / 'best.yaml'}; train it again with")
            parts.append(f"    {best_command(best_in)} [more overrides]")
    parts += ["", markdown_table(*trial_table(summary))]
    if any(t.pruned_value for t in summary.trials):
        parts += ["", f"A pruned trial's {summary.metric} is its last reported (validation) value."]
    failed = [t for t in summary.trials if t.state == "failed"]
    if failed:
        parts += ["", "## Failed trials", ""]
        parts += [f"- trial {t.number}: {t.error or 'no error message'} ({t.run_dir})" for t in failed]
    unread = [(f"trial {t.number}", p) for t in summary.trials for p in t.problems]
    unread += [("search", n) for n in summary.notes]
    if unread:
        parts += ["", "## Could not read", ""] + [f"- {name}: {problem}" for name, problem in unread]
    return "\n".join(parts) + "\n"


def render_search_csv(summary: SearchSummary) -> str:
    """One row per trial, in the table's order; a column per searched key."""
    keys = list(summary.params) or list(dict.fromkeys(k for t in summary.trials for k in t.params))
    columns = ["number", "state", "objective", "objective_source", "metric", *keys]
    columns += ["epochs", "run_dir", "worker", "error", "unreadable"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for t in summary.trials:
        source = "final" if t.state == "complete" and t.value is not None else ""
        if t.pruned_value:
            source = f"last reported (epoch {t.value_epoch + 1})"
        cells = {
            "number": t.number,
            "state": t.state,
            "objective": "" if t.value is None else repr(t.value),
            "objective_source": source,
            "metric": summary.metric,
            **{k: t.params.get(k, "") for k in keys},
            "epochs": "" if t.epochs is None else t.epochs,
            "run_dir": t.run_dir,
            "worker": "" if t.worker is None else t.worker,
            "error": t.error,
            "unreadable": "; ".join(t.problems),
        }
        writer.writerow(cells)
    return buffer.getvalue()


def _param_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# ---- best.yaml ---------------------------------------------------------------------------


def best_command(root: Path) -> str:
    return f"python train.py --config-dir {Path(root).resolve()} --config-name best"


def render_best_yaml(summary: SearchSummary, out: Path | None = None) -> str:
    """best.yaml of the best complete trial; SearchError naming the file when its run folder cannot
    give it (no trial complete, no .hydra/config.yaml, no record of the config groups)."""
    best = summary.best
    if best is None:
        raise SearchError(f"{summary.root}: no complete trial yet, so no best.yaml")
    run = summary.root / best.run_dir
    config_file = run / HYDRA / "config.yaml"
    try:
        config_text = config_file.read_text()
        config = yaml.safe_load(config_text)
    except (OSError, yaml.YAMLError) as err:
        raise SearchError(f"{config_file}: unreadable ({type(err).__name__}), so no best.yaml") from None
    if not isinstance(config, dict) or "defaults" in config:
        raise SearchError(f"{config_file}: not a composed config (hand-edited?), so no best.yaml")
    overrides = best.overrides or _quiet(lambda: _yaml(run / HYDRA / "overrides.yaml")) or []
    defaults = ["train", *group_overrides(run, [str(o) for o in overrides]), "_self_"]
    header = [
        f"# The best trial of the search in {Path(summary.root).resolve()} (study {STUDY_NAME!r}, "
        f"written by bionn-report):",
        f"# trial {best.number}, {summary.metric} = {best.value!r} ({summary.direction}), "
        f"run folder {best.run_dir}",
        f"# its overrides: {' '.join(str(o) for o in overrides)}",
        f"# Train it again: {best_command(out or summary.root)} [more overrides]",
        "# Below the defaults: the trial's composed config (its .hydra/config.yaml, unresolved).",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump({"defaults": defaults}, sort_keys=False) + config_text


def group_overrides(run: Path, overrides: list[str]) -> list[str | dict]:
    """`override <group>: <option>` entries for the trial's config-group choices: its own group
    overrides, then the other groups its Hydra config chose (e.g. model: TR, chosen by the search's
    config), except hparams_search, Hydra's own groups and groups left empty (optional, null)."""
    hydra_file = run / HYDRA / "hydra.yaml"
    try:
        hydra_cfg = _yaml(hydra_file) or {}
    except RunFolderError as err:
        raise SearchError(f"{err}, so the trial's config groups are unknown; no best.yaml") from None
    runtime = ((hydra_cfg.get("hydra") or {}) if isinstance(hydra_cfg, dict) else {}).get("runtime")
    choices = runtime.get("choices") if isinstance(runtime, dict) else None
    if not isinstance(choices, dict):
        raise SearchError(
            f"{hydra_file}: no hydra.runtime.choices, so the trial's config groups are unknown; no best.yaml"
        )
    chosen = {str(k): v for k, v in choices.items()}
    appended = set()  # +group=option: a group train.yaml does not list is appended, not overridden
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") in chosen and not key.startswith("~"):
            chosen[key.lstrip("+")] = value
            if key.startswith("+"):
                appended.add(key.lstrip("+"))
    return [
        {group if group in appended else f"override {group}": option}
        for group, option in chosen.items()
        if group != SEARCH_GROUP and not group.startswith("hydra/") and option not in (None, "null")
    ]


# ---- search.png --------------------------------------------------------------------------

COLORS = {"complete": "tab:blue", "pruned": "tab:orange", "failed": "tab:red", "running": "tab:green"}


def render_search_png(summary: SearchSummary) -> bytes:
    """The objective over trial number (points per state, best so far as a line) and against each
    searched parameter (log x-axis for a log-scale one, one position per choice)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    params = summary.params or {k: None for t in summary.trials for k in t.params}
    panels = 1 + len(params)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    flat = list(axes.flat)
    valued = [t for t in summary.trials if t.value is not None and math.isfinite(t.value)]
    over = flat[0]
    for state, color in COLORS.items():
        points = [t for t in valued if t.state == state]
        if points:
            label = state + (" (last reported)" if state == "pruned" else "")
            over.scatter(
                [t.number for t in points], [t.value for t in points], color=color, label=label, s=25
            )
    complete = sorted((t for t in valued if t.state == "complete"), key=lambda t: t.number)
    if complete:
        pick = max if summary.direction == "maximize" else min
        best, xs, ys = None, [], []
        for t in complete:
            best = t.value if best is None else pick(best, t.value)
            xs.append(t.number)
            ys.append(best)
        last = max(t.number for t in summary.trials)
        if last > xs[-1]:  # the best so far holds up to the newest trial
            xs, ys = [*xs, last], [*ys, ys[-1]]
        over.step(xs, ys, where="post", color="black", linewidth=1, label="best so far")
    over.xaxis.set_major_locator(MaxNLocator(integer=True))
    over.set_xlabel("trial")
    over.set_ylabel(summary.metric)
    over.set_title(f"{summary.metric} over trials ({summary.direction})")
    over.grid(alpha=0.3)
    if valued:
        over.legend(fontsize=7)
    for ax, (key, param) in zip(flat[1:], params.items(), strict=False):
        _param_panel(ax, key, param, valued, summary.metric)
    for ax in flat[panels:]:
        ax.set_visible(False)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _param_panel(ax: Any, key: str, param: Param | None, trials: list[TrialRow], metric: str) -> None:
    points = [t for t in trials if key in t.params]
    choices = list(param.choices) if param is not None and param.kind == "choice" else None
    if choices is None and any(isinstance(t.params[key], str | bool) for t in points):
        choices = list(dict.fromkeys(t.params[key] for t in points))
    for state, color in COLORS.items():
        mine = [t for t in points if t.state == state]
        if not mine:
            continue
        xs = [choices.index(t.params[key]) if choices else t.params[key] for t in mine]
        ax.scatter(xs, [t.value for t in mine], color=color, s=25)
    if choices:
        ax.set_xticks(range(len(choices)), [str(c) for c in choices])
        ax.set_xlim(-0.5, len(choices) - 0.5)
    elif param is not None and param.log:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on a short range
    elif param is not None and param.kind == "int":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(key.rsplit(".", 1)[-1] if len(key) > 28 else key)
    ax.set_ylabel(metric)
    ax.set_title(key, fontsize=9)
    ax.grid(alpha=0.3)


# ---- writing -------------------------------------------------------------------------------


def write_search(root: Path, out: Path) -> str:
    """search.csv, best.yaml and search.png of the search in `root`, written into `out`; returns the
    markdown of the trials. A plot or best.yaml that cannot be made becomes a note, never an error."""
    from bionn.io import atomic_write_bytes

    summary = read_search(root)
    try:
        atomic_write_bytes(out / "search.png", render_search_png(summary))
    except Exception as err:  # a plot must not hide the table
        summary.notes.append(f"search.png not written ({type(err).__name__}: {err})")
    best_written = False
    if summary.best is not None:
        try:
            atomic_write_bytes(out / "best.yaml", render_best_yaml(summary, out).encode())
            best_written = True
        except SearchError as err:
            summary.notes.append(str(err))
    atomic_write_bytes(out / "search.csv", render_search_csv(summary).encode())
    return render_search_markdown(summary, out if best_written else None)


# ---- watching a search -------------------------------------------------------------------------


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
    from bionn.sweep_folder import SweepFolder, SweepFolderError

    try:
        sweep = SweepFolder(root)
        return not sweep.exists() or (sweep.last_launch() or {}).get("launcher") != "local"
    except SweepFolderError:
        return True


def worker_states(root: Path, n_workers: int, queue: dict[str, str] | None) -> list[WorkerState]:
    """Every worker of the search in `root`, from workers/<i>/worker.json and, where the cluster answers,
    `queue` ({job id: squeue state}; None when there is no answer)."""
    from bionn.slurm import DEAD, QUEUED
    from bionn.sweep_folder import SweepFolder, SweepFolderError
    from hydra_plugins.bionn_search.config import SearchConf

    folder = SearchFolder(root)
    try:
        ids = SweepFolder(root).slurm_ids() if SweepFolder(root).exists() else {}
    except SweepFolderError:
        ids = {}
    try:  # the search's own dead_after_s (search.json of a search begun before it was recorded: the default)
        dead_after_s = float((folder.record() or {}).get("dead_after_s", SearchConf.dead_after_s))
    except (SearchError, TypeError, ValueError):
        dead_after_s = SearchConf.dead_after_s
    queue = queue if launched_on_cluster(root) else None
    # a re-launch may have asked for fewer workers than an earlier one left in workers/
    found = [int(p.name) + 1 for p in (folder / WORKERS).glob("*") if p.name.isdigit()]
    states = []
    for index in range(max([n_workers, *found])):
        job_id = ids.get(index)
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
        states.append(state)
    return states


def watch_lines(summary: SearchSummary) -> tuple[list[str], list[list[str]]]:
    """The --watch table of trials: state, value or epoch progress, worker, run folder."""
    rows = []
    for t in summary.trials:
        run = RunFolder(summary.root / t.run_dir)
        if t.state == "running" and t.run_dir != "-":
            detail = _progress(run) if run.path.is_dir() else "starting"
            status = _quiet(run.status) if run.is_run() else None
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
    return ", ".join(str(v) for v in values) if isinstance(values, list) and values else "none"
