"""Hydra launchers for sweeps on Slurm (`hydra/launcher=slurm`) and on one machine (`hydra/launcher=local`).

They are hydra-submitit-launcher's, with a sweep's life added (docs/sweeps.md):

- **Resume.** The sweep folder records its job list (sweep.json, bionn.sweep_folder). Launched
  again into the same folder, a job whose run folder holds a finished run of the same config is
  not submitted (no Slurm job, no process); nor is one still pending or running (squeue, or its
  run folder's running attempt), which is named with how to cancel it; an unfinished one resumes
  in its run folder; job numbers stay. A launch whose job list, or a job's result-deciding values
  (its run folder's ledger), differ from what the folder holds is refused before anything is
  submitted.
- **Wait, or not.** With `wait: true` the launcher waits for every job, even after one failed:
  a job that failed in training records it and returns, and the sweep report names it; a job
  that raised anyway, or died without a result (killed, out of memory, node failure), is named
  here. A Slurm job requeued after its node was lost has an attempt that no process can close: the
  waiting launcher closes it as interrupted, naming the node (SlurmLauncher._wait). With
  `wait: false` it returns once the jobs are submitted; the last job to end writes the sweep
  report.
- **Arrays.** Jobs whose own config asks for equal resources (its `hydra.launcher` keys) share
  a Slurm array; an array holds at most the cluster's MaxArraySize jobs, and
  `array_parallelism` bounds the jobs running at once across all arrays of the launch.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from bionn.config.sources import config_file
from bionn.outcome import ENDED, sweep_report_collects_failures
from bionn.pins import require_tested
from bionn.run_folder import (
    ERROR,
    FINAL_STATUSES,
    FINISHED,
    ConfigChanged,
    RunFolderError,
    Status,
    process_alive,
)
from bionn.slurm import QUEUED, RUNNING, attempt_job_id, check_batch_split, job_state, queue_states
from bionn.sweep_folder import SWEEP, Job, SweepFolder, SweepFolderError, SweepRefused
from hydra_plugins.bionn_launcher import config as _schemas  # noqa: F401  (registers the launcher schemas)

log = logging.getLogger(__name__)

# How often a waiting Slurm launcher looks for a job requeued after its attempt began (SlurmLauncher._wait).
REQUEUE_POLL_S = 5.0
# Keys of the whole sweep, not of one job's resources.
SWEEP_KEYS = ("submitit_folder", "max_num_timeout", "array_parallelism", "wait", "max_array_size", "per_job")


class SweepJobFailed(RuntimeError):
    """A sweep job that ended without a result (killed, out of memory, failed on another task, ...)."""


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


class Array:
    """Jobs submitted together: equal resources, at most max_array_size of them. (No dataclass: Hydra's
    plugin scan executes this module outside sys.modules.)"""

    def __init__(self, params: dict, jobs: list[Job]) -> None:
        self.params, self.jobs = params, jobs
        self.throttle: int | None = None
        self.after: int | None = None  # index of the array this one waits for (afterany)


class _SweepLauncher(plugin.BaseSubmititLauncher):
    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.wait = bool(self.params.pop("wait", True))
        self.max_array_size = self.params.pop("max_array_size", None)

    # ---- in the job's process -----------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        try:
            return super().__call__(*args, **kwargs)
        finally:
            if not self.wait:
                _report_if_every_job_ended(Path(str(self.config.hydra.sweep.dir)))

    # ---- in the launcher's process -----------------------------------------------------------

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        require_tested("hydra-submitit-launcher")  # the executor setup follows its 1.2 launch()
        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        folder = SweepFolder(sweep_dir)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")

        configs = [self._job_config(o, idx) for idx, o in enumerate(job_overrides, start=initial_job_idx)]
        jobs = [
            Job(idx, tuple(overrides), os.path.relpath(_run_dir(cfg), sweep_dir))
            for (idx, overrides), cfg in zip(
                enumerate(job_overrides, start=initial_job_idx), configs, strict=True
            )
        ]
        sweep_overrides = [str(o) for o in self.config.hydra.overrides.task]
        try:
            folder.check_jobs(jobs, sweep_overrides)
            finished = self._check_run_folders(folder, jobs, configs)
            live = live_jobs(folder, [job for job in jobs if job.num not in finished])
            todo = [
                (job, cfg)
                for job, cfg in zip(jobs, configs, strict=True)
                if job.num not in finished and job.num not in live
            ]
            resources = [(self._resources(cfg), job) for job, cfg in todo]
            for (params, _), (_, cfg) in zip(resources, todo, strict=True):
                if OmegaConf.select(cfg, "dataset.shape.batch_size") is None:
                    continue  # not a bionn training (another app launched by this launcher)
                check_batch_split(
                    cfg.dataset.shape.batch_size,
                    int(params.get("nodes") or 1),
                    int(params.get("tasks_per_node") or 1),
                    config_file("dataset", cfg.hydra),
                )
        except ValueError as err:  # refused before anything was submitted: the message, no traceback
            print(f"bionn: error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

        for job in jobs:
            state = (
                f"  (finished: {finished[job.num]['status']}; not submitted)" if job.num in finished else ""
            )
            log.info(f"\t#{job.num} : {' '.join(filter_overrides(job.overrides))}{state}")
        if live:
            lines = [f"  #{num}: {what}" for num, what in sorted(live.items())]
            print(
                f"bionn: {len(live)} job(s) of the sweep are still pending or running; not submitted again:\n"
                + "\n".join(lines)
                + f"\nWait for them (bionn-report {sweep_dir} --watch), or cancel them and launch again.",
                file=sys.stderr,
                flush=True,
            )
        folder.record_launch(
            jobs,
            sweep_overrides,
            _command(),
            {
                "launcher": self._EXECUTOR,
                "wait": self.wait,
                "submitted": [job.num for job, _ in todo],
                "finished": sorted(finished),
                "live": sorted(live),
                "arrays": [],
            },
        )
        submitted = self._submit(folder, resources) if todo else {}
        if not self.wait:
            self._tell_where(folder, submitted, finished)
        returns, failures = [], []
        for job in jobs:
            if job.num in finished:
                returns.append(_finished_return(job, finished[job.num]))
            elif not self.wait or job.num in live:
                returns.append(Submitted(overrides=list(job.overrides), status=JobStatus.UNKNOWN))
            else:
                try:
                    ret = self._result(job, submitted[job.num], folder)
                except KeyboardInterrupt:
                    self._interrupted_while_waiting(folder)
                if ret.status == JobStatus.FAILED:
                    label, why = _describe_failure(job, folder, submitted[job.num], ret)
                    failures.append((label, why))
                    ENDED.append((str(folder.run_folder(job).path), list(job.overrides), why))
                    ret = Failed(ret.overrides, status=JobStatus.FAILED, _return_value=ret._return_value)
                returns.append(ret)
        if failures:
            if not sweep_report_collects_failures(self.config.hydra):  # else the sweep report shows them
                lines = [f"  {job}\n     {why}" for job, why in failures]
                report = f"{len(failures)} of {len(todo)} sweep job(s) failed:\n" + "\n".join(lines)
                report += f"\nThe sweep's table of every job: bionn-report {sweep_dir}"
                log.error(report)
                print(report, file=sys.stderr)
                raise SystemExit(1)
        return returns

    def _interrupted_while_waiting(self, folder: SweepFolder) -> NoReturn:
        """Ctrl-C while the launcher waits: say what goes on and how to follow it, and end as SIGINT does."""
        jobs = (
            "the jobs go on in Slurm"
            if self._EXECUTOR == "slurm"
            else "the jobs got the signal too and record their interruption"
        )
        print(
            f"\nbionn: interrupted while waiting for the sweep {folder.path}; {jobs}. Follow it: "
            f"bionn-report {folder.path} --watch; resume what did not finish: "
            f"bionn-sweep resume {folder.path}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(130)

    def _job_config(self, overrides: Sequence[str], idx: int) -> DictConfig:
        """The job's composed config (with its hydra node), as the job itself will compose it."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
            cfg.hydra.job.id = f"job_id_for_{idx}"
        return cfg

    def _check_run_folders(self, folder: SweepFolder, jobs: list[Job], configs: list[DictConfig]) -> dict:
        """{job number: final results} of the jobs finished with this config; SweepRefused naming every
        run folder that holds another config, and every finished run folder that was lost since."""
        record = folder.record_or_none()
        known_finished = {
            n for launch in (record or {}).get("launches", []) for n in launch.get("finished", [])
        }
        finished, problems = {}, []
        for job, cfg in zip(jobs, configs, strict=True):
            run = folder.run_folder(job)
            try:
                if OmegaConf.select(cfg, "runtime.on_config_change", default=None) != "move_aside":
                    if run.ledger() is not None:
                        run.check_ledger(_task_config(cfg))
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

    # ---- submission ----------------------------------------------------------------------

    def _submit(self, folder: SweepFolder, todo: list[tuple[dict, Job]]) -> dict[int, Any]:
        """Submit every (resources, job) of `todo`; {job number: submitit job}. Each array's ids are
        recorded as soon as it is submitted."""
        from submitit.core.utils import FailedJobError

        arrays = plan_arrays(
            todo,
            self.max_array_size or self._cluster_max_array_size(),
            self.params.get("array_parallelism"),
        )
        submitted: dict[int, Any] = {}
        recorded: list[dict] = []
        for array in arrays:
            executor = self._executor(array, recorded)
            job_params = [
                (
                    list(job.overrides),
                    "hydra.sweep.dir",
                    job.num,
                    f"job_id_for_{job.num}",
                    Singleton.get_state(),
                )
                for job in array.jobs
            ]
            try:
                submitit_jobs = executor.map_array(self, *zip(*job_params, strict=True))
            except FailedJobError as err:  # sbatch refused: Slurm's own words, one paragraph
                self._refused(folder, array, recorded, err)
            submitted.update({job.num: sj for job, sj in zip(array.jobs, submitit_jobs, strict=True)})
            recorded.append(
                {
                    "array_id": str(submitit_jobs[0].job_id).split("_")[0],
                    "jobs": [job.num for job in array.jobs],
                    "job_ids": {
                        str(job.num): str(sj.job_id)
                        for job, sj in zip(array.jobs, submitit_jobs, strict=True)
                    },
                    "throttle": array.throttle,
                    "resources": array.params,
                }
            )
            folder.update_launch(arrays=recorded)
        return submitted

    def _refused(self, folder: SweepFolder, array: Array, recorded: list[dict], err: Exception) -> None:
        jobs = ", ".join(f"#{job.num}" for job in array.jobs)
        earlier = ", ".join(r["array_id"] for r in recorded)
        print(
            f"bionn: error: Slurm refused to submit job(s) {jobs} of the sweep {folder.path}: "
            f"{str(err).strip()}\n"
            + (
                f"The arrays submitted before it ({earlier}) run on; {folder / SWEEP} records them. "
                if earlier
                else "Nothing was submitted. "
            )
            + "Ask for resources the cluster has (sinfo -N -o '%N %c %m %G' lists its nodes) and run the "
            "same command again.",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1) from None

    def _resources(self, cfg: DictConfig) -> dict:
        """The launcher's resource keys, with those of every `per_job` rule whose `when` matches the job's
        own config applied in order; sweep-wide keys left out."""
        params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
        resources = {k: v for k, v in params.items() if k != "_target_" and k not in SWEEP_KEYS}
        for number, rule in enumerate(self.params.get("per_job") or []):
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

    def _tell_where(self, folder: SweepFolder, submitted: dict[int, Any], finished: dict) -> None:
        arrays = sorted({str(j.job_id).split("_")[0] for j in submitted.values()})
        kind = "Slurm array(s)" if self._EXECUTOR == "slurm" else "process(es)"
        lines = [
            f"bionn: submitted {len(submitted)} job(s) of the sweep {folder.path}"
            + (f" as {kind} {', '.join(arrays)}" if arrays else "")
            + (f"; {len(finished)} finished job(s) not submitted" if finished else ""),
            f"bionn: watch it:   bionn-report {folder.path} --watch",
            f"bionn: resume it:  bionn-sweep resume {folder.path}   (the last job to end writes the report)",
        ]
        print("\n".join(lines), flush=True)

    def _result(self, job: Job, submitit_job: Any, folder: SweepFolder) -> JobReturn:
        try:
            self._wait(job, submitit_job, folder)
            return submitit_job.results()[0]
        except Exception:  # killed, out of memory, node failure, ...: the job left no result
            ret = JobReturn(overrides=list(job.overrides), status=JobStatus.FAILED)
            ret.return_value = SweepJobFailed(
                f"job #{job.num} ({submitit_job.job_id}) ended {submitit_job.state} without a result; "
                f"see {submitit_job.paths.stderr}"
            )
            return ret

    def _wait(self, job: Job, submitit_job: Any, folder: SweepFolder) -> None:
        """Wait until the job has ended (results() then returns at once)."""


def live_jobs(folder: SweepFolder, jobs: list[Job]) -> dict[int, str]:
    """{job number: what runs} of the jobs that are still pending or running: a Slurm job squeue holds
    as pending or running (the sweep's recorded id, or the id of the run folder's running attempt), or
    a running attempt whose process still exists on this host. Submitting such a job again would put a
    second process into its run folder."""
    queue = queue_states()
    ids = folder.slurm_ids() if folder.exists() else {}
    last = (folder.last_launch() or {}) if folder.exists() else {}
    local = last.get("launcher") == "local" and last.get("host") == socket.gethostname()
    host = socket.gethostname()
    live = {}
    for job in jobs:
        try:
            attempts = folder.run_folder(job).attempts()
        except RunFolderError:
            attempts = []
        running = attempts[-1] if attempts and attempts[-1].get("outcome") is None else None
        for job_id in dict.fromkeys([ids.get(job.num), attempt_job_id((running or {}).get("slurm"))]):
            state = (queue or {}).get(job_id or "")
            if state in QUEUED or state in RUNNING:
                live[job.num] = f"Slurm job {job_id} is {state} (cancel it: scancel {job_id})"
                break
        else:
            pid = (running or {}).get("pid") if (running or {}).get("host") == host else None
            if running and not running.get("slurm") and isinstance(pid, int) and process_alive(pid):
                live[job.num] = f"process {pid} on {host} trains it (stop it: kill -INT {pid})"
            elif local and _local_job_alive(ids.get(job.num)):  # started, but no attempt recorded yet
                pid = ids[job.num]
                live[job.num] = f"process {pid} on {host} is starting it (stop it: kill -INT {pid})"
    return live


def _local_job_alive(job_id: str | None) -> bool:
    """A job of the local launcher (its id is its process id) whose submitit process still runs here."""
    if not job_id or not job_id.isdigit() or not process_alive(int(job_id)):
        return False
    try:
        return b"submitit" in Path(f"/proc/{job_id}/cmdline").read_bytes()
    except OSError:
        return False


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


def _finished_return(job: Job, final: dict) -> JobReturn:
    """What a finished job (not submitted again) hands to Hydra: its validation loss, as bionn.train.run."""
    loss = ((final.get("evaluation") or {}).get("validation") or {}).get("loss")
    ret = JobReturn(overrides=list(job.overrides), status=JobStatus.COMPLETED, working_dir=job.run_dir)
    ret.return_value = float("inf") if loss is None else float(loss)
    return ret


def _command() -> dict:
    """The launching command, for `bionn-sweep resume` (which runs it again in cwd)."""
    return {"executable": sys.executable, "argv": list(sys.argv), "cwd": os.getcwd()}


def _indent(err: Exception) -> str:
    return "\n".join("    " + line for line in str(err).splitlines()[1:])


def _report_if_every_job_ended(sweep_dir: Path) -> None:
    """In a launch that did not wait: once every job of the sweep has ended, write the sweep report. Each
    job asks after its own end is recorded, so the last one to end sees every other end."""
    try:
        folder = SweepFolder(sweep_dir)
        for job in folder.jobs():
            run = folder.run_folder(job)
            if not run.is_run() or run.status() not in FINAL_STATUSES:
                return
        from bionn.report import write_report

        write_report(sweep_dir)
        log.info("every job of the sweep ended; wrote the sweep report in %s", sweep_dir)
    except (SweepFolderError, RunFolderError, OSError) as err:
        log.warning("could not write the sweep report of %s: %s (bionn-report %s)", sweep_dir, err, sweep_dir)


def _describe_failure(job: Job, folder: SweepFolder, submitit_job: Any, ret: JobReturn) -> tuple[str, str]:
    """(the job, why it ended without a result)."""
    run = folder.run_folder(job)
    try:
        error = run.error()
    except RunFolderError as err:
        error = {"type": "unreadable error record", "message": str(err)}
    if error:
        why = f"{error.get('type')}: {error.get('message')} (see {run / ERROR})"
    elif isinstance(raised := ret._return_value, BaseException) and not isinstance(raised, SweepJobFailed):
        why = f"{type(raised).__name__}: {raised}"  # (ret.return_value would raise it)
    else:
        why = f"ended {submitit_job.state} without {ERROR}; job log: {submitit_job.paths.stderr}"
    where = f"run folder {run.path}, job {submitit_job.job_id}"
    return f"#{job.num} ({' '.join(job.overrides)})", f"{where}: {why}"


def _slurm_job_ended(submitit_job: Any) -> bool:
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


class SlurmLauncher(_SweepLauncher):
    _EXECUTOR = "slurm"

    def _wait(self, job: Job, submitit_job: Any, folder: SweepFolder) -> None:
        """Wait until the job has ended. Meanwhile, when Slurm has requeued it after its attempt began
        without that attempt recording its end (its node was lost: the job then waits for nodes, maybe
        long), close that attempt in its run folder as interrupted, naming the lost node: the folder must
        not say running while no process of the job runs. Only once squeue says PENDING (not COMPLETING):
        the job's processes are gone, and its next start is seconds away at the least."""
        run, job_id = folder.run_folder(job), str(submitit_job.job_id)
        looked = time.monotonic()
        while not _slurm_job_ended(submitit_job):
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
                    job.num,
                    job_id,
                    closed["number"],
                    closed["reason"],
                    run.path,
                )

    def _cluster_max_array_size(self) -> int | None:
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


class LocalLauncher(_SweepLauncher):
    _EXECUTOR = "local"
