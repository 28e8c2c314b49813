"""Rendering a sweep report: the table (terminal, summary.md), summary.csv, summary.png and the --watch
screen of a sweep's jobs."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from bionn.io import figure, write_figure
from bionn.report.read import BASELINE, JobState, JobSummary, is_number
from bionn.report.repeats import repeat_groups
from bionn.run_folder import ERROR, FINAL, Status

# ---- tables -------------------------------------------------------------------------


def metric_columns(jobs: list[JobSummary]) -> list[str]:
    """Test metric names with a scalar value in some job, in order of appearance (lists are left out)."""
    names: dict[str, None] = {}
    for job in jobs:
        for key, value in job.test.items():
            if value is None or is_number(value):
                names.setdefault(key, None)
    return list(names)


def common_overrides(jobs: list[JobSummary]) -> list[str]:
    """The overrides every run shares (left out of their labels); none with fewer than two runs."""
    runs = [job for job in jobs if job.status != BASELINE]
    if len(runs) < 2:
        return []
    shared = set(runs[0].overrides).intersection(*(set(j.overrides) for j in runs[1:]))
    return [o for o in runs[0].overrides if o in shared]


def table(jobs: list[JobSummary], drop_overrides: list[str] = ()) -> tuple[list[str], list[list[str]]]:
    """Headers and text cells of the summary table (one row per job)."""
    metrics = metric_columns(jobs)
    headers = ["job", "overrides", "status", "epochs", "train time (s)", "best val_loss"]
    headers += [f"test {short_name(m)}" for m in metrics]
    rows = []
    for job in jobs:
        overrides = " ".join(o for o in job.overrides if o not in drop_overrides)
        status = job.status + (f" ({job.restarts} restart(s))" if job.restarts else "")
        cells = [job.job, overrides or "-", status, _cell(job.epochs), _cell(job.training_time_s, 1)]
        cells += [_cell(job.best_val_loss)] + [_cell(job.test.get(m)) for m in metrics]
        rows.append(cells)
    return headers, rows


def short_name(metric: str) -> str:
    """Initials for names of three words or more (mean_absolute_error -> mae); others unchanged."""
    words = metric.split("_")
    return "".join(w[0] for w in words if w) if len(words) >= 3 else metric


def job_label(job: JobSummary, drop_overrides: list[str] = (), width: int = 45) -> str:
    """The job's name and the overrides that set it apart, for plot labels."""
    own = " ".join(o.rsplit(".", 1)[-1] for o in job.overrides if o not in drop_overrides)
    label = f"{job.job}: {own}" if own else job.job
    return label if len(label) <= width else label[: width - 3] + "..."


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table, its columns padded to their widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(c.replace("|", "\\|").ljust(w) for c, w in zip(cells, widths, strict=True))
            + " |"
        )

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def render_markdown(root: Path, jobs: list[JobSummary], notes: list[str] = ()) -> str:
    """summary.md and what the terminal shows: counts, the table, failures, what could not be read."""
    runs = [j for j in jobs if j.status != BASELINE]
    counts: dict[str, int] = {}
    for job in runs:
        counts[job.status] = counts.get(job.status, 0) + 1
    common = common_overrides(jobs)
    parts = [
        f"# Sweep summary: {root}",
        "",
        f"{len(runs)} job(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()),
    ]
    if common:
        parts.append(f"Overrides common to all jobs: `{' '.join(common)}`")
    parts += ["", markdown_table(*table(jobs, common))]
    short = {short_name(m): m for m in metric_columns(jobs) if short_name(m) != m}
    if short:
        parts += ["", "Columns: " + ", ".join(f"{k} = {v}" for k, v in short.items())]
    sources = {j.test_source for j in runs if j.test_source and j.test_source != FINAL}
    if sources:
        parts += ["", "Test metrics of unfinished jobs come from their latest " + ", ".join(sorted(sources))]
    parts += render_evaluations(runs)
    parts += render_repeats(runs)
    failed = [j for j in runs if j.status == Status.FAILED]
    if failed:
        parts += ["", "## Failed jobs", ""]
        parts += [f"- {j.job}: {j.error or 'no error message'} (see {j.path / ERROR})" for j in failed]
    interrupted = [j for j in runs if j.status == Status.INTERRUPTED]
    if interrupted:
        parts += ["", "## Interrupted jobs (the same command resumes them)", ""]
        parts += [f"- {j.job}: {j.interruption}; {j.restarts} restart(s) so far" for j in interrupted]
    unread = [(j.job, p) for j in runs for p in j.problems] + [("report", n) for n in notes]
    if unread:
        parts += ["", "## Could not read", ""] + [f"- {name}: {problem}" for name, problem in unread]
    return "\n".join(parts) + "\n"


def render_evaluations(jobs: list[JobSummary]) -> list[str]:
    """Lines of the section on bionn-evaluate's results (none without any)."""
    rows = []
    for job in jobs:
        for name, result in job.evaluations.items():
            reference = result.get("reference") or {}
            rows.append(
                [
                    job.job,
                    name,
                    str(result.get("which", "-")),
                    _cell(result.get("samples")),
                    _cell(result.get("r2_mean")),
                    _cell(result.get("r_squared")),
                    _cell(reference.get("ridge_r2_mean")),
                    _cell(reference.get("ceiling_r2_mean")),
                ]
            )
    if not rows:
        return []
    headers = ["job", "evaluation", "weights", "samples", "r2_mean", "r_squared", "ridge r2_mean", "ceiling"]
    return [
        "",
        "## Evaluations on other datasets (bionn-evaluate, test split)",
        "",
        markdown_table(headers, rows),
    ]


def render_repeats(jobs: list[JobSummary]) -> list[str]:
    """Lines of the section on repeats (bionn.report.repeats; none without a group): mean +- std."""
    groups = repeat_groups(jobs)
    if not groups:
        return []
    metrics = list(dict.fromkeys(k for g in groups for k in g.metrics()))
    headers = ["overrides", "n", "seeds", *(short_name(m.removeprefix("test_")) for m in metrics)]
    rows = []
    for group in groups:
        values = group.metrics()
        cells = [" ".join(group.overrides) or "-", str(len(group.jobs)), " ".join(group.seeds)]
        cells += [f"{_cell(values[m][0])} +- {_cell(values[m][1])}" if m in values else "-" for m in metrics]
        rows.append(cells)
    return [
        "",
        "## Repeats (runs differing only in runtime.seed): mean +- std over seeds",
        "",
        markdown_table(headers, rows),
        "",
        "best_val_loss, then the test metrics; std: the sample standard deviation; also in repeats.csv "
        "and repeats.png",
    ]


def render_csv(jobs: list[JobSummary]) -> str:
    """Every field of every job; list-valued test metrics get one column per element."""
    columns: dict[str, None] = {}
    records = []
    for job in jobs:
        record: dict[str, Any] = {
            "job": job.job,
            "overrides": " ".join(job.overrides),
            "status": job.status,
            "restarts": job.restarts,
            "interruption": job.interruption or "",
            "epochs": job.epochs,
            "training_time_s": job.training_time_s,
            "best_val_loss": job.best_val_loss,
        }
        for key, value in job.test.items():
            if isinstance(value, list):
                record.update({f"test_{key}_{i}": v for i, v in enumerate(value)})
            else:
                record[f"test_{key}"] = value
        record["error"] = job.error or ""
        record["unreadable"] = "; ".join(job.problems)
        records.append(record)
        columns.update(dict.fromkeys(record))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in records)
    return buffer.getvalue()


# ---- plot ---------------------------------------------------------------------------


def write_summary_png(jobs: list[JobSummary], path: Path) -> None:
    """summary.png at `path`: test R-squared per job (bars) beside the validation-loss curves of all jobs."""
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = figure(ncols=2, figsize=(13, max(4.0, 0.35 * len(jobs) + 1.5)))
    common = common_overrides(jobs)
    labels, values, names = [], [], set()
    for job in jobs:
        r2 = job.test_r2()
        labels.append(f"{job_label(job, common)} [{job.status}]")
        values.append(r2[1] if r2 else 0.0)
        if r2:
            names.add(r2[0])
        left.text(values[-1], len(labels) - 1, f" {r2[1]:.3f}" if r2 else " n/a", va="center", fontsize=8)
    colors = ["tab:gray" if j.status == BASELINE else "tab:blue" if j.test_r2() else "white" for j in jobs]
    left.barh(range(len(jobs)), values, color=colors)
    left.set_yticks(range(len(jobs)), labels, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("test " + (" / ".join(sorted(names)) or "R-squared"))
    left.set_title("test R-squared per job")
    left.grid(axis="x", alpha=0.3)
    curves = [j for j in jobs if j.val_loss]
    for job in curves:
        epochs = range(1, len(job.val_loss) + 1)
        right.plot(epochs, job.val_loss, marker="o", markersize=3, label=job_label(job, common))
    finite = [v for j in curves for v in j.val_loss if math.isfinite(v)]
    if finite and min(finite) > 0:
        right.set_yscale("log")
    right.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    right.set_xlim(0.5, max([len(j.val_loss) for j in curves], default=1) + 0.5)
    right.set_xlabel("epoch")
    right.set_ylabel("val_loss")
    right.set_title("validation loss")
    right.grid(alpha=0.3)
    if curves and len(curves) <= 20:
        right.legend(fontsize=7)
    fig.tight_layout()
    write_figure(fig, path)


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if digits < 4 else f"{value:.4g}"
    return str(value)


def render_watch(root: Path, states: list[JobState], cluster_answers: bool, when: str) -> str:
    """The --watch screen: one line per job with its state, and the counts."""
    counts: dict[str, int] = {}
    for state in states:
        counts[state.state] = counts.get(state.state, 0) + 1
    common = set.intersection(*(set(s.overrides) for s in states)) if len(states) > 1 else set()
    rows = [
        [
            f"#{s.num}",
            " ".join(o for o in s.overrides if o not in common) or "-",
            s.job_id or "-",
            s.state,
            s.detail or "",
        ]
        for s in states
    ]
    source = "run folders and squeue" if cluster_answers else "run folders (no answer from squeue)"
    head = f"# Sweep {root} at {when} ({source})"
    summary = f"{len(states)} job(s): " + ", ".join(f"{n} {s}" for s, n in counts.items())
    headers = ["job", "overrides", "job id", "state", "detail"]
    return "\n".join([head, summary, "", markdown_table(headers, rows)])
