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
from bionn.report.read import (
    BaselineProvider,
    JobState,
    JobSummary,
    baseline_rows,
    collect,
    ridge_baseline,
    watch_states,
)
from bionn.report.render import render_csv, render_markdown, render_png, render_watch
from bionn.run_folder import ERROR, MARKERS, Status, now
from bionn.slurm import queue_states
from bionn.sweep_folder import SweepFolderError

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
        from omegaconf import OmegaConf

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not OmegaConf.select(config, "hydra.launcher.wait", default=True):
            return  # the jobs were only submitted: the last one to end writes the report
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
    parser.add_argument(
        "--watch",
        action="store_true",
        help="show every job's state until all ended (exit 0 if all completed, 1 if not); writes nothing",
    )
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between --watch refreshes")
    args = parser.parse_args(argv)
    if args.watch:
        return watch(Path(args.folder), args.interval)
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


def watch(root: Path, interval: float, out: Any = None) -> int:
    """Show the state of every job of the sweep folder `root` every `interval` seconds, from the run folders
    and squeue, until every job has ended. 0 if all completed (or stopped early), 1 if not, 2 without a
    sweep record."""
    out = out or sys.stdout
    clear = "\033[H\033[J" if out.isatty() else ""
    while True:
        queue = queue_states()
        try:
            states: list[JobState] = watch_states(root, queue)
        except SweepFolderError as err:
            print(f"bionn-report: error: {err}", file=sys.stderr)
            return 2
        print(clear + render_watch(root, states, queue is not None, now()) + "\n", file=out, flush=True)
        if all(s.ended for s in states):
            break
        time.sleep(interval)
    bad = [s for s in states if not s.ok]
    verdict = "all completed" if not bad else f"{len(bad)} of {len(states)} did not complete"
    print(f"bionn-report: every job of {root} ended: {verdict}; the report: bionn-report {root}", file=out)
    return 1 if bad else 0
