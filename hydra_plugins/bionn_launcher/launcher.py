"""Hydra launchers for sweeps on Slurm (`hydra/launcher=slurm`) and on one machine (`hydra/launcher=local`).

They are hydra-submitit-launcher's, with one change: the launcher waits for
every job, even after one failed. A job that failed in training records it
(error.json, final_results.json) and returns, and the sweep report
(bionn.report.SweepReport) names it and exits non-zero when the sweep ends. A
job that raised anyway, or died without a result (killed, out of memory, node
failure), is named here (overrides, run folder, Slurm job id, its error.json or
its log) and handed to Hydra as a failure, so the sweep exits non-zero.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf, open_dict

from bionn.pins import require_tested
from bionn.run_folder import ERROR, RunFolder, RunFolderError

log = logging.getLogger(__name__)


class SweepJobFailed(RuntimeError):
    """A sweep job that ended without a result (killed, out of memory, failed on another task, ...)."""


class _WaitForEveryJob(plugin.BaseSubmititLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        require_tested("hydra-submitit-launcher")  # launch() below copies part of its 1.2 launch()
        assert self.config is not None and self.hydra_context is not None
        # Executor and parameters exactly as hydra-submitit-launcher builds them.
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=self.params["submitit_folder"],
            **{f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k == "max_num_timeout"},
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in base else f"{self._EXECUTOR}_{k}": v
                for k, v in self.params.items()
                if k not in init_keys
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")

        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            state = Singleton.get_state()
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state))
        jobs = executor.map_array(self, *zip(*job_params, strict=True))

        returns, failures = [], []
        for (overrides, _, idx, *_), job in zip(job_params, jobs, strict=True):
            try:
                ret = job.results()[0]
                run_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir)
            except Exception:  # killed, out of memory, node failure, ...: the job left no result
                ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
                ret.return_value = SweepJobFailed(
                    f"job #{idx} ({job.job_id}) ended {job.state} without a result; see {job.paths.stderr}"
                )
                run_dir = self._run_dir(overrides, idx)
            # A job that recorded its failure and returned (bionn.report.SweepReport in the
            # callbacks) is named by that report when the sweep ends; here the rest.
            if ret.status == JobStatus.FAILED:
                failures.append(_describe_failure(idx, overrides, run_dir, job, ret))
            returns.append(ret)
        if failures:
            report = f"{len(failures)} of {len(jobs)} sweep job(s) failed:\n" + "\n".join(failures)
            report += f"\nThe sweep's table of every job: bionn-report {sweep_dir}"
            log.error(report)
            print(report, file=sys.stderr)
        return returns

    def _run_dir(self, overrides: list[str], idx: int) -> Path:
        """The run folder the job will use (hydra.sweep.dir / hydra.sweep.subdir, as the job resolves it)."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
            cfg.hydra.job.id = f"job_id_for_{idx}"
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


def _describe_failure(idx: int, overrides: list[str], run_dir: Path, job: Any, ret: JobReturn) -> str:
    folder = RunFolder(run_dir)
    try:
        error = folder.error()
    except RunFolderError as err:
        error = {"type": "unreadable error record", "message": str(err)}
    if error:
        why = f"{error.get('type')}: {error.get('message')} (see {folder / ERROR})"
    elif isinstance(ret.return_value, BaseException) and not isinstance(ret.return_value, SweepJobFailed):
        why = f"{type(ret.return_value).__name__}: {ret.return_value}"
    else:
        why = f"ended {job.state} without {ERROR}; job log: {job.paths.stderr}"
    return f"  #{idx} {' '.join(overrides)}\n     run folder {run_dir}, job {job.job_id}: {why}"


class SlurmLauncher(_WaitForEveryJob):
    _EXECUTOR = "slurm"


class LocalLauncher(_WaitForEveryJob):
    _EXECUTOR = "local"
