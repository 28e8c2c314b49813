"""What one launch of a sweep submits: a job finished with the same config is skipped (resume), a job
still pending or running is named and left alone, the rest are submitted with their own resources; and
the lines that tell the user so. A launch that must be refused is refused here, before anything is
submitted."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bionn.config.sources import config_file, source_of
from bionn.run_folder import FINISHED, ConfigChanged, RunFolderError, Status
from bionn.slurm import check_backend_tasks, check_batch_split, queue_states
from bionn.sweep_arrays import job_resources
from bionn.sweep_folder import SWEEP, Job, SweepFolder, SweepRefused
from bionn.sweep_live import live_jobs


@dataclass
class LaunchPlan:
    """One launch's jobs and what becomes of each."""

    jobs: list[Job]
    finished: dict[int, dict]  # job number -> its final results: not submitted
    live: dict[int, str]  # job number -> what runs it (bionn.sweep_live.live_jobs): not submitted
    todo: list[tuple[dict, Job]]  # (resources, job) of the jobs to submit

    def record(self, launcher: str, wait: bool) -> dict:
        """The launch as sweep.json records it before anything is submitted."""
        return {
            "launcher": launcher,
            "wait": wait,
            "submitted": [job.num for _, job in self.todo],
            "finished": sorted(self.finished),
            "live": sorted(self.live),
            "arrays": [],
        }

    def job_lines(self, shown: Callable[[Sequence[str]], list[str]]) -> list[str]:
        """One line per job: its number, the overrides `shown` keeps, and whether it finished."""
        lines = []
        for job in self.jobs:
            final = self.finished.get(job.num)
            state = f"  (finished: {final['status']}; not submitted)" if final is not None else ""
            lines.append(f"\t#{job.num} : {' '.join(shown(job.overrides))}{state}")
        return lines


def plan_launch(
    folder: SweepFolder,
    jobs: list[Job],
    configs: list[DictConfig],
    sweep_overrides: list[str],
    rules: list,
    task_config: Callable[[DictConfig], dict],
    queue: Callable[[], dict[str, str] | None] = queue_states,
) -> LaunchPlan:
    """The plan of launching `jobs` (each with its composed config in `configs`, hydra node included) of
    the sweep `sweep_overrides` into `folder`; `rules`: the launcher's per_job rules (bionn.sweep_arrays);
    `task_config` and `queue`: as finished_jobs and live_jobs take them. ValueError (SweepRefused,
    ConfigError, ...) names what refuses the launch; nothing is written or submitted then."""
    folder.check_jobs(jobs, sweep_overrides)
    finished = finished_jobs(folder, jobs, configs, task_config)
    live = live_jobs(folder, [job for job in jobs if job.num not in finished], queue())
    todo = [
        (job, cfg)
        for job, cfg in zip(jobs, configs, strict=True)
        if job.num not in finished and job.num not in live
    ]
    resources = [(job_resources(cfg, rules), job) for job, cfg in todo]
    for (params, _), (_, cfg) in zip(resources, todo, strict=True):
        check_workers(cfg, params)
    return LaunchPlan(jobs, finished, live, resources)


def check_workers(cfg: DictConfig, resources: dict) -> None:
    """ConfigError if the job's workers (`resources`' nodes x tasks_per_node) cannot share its batch, or
    its backend cannot train on more than one task."""
    if OmegaConf.select(cfg, "dataset.shape.batch_size") is None:
        return  # not a bionn training (another app launched by this launcher)
    nodes, tasks = int(resources.get("nodes") or 1), int(resources.get("tasks_per_node") or 1)
    backend = OmegaConf.select(cfg, "runtime.backend", default="tensorflow")
    check_backend_tasks(backend, nodes, tasks, lambda: source_of("runtime.backend", cfg.hydra))
    check_batch_split(cfg.dataset.shape.batch_size, nodes, tasks, config_file("dataset", cfg.hydra))


def finished_jobs(
    folder: SweepFolder, jobs: list[Job], configs: list[DictConfig], task_config: Callable[[DictConfig], dict]
) -> dict[int, dict]:
    """{job number: final results} of the jobs whose run folder holds a run finished with this config.
    configs: each job's config; task_config(cfg): the config its task receives, which its run folder's
    ledger must hold (asked only where there is a ledger and runtime.on_config_change is not move_aside).
    SweepRefused naming every run folder that holds another config, and every finished run folder that
    was lost since."""
    record = folder.record_or_none()
    known_finished = {n for launch in (record or {}).get("launches", []) for n in launch.get("finished", [])}
    finished, problems = {}, []
    for job, cfg in zip(jobs, configs, strict=True):
        run = folder.run_folder(job)
        try:
            if OmegaConf.select(cfg, "runtime.on_config_change", default=None) != "move_aside":
                if run.ledger() is not None:
                    run.check_ledger(task_config(cfg))
            final = run.final() if run.ledger() is not None else None
        except ConfigChanged as err:
            problems.append(f"  job #{job.num}: {str(err).splitlines()[0]}\n" + _indent(err))
            continue
        except RunFolderError as err:
            problems.append(f"  job #{job.num}: {err}")
            continue
        if final is not None and Status(final["status"]) in FINISHED:
            finished[job.num] = final
        elif job.num in known_finished:
            what = "is missing" if not run.path.exists() else "no longer holds its final results"
            problems.append(
                f"  job #{job.num}: its run folder {run.path} {what} (it held a finished run at an "
                f"earlier launch; {folder / SWEEP} records it): restore it, or sweep into another folder"
            )
    if problems:
        raise SweepRefused(
            f"{folder.path}: refusing to launch, nothing was submitted (nothing was changed):\n"
            + "\n".join(problems)
        )
    return finished


def _indent(err: Exception) -> str:
    return "\n".join("    " + line for line in str(err).splitlines()[1:])


def refusal(err: Exception) -> str:
    """The one paragraph of a launch refused before anything was submitted (plan_launch's ValueError)."""
    return f"bionn: error: {err}"


def submitted_message(sweep_dir: Path, executor: str, job_ids: list[str], finished: int) -> str:
    """What a launch that does not wait says once it has submitted the jobs with ids `job_ids` (Slurm's,
    or the local processes'), with `finished` jobs not submitted."""
    arrays = sorted({str(job_id).split("_")[0] for job_id in job_ids})
    kind = "Slurm array(s)" if executor == "slurm" else "process(es)"
    lines = [
        f"bionn: submitted {len(job_ids)} job(s) of the sweep {sweep_dir}"
        + (f" as {kind} {', '.join(arrays)}" if arrays else "")
        + (f"; {finished} finished job(s) not submitted" if finished else ""),
        f"bionn: watch it:   bionn-report {sweep_dir} --watch",
        f"bionn: resume it:  bionn-sweep resume {sweep_dir}   (the last job to end writes the report)",
    ]
    return "\n".join(lines)
