"""How an attempt that did not finish is recorded: interrupted (a signal, Ctrl-C: the same command resumes)
or failed (error.json, final_results.json with status failed), then raised as bionn.outcome's recorded
types, or, in a sweep whose report names failed jobs, returned as an infinite loss."""

from __future__ import annotations

import logging
import time
import traceback
from typing import TYPE_CHECKING

from bionn.outcome import RecordedFailure, RecordedInterrupt, sweep_report_collects_failures
from bionn.run_folder import ERROR, FINAL, Outcome, RunFolder, Status
from bionn.slurm import Worker

if TYPE_CHECKING:
    from bionn.tracking import MlflowTracker

log = logging.getLogger("bionn.train")


def end_attempt(
    folder: RunFolder,
    err: BaseException,
    signals: list[str],
    started: float,
    worker: Worker,
    tracker: MlflowTracker | None = None,
    raise_recorded: bool = False,
) -> float:
    """Record how the attempt ended (err: what ended it; signals: the names received; started: the
    attempt's start, time.time()); raise it again (Ctrl-C as RecordedInterrupt, a failure as
    RecordedFailure with raise_recorded), or return infinity for a failed job of a reported sweep."""
    interrupted = isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and bool(signals))
    if not worker.is_chief:  # the chief records; a worker's end is in its own log
        raise err
    if interrupted:
        _record_interruption(folder, signals, tracker)
        if isinstance(err, KeyboardInterrupt):  # bionn.outcome ends it without saying more
            raise RecordedInterrupt(*err.args).with_traceback(err.__traceback__) from None
        raise err
    _record_failure(folder, err, started, tracker)
    if isinstance(err, Exception) and sweep_report_collects_failures():
        log.error("the sweep goes on; the sweep report names this job (%s)", folder.path)
        return float("inf")
    if raise_recorded and isinstance(err, Exception):  # error.json holds its traceback: ended without one
        raise RecordedFailure(err) from err
    raise err


def _record_interruption(folder: RunFolder, signals: list[str], tracker: MlflowTracker | None) -> None:
    name = signals[0] if signals else "SIGINT"  # the first: a preemption's SIGUSR2, then its SIGTERM
    folder.end_attempt(Outcome.INTERRUPTED, reason=f"interrupted by {name}")
    if tracker is not None:
        tracker.end(Status.INTERRUPTED)
    log.warning(
        "interrupted by %s after %d committed epoch(s); the same command resumes it in %s",
        name,
        folder.committed_epoch_or_history(),
        folder.path,
    )


def _record_failure(
    folder: RunFolder, err: BaseException, started: float, tracker: MlflowTracker | None
) -> None:
    error = {"type": type(err).__name__, "message": str(err), "traceback": traceback.format_exc()}
    folder.end_attempt(Outcome.FAILED, error=error)
    folder.write_json(ERROR, error)
    folder.write_json(
        FINAL,
        {
            "status": Status.FAILED.value,
            "error": f"{type(err).__name__}: {err}",
            "epochs_completed": len(folder.history_rows()),
            "training_time_s": round(time.time() - started, 3),
            "evaluation": None,
        },
    )
    log.error("failed: %s: %s (see %s)", type(err).__name__, err, folder / ERROR)
    if tracker is not None:
        tracker.end(Status.FAILED)
