"""How a job ends when it does not end in training: one paragraph, never a traceback.

An outcome the user caused ends with one paragraph (what, where, the way out) and its exit code:

    a refusal, a config error at any stage, a corrupt record     1
    a failed training (error.json holds the traceback)          1
    an interruption by signal n (Ctrl-C is SIGINT, 2)          128 + n

bionn.train has recorded an interruption or a failure in the run folder and said so (how to
resume, where error.json is); every other designed outcome is refused before anything is
written. `HYDRA_FULL_ERROR=1` shows the Python traceback as well. Inside a sweep:

- jobs run in this process (Hydra's basic launcher): the job's paragraph is logged and noted in
  ENDED, the sweep goes on, and the sweep report (bionn.report.SweepReport) names the job and
  exits 1 when the sweep ends;
- jobs run by bionn's launchers (local, Slurm): the error goes back to the launcher, which names
  the job in one line.
An error bionn did not design (a bug) keeps its traceback, except in a sweep run in this process,
where it is noted like the others so that the sweep and its report still end.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from bionn.config.errors import ConfigError
from bionn.pins import UntestedVersionError
from bionn.run_folder import RunFolderError
from bionn.sweep_folder import SweepFolderError

log = logging.getLogger("bionn")

DESIGNED = (ConfigError, RunFolderError, SweepFolderError, UntestedVersionError)
# (job folder, message) of every job of this process's sweep that ended without training.
ENDED: list[tuple[str, str]] = []


def end_cleanly(job: Callable[[], Any]) -> Any:
    """job(), with every designed outcome ended as the module's docstring says."""
    try:
        return job()
    except KeyboardInterrupt as err:
        if _full_error():
            raise
        if not getattr(err, "recorded", False):  # bionn.train says more when training had begun
            log.warning("interrupted by SIGINT before training began; nothing was written")
        raise SystemExit(128 + signal.SIGINT) from None
    except Exception as err:
        if _full_error():
            raise
        where = _sweep()
        if where is None and getattr(err, "recorded", False):
            raise SystemExit(1) from None  # bionn.train logged it and wrote error.json, traceback included
        if where == "launcher" or (where is None and not isinstance(err, DESIGNED)):
            raise
        message = str(err) if isinstance(err, DESIGNED) else f"{type(err).__name__}: {err}"
        log.error("%s", message)
        if where == "here":
            ENDED.append((_job_folder(), message))
            return float("inf")
        raise SystemExit(1) from None


def _full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _hydra_multirun() -> Any | None:
    """The running job's Hydra config in a multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except ValueError:
        return None
    return hydra_cfg if hydra_cfg.mode == RunMode.MULTIRUN else None


def sweep_report_collects_failures() -> bool:
    """True in a multirun whose hydra.callbacks include bionn.report.SweepReport: that callback
    names the failed jobs and exits non-zero when the sweep ends, so a failed job returns and
    the other jobs still run (Hydra would otherwise stop the sweep at the first exception)."""
    hydra_cfg = _hydra_multirun()
    callbacks = (hydra_cfg.get("callbacks") or {}) if hydra_cfg is not None else {}
    return any(str(c.get("_target_", "")) == "bionn.report.SweepReport" for c in callbacks.values())


def _sweep() -> str | None:
    """None outside a multirun; "here" when its jobs run in this process and the sweep report collects
    their ends; "launcher" when another process (bionn's launchers, submitit) reports them."""
    hydra_cfg = _hydra_multirun()
    if hydra_cfg is None:
        return None
    if not str(hydra_cfg.launcher.get("_target_", "")).endswith("BasicLauncher"):
        return "launcher"
    return "here" if sweep_report_collects_failures() else None


def _job_folder() -> str:
    from hydra.core.hydra_config import HydraConfig

    return str(HydraConfig.get().runtime.output_dir)
