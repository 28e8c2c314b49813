"""The resources of each job of a sweep (the launcher's keys and its `per_job` rules) and the Slurm arrays
they are submitted in: equal resources share an array, at most the cluster's MaxArraySize jobs each."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bionn.sweep_folder import SWEEP, Job

# Keys of the whole sweep, not of one job's resources.
SWEEP_KEYS = ("submitit_folder", "max_num_timeout", "array_parallelism", "wait", "max_array_size", "per_job")


@dataclass
class Array:
    """Jobs submitted together: equal resources, at most max_array_size of them."""

    params: dict
    jobs: list[Job]
    throttle: int | None = None  # at most this many of its jobs run at once (%N)
    after: int | None = None  # index of the array this one waits for (afterany)

    def record(self, job_ids: list[str]) -> dict:
        """The array as sweep.json records it once submitted; `job_ids`: its jobs' Slurm (or local) ids."""
        return {
            "array_id": str(job_ids[0]).split("_")[0],
            "jobs": [job.num for job in self.jobs],
            "job_ids": {str(job.num): str(job_id) for job, job_id in zip(self.jobs, job_ids, strict=True)},
            "throttle": self.throttle,
            "resources": self.params,
        }


def job_resources(cfg: DictConfig, rules: list) -> dict:
    """The launcher's resource keys in the job's config `cfg` (its hydra.launcher), with those of every
    `per_job` rule of `rules` whose `when` matches the job's own config applied in order; sweep-wide keys
    left out. ValueError naming a malformed rule."""
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    resources = {k: v for k, v in params.items() if k != "_target_" and k not in SWEEP_KEYS}
    for number, rule in enumerate(rules):
        where = f"hydra.launcher.per_job[{number}]"
        if not isinstance(rule, dict) or not isinstance(rule.get("when"), dict) or len(rule) < 2:
            raise ValueError(
                f"{where} = {rule!r} is invalid: each rule is {{when: {{<config key>: <value or list of "
                "values>, ...}, <launcher key>: <value>, ...}}"
            )
        unknown = sorted(set(rule) - {"when"} - set(resources))
        if unknown:
            raise ValueError(
                f"{where}: {', '.join(unknown)} is no resource key of this launcher (allowed: "
                f"{', '.join(sorted(resources))})"
            )
        if all(_matches(cfg, key, wanted, where) for key, wanted in rule["when"].items()):
            resources.update({k: v for k, v in rule.items() if k != "when"})
    return resources


def _matches(cfg: DictConfig, key: str, wanted: Any, where: str) -> bool:
    """True if the job's config holds `wanted` (or one of a list of values) at the dotted `key`; `key`
    may also name a config group's choice, e.g. experiment (hydra.runtime.choices)."""
    missing = object()
    value = OmegaConf.select(cfg, key, default=missing)
    if value is missing:
        value = OmegaConf.select(cfg, f"hydra.runtime.choices.{key}", default=missing)
    if value is missing:
        raise ValueError(f"{where}: when: {key} is no key of the job's config, nor a config group")
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return value in wanted if isinstance(wanted, list) else value == wanted


def plan_arrays(jobs: list[tuple[dict, Job]], max_size: int | None, parallelism: int | None) -> list[Array]:
    """Group jobs by equal resources into arrays of at most max_size jobs; then bound the jobs running at
    once across all arrays by `parallelism`: with no more arrays than that, each gets a share of it as its
    own throttle (%N); with more, each runs one job at a time and waits (afterany) for the array
    `parallelism` places before it, so at most `parallelism` arrays run at once."""
    groups: dict[str, Array] = {}
    for params, job in jobs:
        groups.setdefault(json.dumps(params, sort_keys=True), Array(params, [])).jobs.append(job)
    size = max_size or max(len(g.jobs) for g in groups.values())
    arrays = [
        Array(g.params, g.jobs[i : i + size]) for g in groups.values() for i in range(0, len(g.jobs), size)
    ]
    if not parallelism:
        return arrays
    if len(arrays) > parallelism:
        for i, array in enumerate(arrays):
            array.throttle, array.after = 1, (i - parallelism if i >= parallelism else None)
        return arrays
    throttles, spare = [1] * len(arrays), parallelism - len(arrays)
    while spare > 0 and any(t < len(a.jobs) for t, a in zip(throttles, arrays, strict=True)):
        for i, array in enumerate(arrays):
            if spare and throttles[i] < len(array.jobs):
                throttles[i] += 1
                spare -= 1
    for array, throttle in zip(arrays, throttles, strict=True):
        array.throttle = throttle
    return arrays


def cluster_max_array_size() -> int | None:
    """The cluster's MaxArraySize (array indices run 0 to MaxArraySize - 1); None if it does not say."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return max(int(value.strip()), 1)
    return None


def refused_message(sweep_dir: Path, array: Array, submitted: list[dict], err: Exception) -> str:
    """The paragraph for an `array` that sbatch refused (`err`, Slurm's own words) after the arrays
    `submitted` (their records) of the launch into `sweep_dir`."""
    jobs = ", ".join(f"#{job.num}" for job in array.jobs)
    earlier = ", ".join(r["array_id"] for r in submitted)
    return (
        f"bionn: error: Slurm refused to submit job(s) {jobs} of the sweep {sweep_dir}: {str(err).strip()}\n"
        + (
            f"The arrays submitted before it ({earlier}) run on; {Path(sweep_dir) / SWEEP} records them. "
            if earlier
            else "Nothing was submitted. "
        )
        + "Ask for resources the cluster has (sinfo -N -o '%N %c %m %G' lists its nodes) and run the "
        "same command again."
    )
