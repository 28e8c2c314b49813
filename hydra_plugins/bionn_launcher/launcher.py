"""Hydra launchers for sweeps on Slurm (`hydra/launcher=slurm`) and on one machine (`hydra/launcher=local`).

They are hydra-submitit-launcher's, with a sweep's life added (docs/sweeps.md); this module adapts
Hydra and submitit to it, and plain bionn modules decide and say what happens:

- **Resume** (bionn.sweep_plan, bionn.sweep_live). The sweep folder records its job list (sweep.json,
  bionn.sweep_folder). Launched again into the same folder, a job whose run folder holds a finished run
  of the same config is not submitted (no Slurm job, no process); nor is one still pending or running
  (squeue, or its run folder's running attempt), which is named with how to cancel it; an unfinished one
  resumes in its run folder; job numbers stay. A launch whose job list, or a job's result-deciding
  values (its run folder's ledger), differ from what the folder holds is refused before anything is
  submitted.
- **Wait, or not** (bionn.sweep_end, bionn.sweep_live). With `wait: true` the launcher waits for every
  job, even after one failed: a job that failed in training records it and returns, and the sweep report
  names it; a job that raised anyway, or died without a result (killed, out of memory, node failure), is
  noted in the sweep folder for the sweep report, or named here without one. A Slurm job requeued after
  its node was lost has an attempt that no process can close: the waiting launcher closes it as
  interrupted, naming the node. With `wait: false` it returns once the jobs are submitted; the last job
  to end writes the sweep report (bionn.report.SweepReport).
- **Arrays** (bionn.sweep_arrays). Jobs whose own config asks for equal resources (its `hydra.launcher`
  keys) share a Slurm array; an array holds at most the cluster's MaxArraySize jobs, and
  `array_parallelism` bounds the jobs running at once across all arrays of the launch.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from bionn.outcome import sweep_report_collects_failures
from bionn.pins import require_tested
from bionn.run_folder import finished_validation_loss
from bionn.sweep_arrays import Array, cluster_max_array_size, plan_arrays, refused_message
from bionn.sweep_end import SweepJobFailed, describe_failure, failures_report, interrupted_message
from bionn.sweep_folder import Job, SweepFolder
from bionn.sweep_live import live_message, wait_for_slurm_job
from bionn.sweep_plan import LaunchPlan, plan_launch, refusal, submitted_message
from hydra_plugins.bionn_launcher import config as _schemas  # noqa: F401  (registers the launcher schemas)

log = logging.getLogger(__name__)


class Failed(JobReturn):
    """A job that raised or died: named by the launcher (or the sweep report); its return_value is
    infinity instead of raising, so that Hydra ends the sweep and its callbacks run."""

    @property
    def return_value(self) -> Any:  # type: ignore[override]
        return float("inf")


class Submitted(JobReturn):
    """A job handed to the cluster by a launch that does not wait: it has no result yet."""

    @property
    def return_value(self) -> Any:  # type: ignore[override]
        return None


class _SweepLauncher(plugin.BaseSubmititLauncher):
    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.wait = bool(self.params.pop("wait", True))
        self.max_array_size = self.params.pop("max_array_size", None)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        require_tested("hydra-submitit-launcher")  # the executor setup follows its 1.2 launch()
        assert self.config is not None and self.hydra_context is not None
        folder = SweepFolder(Path(str(self.config.hydra.sweep.dir)))
        folder.path.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {folder.path}")
        numbered = list(enumerate(job_overrides, start=initial_job_idx))
        configs = [self._job_config(overrides, idx) for idx, overrides in numbered]
        jobs = [
            Job(idx, tuple(overrides), os.path.relpath(_run_dir(cfg), folder.path))
            for (idx, overrides), cfg in zip(numbered, configs, strict=True)
        ]
        sweep_overrides = [str(o) for o in self.config.hydra.overrides.task]
        rules = self.params.get("per_job") or []
        try:
            plan = plan_launch(folder, jobs, configs, sweep_overrides, rules, _task_config)
        except ValueError as err:  # refused before anything was submitted: the message, no traceback
            print(refusal(err), file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        for line in plan.job_lines(filter_overrides):
            log.info(line)
        if plan.live:
            print(live_message(plan.live, folder.path), file=sys.stderr, flush=True)
        folder.record_launch(jobs, sweep_overrides, _command(), plan.record(self._EXECUTOR, self.wait))
        submitted = self._submit(folder, plan.todo) if plan.todo else {}
        if not self.wait:
            job_ids = [str(j.job_id) for j in submitted.values()]
            print(submitted_message(folder.path, self._EXECUTOR, job_ids, len(plan.finished)), flush=True)
        collected = sweep_report_collects_failures(self.config.hydra)  # the sweep report shows the failures
        returns, failures = self._returns(folder, plan, submitted, collected)
        if failures and not collected:
            report = failures_report(failures, len(plan.todo), folder.path)
            log.error(report)
            print(report, file=sys.stderr)
            raise SystemExit(1)
        return returns

    def _returns(
        self, folder: SweepFolder, plan: LaunchPlan, submitted: dict[int, Any], collected: bool
    ) -> tuple[list[JobReturn], list[tuple[str, str]]]:
        """Every job's return (waiting for the submitted ones when the launch waits), and (the job, why)
        of each that ended without a result; noted in the sweep folder when the sweep report is `collected`
        there (bionn.outcome.sweep_report_collects_failures)."""
        returns, failures = [], []
        for job in plan.jobs:
            if job.num in plan.finished:
                ret = JobReturn(
                    overrides=list(job.overrides), status=JobStatus.COMPLETED, working_dir=job.run_dir
                )
                ret.return_value = finished_validation_loss(plan.finished[job.num])
            elif not self.wait or job.num in plan.live:
                ret = Submitted(overrides=list(job.overrides), status=JobStatus.UNKNOWN)
            else:
                try:
                    ret = self._result(job, submitted[job.num], folder)
                except KeyboardInterrupt:
                    print(interrupted_message(folder.path, self._EXECUTOR), file=sys.stderr, flush=True)
                    raise SystemExit(130) from None
                if ret.status == JobStatus.FAILED:
                    failures.append(self._failure(folder, job, submitted[job.num], ret, collected))
                    ret = Failed(ret.overrides, status=JobStatus.FAILED, _return_value=ret._return_value)
            returns.append(ret)
        return returns, failures

    def _failure(self, folder: SweepFolder, job: Job, sj: Any, ret: JobReturn, note: bool) -> tuple[str, str]:
        """(the job, why it ended without a result); noted in the sweep folder for its report if `note`."""
        raised = ret._return_value if isinstance(ret._return_value, BaseException) else None
        run = folder.run_folder(job)
        label, why = describe_failure(job, run, str(sj.job_id), sj.state, sj.paths.stderr, raised)
        if note:
            folder.note_ended(run.path, list(job.overrides), why)
        return label, why

    def _job_config(self, overrides: Sequence[str], idx: int) -> DictConfig:
        """The job's composed config (with its hydra node), as the job itself will compose it."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
            cfg.hydra.job.id = f"job_id_for_{idx}"
        return cfg

    # ---- submission ----------------------------------------------------------------------

    def _submit(self, folder: SweepFolder, todo: list[tuple[dict, Job]]) -> dict[int, Any]:
        """Submit every (resources, job) of `todo`; {job number: submitit job}. Each array's ids are
        recorded as soon as it is submitted."""
        from submitit.core.utils import FailedJobError

        max_size = self.max_array_size or self._cluster_max_array_size()
        arrays = plan_arrays(todo, max_size, self.params.get("array_parallelism"))
        submitted: dict[int, Any] = {}
        recorded: list[dict] = []
        for array in arrays:
            executor = self._executor(array, recorded)
            state = Singleton.get_state()
            job_params = [
                (list(job.overrides), "hydra.sweep.dir", job.num, f"job_id_for_{job.num}", state)
                for job in array.jobs
            ]
            try:
                submitit_jobs = executor.map_array(self, *zip(*job_params, strict=True))
            except FailedJobError as err:  # sbatch refused: Slurm's own words, one paragraph
                print(refused_message(folder.path, array, recorded, err), file=sys.stderr, flush=True)
                raise SystemExit(1) from None
            submitted.update({job.num: sj for job, sj in zip(array.jobs, submitit_jobs, strict=True)})
            recorded.append(array.record([str(sj.job_id) for sj in submitit_jobs]))
            folder.update_launch(arrays=recorded)
        return submitted

    def _executor(self, array: Array, recorded: list[dict]) -> Any:
        """An executor for one array, built as hydra-submitit-launcher builds it."""
        import submitit

        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=self.params["submitit_folder"],
            **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]}
            if "max_num_timeout" in self.params
            else {},
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        params = dict(array.params)
        if self._EXECUTOR == "slurm":
            params["array_parallelism"] = array.throttle
            if array.after is not None:
                extra = dict(params.get("additional_parameters") or {})
                extra["dependency"] = f"afterany:{recorded[array.after]['array_id']}"
                params["additional_parameters"] = extra
        executor.update_parameters(
            **{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()}
        )
        return executor

    def _cluster_max_array_size(self) -> int | None:
        return None

    def _result(self, job: Job, submitit_job: Any, folder: SweepFolder) -> JobReturn:
        try:
            self._wait(job, submitit_job, folder)
            return submitit_job.results()[0]
        except Exception:  # killed, out of memory, node failure, ...: the job left no result
            ret = JobReturn(overrides=list(job.overrides), status=JobStatus.FAILED)
            ret.return_value = SweepJobFailed.without_result(
                job, str(submitit_job.job_id), submitit_job.state, submitit_job.paths.stderr
            )
            return ret

    def _wait(self, job: Job, submitit_job: Any, folder: SweepFolder) -> None:
        """Wait until the job has ended (results() then returns at once)."""


def _run_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


def _task_config(cfg: DictConfig) -> dict:
    """The config the job's task receives (its hydra node removed), resolved as bionn.train.run resolves it
    for the ledger; Hydra's own resolvers see this job's hydra node meanwhile."""
    from hydra.core.hydra_config import HydraConfig

    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    hydra_config.set_config(cfg)
    try:
        task = copy.deepcopy(cfg)
        with read_write(task), open_dict(task):
            del task["hydra"]
        return OmegaConf.to_container(task, resolve=True, enum_to_str=True)
    finally:
        hydra_config.cfg = before


def _command() -> dict:
    """The launching command, for `bionn-sweep resume` (which runs it again in cwd)."""
    return {"executable": sys.executable, "argv": list(sys.argv), "cwd": os.getcwd()}


class SlurmLauncher(_SweepLauncher):
    _EXECUTOR = "slurm"

    def _wait(self, job: Job, submitit_job: Any, folder: SweepFolder) -> None:
        wait_for_slurm_job(job.num, submitit_job, folder.run_folder(job))

    def _cluster_max_array_size(self) -> int | None:
        return cluster_max_array_size()


class LocalLauncher(_SweepLauncher):
    _EXECUTOR = "local"
