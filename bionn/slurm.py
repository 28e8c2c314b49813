"""Where this process runs under Slurm, read from Slurm's environment (no TensorFlow import)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from bionn.config import dataset
from bionn.config.errors import ConfigError


@dataclass(frozen=True)
class Worker:
    """This process's place in one training: task `index` of `count`; only the chief (0) writes files."""

    index: int = 0
    count: int = 1

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def _number(key: str) -> int | None:
    value = os.environ.get(key, "")
    return int(value) if value.isdigit() else None


def step_tasks() -> int:
    """Tasks of the Slurm step this process belongs to (1 outside a step)."""
    return _number("SLURM_STEP_NUM_TASKS") or 1


def current_worker() -> Worker:
    """Task SLURM_PROCID of a multi-task Slurm step; the only worker otherwise."""
    tasks = step_tasks()
    return Worker(index=_number("SLURM_PROCID") or 0, count=tasks) if tasks > 1 else Worker()


def check_batch_split(batch_size: int, nodes: int, tasks_per_node: int, source: str) -> None:
    """Refuse, before submission, a job whose workers (nodes x tasks_per_node) cannot share its global
    batch: every worker trains an equal slice of each batch (the check: bionn.config.dataset).
    (The job itself checks the replicas it finds, GPUs included, when it starts.)"""
    workers = nodes * tasks_per_node
    dataset.check_batch_split(
        batch_size,
        lambda allowed: ConfigError(
            f"{source}: dataset.shape.batch_size = {batch_size} cannot be split across "
            f"hydra.launcher.nodes = {nodes} x tasks_per_node = {tasks_per_node} ({workers} workers, each "
            f"training an equal slice of every batch): use a batch_size that is a multiple of {workers}, "
            "or another number of nodes"
        ),
        workers=workers,
    )


def check_backend_tasks(backend: str, nodes: int, tasks_per_node: int, source: Callable[[], str]) -> None:
    """Refuse, before submission, a jax job of more than one task: the jax backend trains in one
    process on its local devices (docs/backends.md). source(): where runtime.backend was set (asked only
    for the message)."""
    if str(backend) == "jax" and nodes * tasks_per_node > 1:
        raise ConfigError(
            f"{source()}: runtime.backend = jax is invalid with hydra.launcher.nodes = {nodes} x "
            f"tasks_per_node = {tasks_per_node} ({nodes * tasks_per_node} tasks): the jax backend trains "
            "in one process on its local devices; multi-host training stays on TensorFlow's "
            "MultiWorkerMirroredStrategy (runtime.backend=tensorflow), or use nodes = 1 and "
            "tasks_per_node = 1"
        )


def slurm_info() -> dict | None:
    """The Slurm job this process runs in (info.json's "slurm"), or None outside Slurm."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return None
    return {
        "job_id": env["SLURM_JOB_ID"],
        "array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": _number("SLURM_ARRAY_TASK_ID"),
        # Slurm sets SLURM_RESTART_COUNT only once a job was requeued; absent means the first start.
        "restart_count": _number("SLURM_RESTART_COUNT") or 0,
        "nodelist": env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST"),
        "ntasks": step_tasks() if "SLURM_STEP_NUM_TASKS" in env else (_number("SLURM_NTASKS") or 1),
        "procid": _number("SLURM_PROCID") or 0,
    }


# squeue states of a job that is gone for good, without bionn having recorded an end
DEAD = {
    "CANCELLED": "cancelled",
    "OUT_OF_MEMORY": "out of memory",
    "NODE_FAIL": "node failure",
    "BOOT_FAIL": "node failure",
    "FAILED": "failed outside training",
    "TIMEOUT": "timed out",
    "DEADLINE": "timed out",
    "PREEMPTED": "preempted",
    "REVOKED": "revoked",
}
# squeue states of a job waiting to run (again), and of one that runs
QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"}


def attempt_job_id(slurm: dict | None) -> str | None:
    """The id squeue shows for the job of an attempt's "slurm" record (<array>_<task> for an array task)."""
    if not slurm:
        return None
    if slurm.get("array_job_id") and slurm.get("array_task_id") is not None:
        return f"{slurm['array_job_id']}_{slurm['array_task_id']}"
    return str(slurm.get("job_id")) if slurm.get("job_id") else None


# sinfo states of a node that cannot run jobs: down, failing, not responding (a trailing "*"), ...
NODE_LOST = ("down", "drain", "fail", "inval", "unk", "not_resp", "no_resp", "maint")


def lost_nodes(nodelist: str | None) -> dict[str, str]:
    """{node: sinfo state} of the nodes of `nodelist` (Slurm's compressed list) that Slurm cannot reach or
    use now (down, failing, not responding); {} when all answer, or when there is no `sinfo` answer."""
    import subprocess

    if not nodelist:
        return {}
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-n", nodelist, "-o", "%N|%T"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    lost = {}
    for line in out.stdout.splitlines() if not out.returncode else []:
        node, _, state = line.strip().partition("|")
        if node and (state.endswith("*") or state.lower().startswith(NODE_LOST)):
            lost[node] = state
    return lost


def job_state(job_id: str) -> str | None:
    """squeue's state of one job (<array>_<task> for an array task), or None when squeue does not know it
    or does not answer."""
    import subprocess

    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    states = out.stdout.split() if not out.returncode else []
    return states[0] if len(states) == 1 else None


def queue_states() -> dict[str, str] | None:
    """{job id: state} of every job `squeue` knows (array tasks as <array>_<task>, recently ended ones
    too), or None when there is no `squeue` or it does not answer. Needs no accounting (`sacct`)."""
    import subprocess

    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "--states=all", "-o", "%i|%T"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    states = {}
    for line in out.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = state
    return states
