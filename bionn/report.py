"""Sweep report: one row per run folder under a run or multirun folder.

`bionn-report DIR` (or `python -m bionn.report DIR`) reads every run folder under
DIR and writes into DIR `summary.csv`, `summary.md` and `summary.png` (test
R-squared per job, validation-loss curves overlaid), and prints the table.
`SweepReport`, a Hydra callback listed in conf/train.yaml, does the same when a
multirun ends and then exits non-zero if any job failed.

Everything is read from disk (with submitit the jobs ran in other processes) and
any file may be missing, half-written by a job still running, or corrupt: such
problems become notes in the report, never an exception.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

from bionn.io import atomic_write_bytes

# Files whose presence makes a folder a run folder (Hydra writes .hydra/ first).
RUN_MARKERS = (".hydra", "info.json", "history.csv", "final_results.json")
FINISHED = ("completed", "early_stopped", "nan", "failed")
SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")
# A baseline provider maps a composed dataset config (a dict) and the run's statistics cache
# folder (None: the default) to test metrics {"r2_mean": ..., ...}, or None when it has none.
BaselineProvider = Callable[[dict, "str | None"], "dict | None"]


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
    restarts: int = 0
    error: str | None = None
    problems: list[str] = field(default_factory=list)

    def test_r2(self) -> tuple[str, float] | None:
        """The test R-squared the plot shows: r2_mean (per-output, averaged) when present, else R_squared."""
        for name in ("r2_mean", "r_squared"):
            for key, value in self.test.items():
                if key.lower() == name and _is_number(value):
                    return key, float(value)
        return None


# ---- reading ------------------------------------------------------------------------


def find_runs(root: Path) -> list[Path]:
    """Run folders at or under root, in natural order (2 before 10); hidden folders are skipped."""
    root = Path(root)
    if _is_run(root):
        return [root]
    found = []
    for child in sorted(root.iterdir(), key=_natural_key) if root.is_dir() else []:
        if child.is_dir() and not child.name.startswith("."):
            found += find_runs(child)
    return found


def read_job(path: Path, root: Path) -> JobSummary:
    """Summarise one run folder; never raises on missing or unreadable files."""
    problems: list[str] = []
    name = str(path.relative_to(root)) if path != root else path.name

    def load(relative: str, parse: Callable[[str], Any]) -> Any:
        file = path / relative
        if not file.exists():
            return None
        try:
            return parse(file.read_text())
        except (OSError, ValueError, yaml.YAMLError) as err:
            problems.append(f"{relative}: unreadable ({type(err).__name__}: {str(err).splitlines()[0]})")
            return None

    final = load("final_results.json", json.loads)
    info = load("info.json", json.loads)
    error = load("error.json", json.loads)
    overrides = load(".hydra/overrides.yaml", yaml.safe_load)
    history = load("history.csv", _parse_history)
    if overrides is None and not (path / ".hydra/overrides.yaml").exists():
        problems.append(".hydra/overrides.yaml: missing (overrides unknown)")

    slurm = (info or {}).get("slurm") if isinstance(info, dict) else None
    restarts = int((slurm or {}).get("restart_count") or 0) if isinstance(slurm, dict) else 0
    final_exists = (path / "final_results.json").exists()
    if isinstance(final, dict) and final.get("status") in FINISHED:
        status = final["status"]
    elif final_exists:
        status = "unknown"
        if final is not None:
            problems.append(f"final_results.json: status {final.get('status')!r} is not one of {FINISHED}")
    elif error is not None:
        status = "failed"
    else:
        status = "requeued" if restarts > 0 else "running"

    job = JobSummary(job=name, path=path, status=status, restarts=restarts, problems=problems)
    job.overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    job.val_loss = list((history or {}).get("val_loss", []))
    final = final if isinstance(final, dict) else {}
    job.epochs = final.get("epochs_completed", len(history["epoch"]) if history else None)
    job.training_time_s = final.get("training_time_s")
    finite = [v for v in job.val_loss if math.isfinite(v)]
    # A failed or unfinished job has no best_val_loss of its own: take it from history.csv.
    job.best_val_loss = final.get("best_val_loss") if "best_val_loss" in final else min(finite, default=None)
    job.error = (error or {}).get("message") if isinstance(error, dict) else None
    job.error = job.error or final.get("error")
    if isinstance(final.get("evaluation"), dict):
        job.test, job.test_source = dict(final["evaluation"].get("test") or {}), "final_results.json"
        reference = final.get("reference") if isinstance(final.get("reference"), dict) else {}
        # issue 16: the r2_mean of the label's ceiling and of the cached ridge, beside the run's r2_mean
        for key in ("ceiling_r2", "ridge_r2"):
            if f"{key}_mean" in reference:
                job.test[key] = reference[f"{key}_mean"]
    elif status not in FINISHED:
        job.test, job.test_source = _latest_periodic_test(path, problems)
    config = (info or {}).get("config") if isinstance(info, dict) else None
    if config is None:
        config = load(".hydra/config.yaml", yaml.safe_load)
    job.dataset = config.get("dataset") if isinstance(config, dict) else None
    runtime = (config or {}).get("runtime") if job.dataset else None
    job.stats_cache_dir = runtime.get("stats_cache_dir") if isinstance(runtime, dict) else None
    if status in ("running", "requeued") and not (path / "history.csv").exists():
        problems.append("history.csv: missing (no epoch finished yet)")
    return job


def collect(root: Path) -> list[JobSummary]:
    root = Path(root)
    return [read_job(path, root) for path in find_runs(root)]


def baseline_rows(jobs: list[JobSummary], provider: BaselineProvider | None) -> list[JobSummary]:
    """One row per distinct dataset of the jobs, from provider(dataset config, cache folder).

    A provider returns test metrics (e.g. {"r2_mean": ..., "r2_per_output": [...]}) or
    None; write_report uses `ridge_baseline` unless told otherwise.
    """
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
            rows.append(JobSummary(job=name, path=job.path, status="baseline", test=dict(result)))
    return rows


# ---- tables -------------------------------------------------------------------------


def metric_columns(jobs: list[JobSummary]) -> list[str]:
    """Test metric names with a scalar value in some job, in order of appearance (lists are left out)."""
    names: dict[str, None] = {}
    for job in jobs:
        for key, value in job.test.items():
            if value is None or _is_number(value):
                names.setdefault(key, None)
    return list(names)


def common_overrides(jobs: list[JobSummary]) -> list[str]:
    runs = [job for job in jobs if job.status != "baseline"]
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
        status = job.status + (f" ({job.restarts} requeue(s))" if job.restarts else "")
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
    runs = [j for j in jobs if j.status != "baseline"]
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
    sources = {j.test_source for j in runs if j.test_source and j.test_source != "final_results.json"}
    if sources:
        parts += ["", "Test metrics of unfinished jobs come from their latest " + ", ".join(sorted(sources))]
    failed = [j for j in runs if j.status == "failed"]
    if failed:
        parts += ["", "## Failed jobs", ""]
        parts += [f"- {j.job}: {j.error or 'no error message'} (see {j.path / 'error.json'})" for j in failed]
    unread = [(j.job, p) for j in runs for p in j.problems] + [("report", n) for n in notes]
    if unread:
        parts += ["", "## Could not read", ""] + [f"- {name}: {problem}" for name, problem in unread]
    return "\n".join(parts) + "\n"


def render_csv(jobs: list[JobSummary]) -> str:
    """Every field of every job; list-valued test metrics get one column per element."""
    columns: dict[str, None] = {}
    records = []
    for job in jobs:
        record: dict[str, Any] = {
            "job": job.job,
            "overrides": " ".join(job.overrides),
            "status": job.status,
            "requeues": job.restarts,
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


def render_png(jobs: list[JobSummary]) -> bytes:
    """Test R-squared per job (bars) beside the validation-loss curves of all jobs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, max(4.0, 0.35 * len(jobs) + 1.5)))
    common = common_overrides(jobs)
    labels, values, names = [], [], set()
    for job in jobs:
        r2 = job.test_r2()
        labels.append(f"{job_label(job, common)} [{job.status}]")
        values.append(r2[1] if r2 else 0.0)
        if r2:
            names.add(r2[0])
        left.text(values[-1], len(labels) - 1, f" {r2[1]:.3f}" if r2 else " n/a", va="center", fontsize=8)
    colors = ["tab:gray" if j.status == "baseline" else "tab:blue" if j.test_r2() else "white" for j in jobs]
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
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


# ---- writing ------------------------------------------------------------------------


def ridge_baseline(dataset: dict, cache_dir: str | None) -> dict | None:
    """The ridge baseline of a dataset if `scripts/baseline_ridge.py` (or bench_accuracy) cached it."""
    from omegaconf import OmegaConf

    from bionn.baseline import cached_baseline

    try:
        return cached_baseline(OmegaConf.create(dataset), cache_dir)
    except Exception:  # a dataset this version cannot read has no baseline row
        return None


def write_report(
    root: Path, out: Path | None = None, baseline: BaselineProvider | None = ridge_baseline
) -> tuple[list[JobSummary], str]:
    """Read every run under root, write summary.{csv,md,png} into out (default root).

    Returns the jobs (model runs, then baseline rows) and the markdown text.
    """
    root, out = Path(root), Path(out or root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder (expected a run or multirun folder)")
    runs = collect(root)
    jobs = runs + baseline_rows(runs, baseline)
    notes: list[str] = []
    if not runs:
        notes.append(f"no run folder under {root} (none holds any of {', '.join(RUN_MARKERS)})")
    try:
        atomic_write_bytes(out / "summary.png", render_png(jobs))
    except Exception as err:  # a plot must not hide the table
        notes.append(f"summary.png not written ({type(err).__name__}: {err})")
    text = render_markdown(root, jobs, notes)
    atomic_write_bytes(out / "summary.csv", render_csv(jobs).encode())
    atomic_write_bytes(out / "summary.md", text.encode())
    return jobs, text


class SweepReport(Callback):
    """Hydra callback: when a multirun ends, write and print the sweep report; exit 1 if a job failed.

    In a multirun whose callbacks include this one, bionn.train.run records a failed
    job (error.json, final_results.json) and returns, so the other jobs still run.
    """

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            jobs, text = write_report(sweep_dir)
        except Exception as err:
            print(
                f"bionn-report: could not report on {sweep_dir}: {type(err).__name__}: {err}", file=sys.stderr
            )
            raise SystemExit(1) from err
        print("\n" + text + f"\nbionn-report: wrote {', '.join(SUMMARY_FILES)} in {sweep_dir}", flush=True)
        failed = [j for j in jobs if j.status == "failed"]
        if failed:
            for job in failed:
                print(
                    f"bionn: job {job.job} failed: {job.error} (see {job.path / 'error.json'})",
                    file=sys.stderr,
                )
            print(f"bionn: {len(failed)} of {len(jobs)} job(s) failed", file=sys.stderr, flush=True)
            raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bionn-report", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folder", help="a run folder or a multirun folder (e.g. multirun/2026-11-27/23-40-00)"
    )
    parser.add_argument("--out", default=None, help="where summary.{csv,md,png} go (default: the folder)")
    parser.add_argument("--quiet", action="store_true", help="write the files, print only where")
    args = parser.parse_args(argv)
    started = time.time()
    try:
        _, text = write_report(Path(args.folder), Path(args.out) if args.out else None)
    except FileNotFoundError as err:
        print(f"bionn-report: error: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(text)
    out = args.out or args.folder
    print(f"bionn-report: wrote {', '.join(SUMMARY_FILES)} in {out} ({time.time() - started:.1f} s)")
    return 0


# ---- helpers ------------------------------------------------------------------------


def _is_run(path: Path) -> bool:
    return path.is_dir() and any((path / marker).exists() for marker in RUN_MARKERS)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _parse_history(text: str) -> dict[str, list[float]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and None in rows[-1]:
        raise ValueError(f"row {len(rows)} has more cells than the header")
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(float(value) if value not in (None, "") else math.nan)
    return columns


def _latest_periodic_test(path: Path, problems: list[str]) -> tuple[dict, str]:
    """Test metrics of the newest results_epoch_N.json of an unfinished job, if any."""
    files = sorted(path.glob("results_epoch_*.json"), key=_natural_key)
    for file in reversed(files):
        try:
            return dict(json.loads(file.read_text())["evaluation"]["test"]), file.name
        except (OSError, ValueError, KeyError, TypeError) as err:
            problems.append(f"{file.name}: unreadable ({type(err).__name__})")
    return {}, ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if digits < 4 else f"{value:.4g}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
