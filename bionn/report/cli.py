"""The report's entry points: `bionn-report DIR` and the Hydra callback SweepReport."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from bionn.io import atomic_write_bytes
from bionn.report.read import (
    NOT_STARTED,
    BaselineProvider,
    JobState,
    JobSummary,
    baseline_rows,
    collect,
    natural,
    ridge_baseline,
    watch_states,
)
from bionn.report.render import render_csv, render_markdown, render_watch, write_summary_png
from bionn.report.repeats import REPEAT_FILES, repeat_groups, repeats_csv, write_repeats_png
from bionn.report.search import is_search, read_search
from bionn.report.search_render import SEARCH_FILES, write_search
from bionn.report.search_watch import launched_on_cluster, render_search_watch, search_ended, worker_states
from bionn.run_folder import ERROR, MARKERS, RunFolderError, Status, now
from bionn.slurm import queue_states
from bionn.sweep_folder import SweepFolder, SweepFolderError

log = logging.getLogger(__name__)
SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")


def write_report(
    root: Path,
    out: Path | None = None,
    baseline: BaselineProvider | None = ridge_baseline,
    ended: list[tuple[str, list[str], str]] = (),
) -> tuple[list[JobSummary], str]:
    """Read every run under root, write summary.{csv,md,png} into out (default root); in a search folder
    also search.csv, best.yaml and search.png (search_render.py). ended: (run folder, overrides, why)
    of the sweep's jobs that ended without a result in their folder (bionn.sweep_folder.ENDED_JOBS): failed
    rows.

    Returns the jobs (model runs, then baseline rows) and the markdown text (the search's trials first).
    """
    root, out = Path(root), Path(out or root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder (expected a run or multirun folder)")
    runs = with_ended_jobs(collect(root), root, ended)
    jobs = runs + baseline_rows(runs, baseline)
    notes: list[str] = []
    if not runs:
        notes.append(f"no run folder under {root} (none holds any of {', '.join(MARKERS)})")
    try:
        write_summary_png(jobs, out / "summary.png")
    except Exception as err:  # a plot must not hide the table
        notes.append(f"summary.png not written ({type(err).__name__}: {err})")
    groups = repeat_groups(runs)
    for name in REPEAT_FILES:  # written when the folder holds repeats; a stale one goes
        (out / name).unlink(missing_ok=True)
    if groups:
        atomic_write_bytes(out / "repeats.csv", repeats_csv(groups).encode())
        try:
            write_repeats_png(groups, out / "repeats.png")
        except Exception as err:  # a plot must not hide the table
            notes.append(f"repeats.png not written ({type(err).__name__}: {err})")
    text = render_markdown(root, jobs, notes)
    atomic_write_bytes(out / "summary.csv", render_csv(jobs).encode())
    atomic_write_bytes(out / "summary.md", text.encode())
    if is_search(root):
        text = write_search(root, out) + "\n" + text
    return jobs, text


def with_ended_jobs(runs: list[JobSummary], root: Path, ended) -> list[JobSummary]:
    """The runs, with each job that ended without a result in its folder shown as failed with its reason
    (a folder that still holds an earlier run keeps a note of it)."""
    by_path = {job.path: job for job in runs}
    for path, overrides, why in ended:
        path = Path(path)
        job = by_path.get(path)
        if job is None:
            name = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
            job = by_path[path] = JobSummary(job=name, path=path, status=Status.FAILED.value)
            runs.append(job)
        elif job.status != NOT_STARTED:
            job.problems.append(f"the folder holds an earlier run ({job.status}); this launch of it failed")
        job.status, job.error, job.overrides = Status.FAILED.value, why, list(overrides)
    return sorted(runs, key=lambda j: natural(j.job))


def written_files(root: Path) -> tuple[str, ...]:
    """The files write_report writes for root."""
    repeats = tuple(name for name in REPEAT_FILES if (root / name).exists())
    return SUMMARY_FILES + repeats + (SEARCH_FILES if is_search(root) else ())


class SweepReport(Callback):
    """Hydra callback: when a multirun ends, write and print the sweep report; exit 1 if a job failed.

    In a multirun whose callbacks include this one, bionn.train.run records a failed
    job (error.json, final_results.json) and returns, so the other jobs still run.
    """

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not OmegaConf.select(config, "hydra.launcher.wait", default=True):
            return  # the jobs were only submitted: the last one to end writes the report (on_job_end)
        try:
            # Jobs that ended without a result in their run folder (refused before anything was written,
            # raised in another process, killed), as this process noted them in the sweep folder.
            jobs, text = write_report(sweep_dir, ended=SweepFolder(sweep_dir).take_ended())
        except Exception as err:
            print(
                f"bionn-report: could not report on {sweep_dir}: {type(err).__name__}: {err}", file=sys.stderr
            )
            raise SystemExit(1) from err
        files = ", ".join(written_files(sweep_dir))
        print("\n" + text + f"\nbionn-report: wrote {files} in {sweep_dir}", flush=True)
        failed = [j for j in jobs if j.status == Status.FAILED]
        for job in failed:
            see = f" (see {job.path / ERROR})" if (job.path / ERROR).exists() else ""
            print(f"bionn: job {job.job} failed: {job.error}{see}", file=sys.stderr)
        if failed:
            print(f"bionn: {len(failed)} of {len(jobs)} job(s) failed", file=sys.stderr, flush=True)
            raise SystemExit(1)

    def on_job_end(self, config: Any, **kwargs: Any) -> None:
        """In a launch that did not wait (hydra.launcher.wait=false): once every job of the sweep has ended,
        write the sweep report. Each job asks after its own end is recorded, so the last one to end sees
        every other end."""
        from omegaconf import OmegaConf

        if OmegaConf.select(config, "hydra.launcher.wait", default=True):
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_absolute():  # relative to where it was launched; the job may have left (chdir)
            sweep_dir = Path(os.path.relpath(Path(str(config.hydra.runtime.cwd)) / sweep_dir))
        try:
            if SweepFolder(sweep_dir).every_job_ended():
                write_report(sweep_dir)
                log.info("every job of the sweep ended; wrote the sweep report in %s", sweep_dir)
        except (SweepFolderError, RunFolderError, OSError) as err:
            log.warning(
                "could not write the sweep report of %s: %s (bionn-report %s)", sweep_dir, err, sweep_dir
            )


def to_mlflow(
    root: Path, tracking_uri: str | None, experiment: str | None = None
) -> list[tuple[str, str, int]]:
    """Import the run, sweep or search folder `root` into an MLflow store (bionn.tracking.import_folder);
    a search's trials carry their number and state, and its best trial bionn_best_trial = true."""
    from bionn.tracking import import_folder

    tags: dict[str, dict[str, str]] = {}
    if is_search(root):
        summary = read_search(root)
        best = summary.best
        for trial in summary.trials:
            tags[str((Path(root) / trial.run_dir).resolve())] = {
                "bionn_trial": str(trial.number),
                "bionn_trial_state": trial.state,
                "bionn_best_trial": str(best is not None and trial.number == best.number).lower(),
            }
    return import_folder(Path(root), tracking_uri, experiment, tags)


def _import_command(folder: Path, uri: str, experiment: str | None) -> int:
    """bionn-report DIR --to-mlflow URI: one line per run folder, one paragraph for a bad URI or store."""
    from types import SimpleNamespace

    from bionn.config.checks import check_tracking
    from bionn.config.errors import ConfigError
    from bionn.tracking import store_for

    try:
        check_tracking(SimpleNamespace(tracking_uri=uri, timeout_s=1), lambda key: "--to-mlflow")
    except ConfigError as err:
        print(f"bionn-report: error: {err}".replace("logger.mlflow.tracking_uri", "the URI"), file=sys.stderr)
        return 2
    if not folder.is_dir():
        print(
            f"bionn-report: error: {folder} is not a folder (expected a run, sweep or search folder)",
            file=sys.stderr,
        )
        return 2
    try:
        done = to_mlflow(folder, uri, experiment)
    except Exception as err:
        why = (str(err).strip().splitlines() or [""])[0]
        print(
            f"bionn-report: error: could not import {folder} into {uri}: {type(err).__name__}: {why}. "
            f"Nothing in {folder} was changed; the same command continues where this one stopped.",
            file=sys.stderr,
        )
        return 1
    for path, run_id, added in done:
        print(f"{path}: MLflow run {run_id}, {added} epoch(s) added")
    if not done:
        print(f"bionn-report: no run folder with a ledger under {folder}: nothing to import")
    else:
        browse = store_for(folder, uri, experiment).ui_command
        print(f"bionn-report: imported {len(done)} run folder(s) into {uri}; to browse: {browse}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`bionn-report` with argv (default sys.argv[1:]); returns its exit code."""
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
        help="show every job's state (a search: every trial and worker) until all ended (exit 0 if all "
        "completed, 1 if not); writes nothing",
    )
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between --watch refreshes")
    parser.add_argument(
        "--to-mlflow",
        metavar="URI",
        default=None,
        help="import the folder's runs into this MLflow store (http(s)://host:port, sqlite:///file.db), "
        "from their own records; importing again adds nothing (docs/tracking.md); writes no report",
    )
    parser.add_argument(
        "--experiment",
        default=None,
        help="with --to-mlflow: the MLflow experiment (default as logger=mlflow)",
    )
    args = parser.parse_args(argv)
    if args.to_mlflow:
        return _import_command(Path(args.folder), args.to_mlflow, args.experiment)
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
    files = ", ".join(written_files(Path(args.folder)))
    print(f"bionn-report: wrote {files} in {out} ({time.time() - started:.1f} s)")
    return 0


def watch(root: Path, interval: float, out: Any = None) -> int:
    """Show the state of every job of the sweep folder `root` every `interval` seconds, from the run folders
    and squeue, until every job has ended. 0 if all completed (or stopped early), 1 if not, 2 without a
    sweep record."""
    out = out or sys.stdout
    if is_search(root):
        return watch_search(root, interval, out)
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


def watch_search(root: Path, interval: float, out: Any) -> int:
    """--watch on a search folder: its trials (state, epoch progress, worker) and its workers, until the
    study has n_trials ended trials and none running (or no worker can go on). 0 if it has them and none
    failed, 1 if not; 2 if its search.json cannot be read."""
    clear = "\033[H\033[J" if out.isatty() else ""
    while True:
        queue = queue_states()
        summary = read_search(root)
        if summary.record is None:  # without search.json the number of trials and workers is unknown
            print(f"bionn-report: error: {'; '.join(summary.notes)}", file=sys.stderr)
            return 2
        workers = worker_states(root, summary.n_workers or 0, queue)
        asked = queue is not None and launched_on_cluster(root)
        print(
            clear + render_search_watch(summary, workers, asked, now()) + "\n",
            file=out,
            flush=True,
        )
        if search_ended(summary, workers):
            break
        time.sleep(interval)
    counts = summary.counts()
    ended = sum(counts.get(s, 0) for s in ("complete", "pruned", "failed"))
    complete = summary.n_trials is not None and ended >= summary.n_trials and not counts.get("running")
    verdict = (
        f"{ended} of {summary.n_trials} trial(s) ended: "
        + (", ".join(f"{n} {s}" for s, n in counts.items()) or "none")
        + ("" if complete else "; no worker is left to go on (the same command continues the search)")
    )
    print(
        f"bionn-report: the search in {root} {'ended' if complete else 'stopped'}: {verdict}; "
        f"the report: bionn-report {root}",
        file=out,
    )
    return 0 if complete and not counts.get("failed") else 1
