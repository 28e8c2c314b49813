"""Which jobs of a sweep still pend or run (squeue's answer, this host's processes), and the wait for one
Slurm job to end that closes the attempt a lost node left open."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

from bionn.run_folder import RunFolder, RunFolderError, process_alive
from bionn.slurm import QUEUED, RUNNING, attempt_job_id, job_state
from bionn.sweep_folder import Job, SweepFolder

log = logging.getLogger(__name__)

# How often a waiting launcher looks for a job requeued after its attempt began (wait_for_slurm_job).
REQUEUE_POLL_S = 5.0


def live_jobs(folder: SweepFolder, jobs: list[Job], queue: dict[str, str] | None) -> dict[int, str]:
    """{job number: what runs it} of the jobs that are still pending or running: a Slurm job `queue`
    (squeue's {job id: state}, bionn.slurm.queue_states; None without an answer) holds as pending or
    running (the sweep's recorded id, or the id of the run folder's running attempt), or a running
    attempt whose process still exists on this host. Submitting such a job again would put a second
    process into its run folder."""
    ids = folder.slurm_ids() if folder.exists() else {}
    last = (folder.last_launch() or {}) if folder.exists() else {}
    host = socket.gethostname()
    local = last.get("launcher") == "local" and last.get("host") == host
    live = {}
    for job in jobs:
        try:
            attempts = folder.run_folder(job).attempts()
        except RunFolderError:
            attempts = []
        running = attempts[-1] if attempts and attempts[-1].get("outcome") is None else {}
        for job_id in dict.fromkeys([ids.get(job.num), attempt_job_id(running.get("slurm"))]):
            state = (queue or {}).get(job_id or "")
            if state in QUEUED or state in RUNNING:
                live[job.num] = f"Slurm job {job_id} is {state} (cancel it: scancel {job_id})"
                break
        else:
            pid = running.get("pid") if running.get("host") == host else None
            if running and not running.get("slurm") and isinstance(pid, int) and process_alive(pid):
                live[job.num] = f"process {pid} on {host} trains it (stop it: kill -INT {pid})"
            elif local and local_job_alive(ids.get(job.num)):  # started, but no attempt recorded yet
                pid = ids[job.num]
                live[job.num] = f"process {pid} on {host} is starting it (stop it: kill -INT {pid})"
    return live


def local_job_alive(job_id: str | None) -> bool:
    """A job of the local launcher (its id is its process id) whose submitit process still runs here."""
    if not job_id or not job_id.isdigit() or not process_alive(int(job_id)):
        return False
    try:
        return b"submitit" in Path(f"/proc/{job_id}/cmdline").read_bytes()
    except OSError:
        return False


def live_message(live: dict[int, str], sweep_dir: Path) -> str:
    """The paragraph naming the `live` jobs (live_jobs) that a launch into `sweep_dir` does not submit."""
    lines = [f"  #{num}: {what}" for num, what in sorted(live.items())]
    return (
        f"bionn: {len(live)} job(s) of the sweep are still pending or running; not submitted again:\n"
        + "\n".join(lines)
        + f"\nWait for them (bionn-report {sweep_dir} --watch), or cancel them and launch again."
    )


def slurm_job_ended(submitit_job: Any) -> bool:
    """submitit's done(), unless Slurm holds the job queued or running again. When a node fails, sacct
    says NODE_FAIL for a moment before it shows the requeued job as PENDING; submitit, asking then, would
    take NODE_FAIL as the job's end and keep it for good. So an end without a result is checked with
    squeue, and while squeue still holds the job, submitit's cache is cleared and the wait goes on."""
    if not submitit_job.done():
        return False
    if submitit_job.paths.result_pickle.exists():
        return True
    if job_state(str(submitit_job.job_id)) not in QUEUED | RUNNING:
        return True
    submitit_job.watcher.clear()  # (all jobs' cached states: each is asked for again at the next look)
    return False


def wait_for_slurm_job(num: int, submitit_job: Any, run: RunFolder) -> None:
    """Wait until the submitit job of sweep job `num` has ended. Meanwhile, when Slurm has requeued it
    after its attempt began without that attempt recording its end (its node was lost: the job then waits
    for nodes, maybe long), close that attempt in its run folder `run` as interrupted, naming the lost
    node: the folder must not say running while no process of the job runs. Only once squeue says PENDING
    (not COMPLETING): the job's processes are gone, and its next start is seconds away at the least."""
    job_id = str(submitit_job.job_id)
    looked = time.monotonic()
    while not slurm_job_ended(submitit_job):
        time.sleep(1)  # as submitit's own wait
        if time.monotonic() - looked < REQUEUE_POLL_S:
            continue
        looked = time.monotonic()
        try:
            attempts = run.attempts()
        except (RunFolderError, OSError):  # a file being replaced: ask again at the next look
            continue
        last = attempts[-1] if attempts else {}
        if last.get("outcome") is not None or attempt_job_id(last.get("slurm")) != job_id:
            continue
        if job_state(job_id) != "PENDING":
            continue
        closed = run.end_requeued_attempt(job_id, last["number"])
        if closed is not None:
            log.warning(
                "job #%d (%s): Slurm requeued it; its attempt %d ended: %s. It resumes in %s when "
                "Slurm runs it again",
                num,
                job_id,
                closed["number"],
                closed["reason"],
                run.path,
            )
