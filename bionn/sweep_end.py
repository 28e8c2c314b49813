"""How a waiting launch tells of the sweep's jobs that ended without a result (raised, killed, out of
memory, node failure), and of its own interruption: one line per job, one paragraph for the launch."""

from __future__ import annotations

from pathlib import Path

from bionn.run_folder import ERROR, RunFolder, RunFolderError
from bionn.sweep_folder import Job


class SweepJobFailed(RuntimeError):
    """A sweep job that ended without a result (killed, out of memory, failed on another task, ...)."""

    @classmethod
    def without_result(cls, job: Job, job_id: str, state: str, job_log: Path) -> SweepJobFailed:
        """The job `job` whose submitit job `job_id` ended in `state`, with its log `job_log`."""
        return cls(f"job #{job.num} ({job_id}) ended {state} without a result; see {job_log}")


def describe_failure(
    job: Job, run: RunFolder, job_id: str, state: str, job_log: Path, raised: BaseException | None
) -> tuple[str, str]:
    """(the job, why it ended without a result): its run folder `run`'s error record if it has one, else
    the exception it `raised` (None when it raised none, or died), else its submitit job `job_id`'s end
    `state` and its log `job_log`."""
    try:
        error = run.error()
    except RunFolderError as err:
        error = {"type": "unreadable error record", "message": str(err)}
    if error:
        why = f"{error.get('type')}: {error.get('message')} (see {run / ERROR})"
    elif raised is not None and not isinstance(raised, SweepJobFailed):
        why = f"{type(raised).__name__}: {raised}"
    else:
        why = f"ended {state} without {ERROR}; job log: {job_log}"
    where = f"run folder {run.path}, job {job_id}"
    return f"#{job.num} ({' '.join(job.overrides)})", f"{where}: {why}"


def failures_report(failures: list[tuple[str, str]], submitted: int, sweep_dir: Path) -> str:
    """The launcher's own report of the `failures` (describe_failure) among `submitted` jobs, when no sweep
    report collects them."""
    lines = [f"  {job}\n     {why}" for job, why in failures]
    report = f"{len(failures)} of {submitted} sweep job(s) failed:\n" + "\n".join(lines)
    return report + f"\nThe sweep's table of every job: bionn-report {sweep_dir}"


def interrupted_message(sweep_dir: Path, executor: str) -> str:
    """What Ctrl-C in a launcher waiting for the sweep in `sweep_dir` says: what goes on, how to follow it."""
    jobs = (
        "the jobs go on in Slurm"
        if executor == "slurm"
        else "the jobs got the signal too and record their interruption"
    )
    return (
        f"\nbionn: interrupted while waiting for the sweep {sweep_dir}; {jobs}. Follow it: "
        f"bionn-report {sweep_dir} --watch; resume what did not finish: "
        f"bionn-sweep resume {sweep_dir}"
    )
