"""How a job ends when it does not end in training: one paragraph, never a traceback.

An outcome the user caused ends with one paragraph (what, where, the way out) and its exit code:

    a refusal (another config in the folder), a corrupt record     1   (nothing written)
    a config error found by bionn's checks                         1   (a failed attempt, no ledger)
    a failure during training (error.json holds the traceback)     1
    an interruption by signal n (Ctrl-C is SIGINT, 2)             128 + n

bionn.train has recorded a config error, a failure or an interruption in the run folder and said
so (how to resume, where error.json is); a refusal happens before anything is written.
`HYDRA_FULL_ERROR=1` shows the Python traceback as well. Inside a sweep a recorded failure is
returned (bionn.train), and the sweep report names it; a job that ended without a result in its
run folder is noted in the sweep folder (bionn.sweep_folder.ENDED_JOBS) and shown by the sweep report
(bionn.report.SweepReport) as failed, with its reason, before it exits 1:

- jobs run in this process (Hydra's basic launcher): a refused job, here;
- jobs run by bionn's launchers (local, Slurm): a job that raised or died, by the launcher (which,
  without the sweep report, names it itself and exits 1).
An error bionn did not design (a bug) keeps its traceback, except in a sweep run in this process,
where it is noted like the others so that the sweep and its report still end.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bionn.config.errors import ConfigError
from bionn.pins import UntestedVersionError
from bionn.run_folder import RunFolderError
from bionn.sweep_folder import SweepFolder, SweepFolderError

log = logging.getLogger("bionn")


class RecordedInterrupt(KeyboardInterrupt):
    """Ctrl-C after bionn.train recorded the attempt as interrupted and said how to resume it."""


class RecordedFailure(Exception):
    """A failed attempt that bionn.train recorded (error.json holds the traceback) and logged;
    `error` is what was raised."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


DESIGNED = (ConfigError, RunFolderError, SweepFolderError, UntestedVersionError)
# The launchers (their hydra.launcher._target_) that run a sweep's jobs in the launching process, one after
# another, so that the sweep report there collects a job's end; any other runs them elsewhere and names them.
IN_PROCESS_LAUNCHERS = frozenset({"hydra._internal.core_plugins.basic_launcher.BasicLauncher"})


def end_cleanly(job: Callable[[], Any]) -> Any:
    """job(), with every designed outcome ended as the module's docstring says."""
    try:
        return job()
    except KeyboardInterrupt as err:
        if _full_error():
            raise
        if not isinstance(err, RecordedInterrupt):  # bionn.train says more when training had begun
            log.warning("interrupted by SIGINT before training began; nothing was written")
        raise SystemExit(128 + signal.SIGINT) from None
    except Exception as raised:
        if _full_error():
            raise
        err = raised.error if isinstance(raised, RecordedFailure) else raised
        where = _sweep()
        if where is None and isinstance(raised, RecordedFailure):
            raise SystemExit(1) from None  # bionn.train logged it and wrote error.json, traceback included
        designed = isinstance(err, DESIGNED)
        message = str(err) if designed else f"{type(err).__name__}: {err}"
        if designed:
            log.error("%s", message)
        if where == "launcher" or (where is None and not designed):
            if err is raised:
                raise  # the launcher names the job (a bug keeps its traceback)
            raise err from err.__cause__  # the error the attempt recorded, not its wrapper
        if where == "here":
            _note_ended(message)
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


def sweep_report_collects_failures(hydra_cfg: Any | None = None) -> bool:
    """True in a multirun whose hydra.callbacks include bionn.report.SweepReport: that callback
    names the failed jobs and exits non-zero when the sweep ends, so a failed job returns and
    the other jobs still run (Hydra would otherwise stop the sweep at the first exception).
    hydra_cfg: the sweep's hydra node (a launcher's); by default the running job's."""
    hydra_cfg = hydra_cfg if hydra_cfg is not None else _hydra_multirun()
    callbacks = (hydra_cfg.get("callbacks") or {}) if hydra_cfg is not None else {}
    return any(str(c.get("_target_", "")) == "bionn.report.SweepReport" for c in callbacks.values())


def _sweep() -> str | None:
    """None outside a multirun; "here" when its jobs run in this process and the sweep report collects
    their ends; "launcher" when another process (bionn's launchers, submitit) reports them."""
    hydra_cfg = _hydra_multirun()
    if hydra_cfg is None:
        return None
    if str(hydra_cfg.launcher.get("_target_", "")) not in IN_PROCESS_LAUNCHERS:
        return "launcher"
    return "here" if sweep_report_collects_failures() else None


def _note_ended(why: str) -> None:
    """Note the running job, ended without a result in its run folder, in its sweep folder for the report."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    # (hydra.sweep.dir is relative to where the sweep was launched; the job may run in its own folder: chdir)
    sweep_dir = Path(str(hydra_cfg.runtime.cwd)) / str(hydra_cfg.sweep.dir)
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    SweepFolder(sweep_dir).note_ended(str(hydra_cfg.runtime.output_dir), overrides, why)
