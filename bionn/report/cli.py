"""The report's entry points: `bionn-report DIR` and the Hydra callback SweepReport."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from bionn.io import atomic_write_bytes
from bionn.report.read import BaselineProvider, JobSummary, baseline_rows, collect, ridge_baseline
from bionn.report.render import render_csv, render_markdown, render_png
from bionn.run_folder import ERROR, MARKERS, Status

log = logging.getLogger(__name__)
SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")


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
        notes.append(f"no run folder under {root} (none holds any of {', '.join(MARKERS)})")
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
        failed = [j for j in jobs if j.status == Status.FAILED]
        if failed:
            for job in failed:
                print(f"bionn: job {job.job} failed: {job.error} (see {job.path / ERROR})", file=sys.stderr)
            print(f"bionn: {len(failed)} of {len(jobs)} job(s) failed", file=sys.stderr, flush=True)
            raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bionn-report", description="Sweep report of a run or multirun folder."
    )
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
