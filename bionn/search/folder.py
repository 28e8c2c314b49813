"""The search folder: a sweep folder that holds an Optuna study, and the one owner of its files.

    search.json         what the search is (space, objective, sampler, pruner, base overrides)
    study.journal       the Optuna study (journal storage: one shared file, no database server)
    study.journal.lock  held for a moment by whoever writes the study (Optuna's O_EXCL file lock)
    claim.lock          held while a worker picks its next trial (so two never pick the same one)
    trials/<n>/         trial n's run folder (bionn.run_folder)
    workers/<i>/        worker i's log and worker.json (host, pid, Slurm ids, heartbeat, trial, waiting)
    sweep.json          the launcher's record of the worker jobs (bionn.sweep_folder)

A worker claims, in this order: a trial it owns that is still running (it was
preempted or killed and is back: the trial resumes in its run folder), a running
trial whose worker is dead (pid gone from this host, or no heartbeat for
dead_after_s), a waiting (enqueued) trial, or a new trial while fewer than n_trials
trials are running or ended. Journal storage has no heartbeat of its own (Optuna's
RDB storage has), so worker.json is this folder's. A worker record left by an earlier
start of the asking worker's own Slurm job (requeued) is dead, whatever its heartbeat.
A worker with no trial left to start waits (`waiting` in its worker.json) while another
worker's trial runs, to take it over should that worker die; one waiting worker is enough,
so a worker that finds another one waiting ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bionn.io import atomic_write_json
from bionn.run_folder import RunFolder, RunFolderError, ledger_excluded, now, process_alive, read_json
from bionn.search.space import SearchError, SearchSpec, make_pruner, make_sampler
from bionn.slurm import attempt_job_id

log = logging.getLogger(__name__)

SEARCH = "search.json"
JOURNAL = "study.journal"
CLAIM = "claim"  # claim.lock
TRIALS = "trials"
WORKERS = "workers"
WORKER = "worker.json"
STUDY_NAME = "bionn"
VERSION = 1
# user attributes of a trial
OWNER, RUN_DIR, OVERRIDES, ERROR_ATTR = "worker", "run_dir", "overrides", "error"


@dataclass
class Claimed:
    """A trial a worker trains: its number, id, parameters, run folder, and whether it resumes."""

    number: int
    trial_id: int
    params: dict[str, Any]
    run_dir: Path
    resumed: bool


class Heartbeat:
    """A worker's record, workers/<i>/worker.json, rewritten with a fresh time by every update."""

    def __init__(self, path: Path, index: int, slurm: dict | None) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.record: dict[str, Any] = {
            "worker": index,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slurm": slurm,
            "started": now(),
            "trial": None,
            "trials": [],
            "waiting": False,
            "stopped": None,
        }
        self.update()

    def update(self, **fields: Any) -> None:
        with self.lock:
            self.record.update(fields, heartbeat=now(), heartbeat_unix=time.time())
            atomic_write_json(self.path, self.record)


class SearchFolder:
    """One search's folder; every read and write of its study and records goes through here."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._storage: Any = None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def is_search(self) -> bool:
        return (self / SEARCH).exists()

    # ---- the record ---------------------------------------------------------------------

    def record(self) -> dict | None:
        try:
            record = read_json(self / SEARCH)
        except RunFolderError as err:
            raise SearchError(f"{err}; the search's record cannot be read (nothing was changed)") from None
        if record is not None and (not isinstance(record, dict) or not isinstance(record.get("spec"), dict)):
            raise SearchError(f"{self / SEARCH}: no 'spec' object (hand-edited?); nothing was changed")
        return record

    def begin(self, spec: SearchSpec, base_overrides: list[str], config_name: str) -> None:
        """Record the search (or check that the folder holds this one) and create or open its study.
        SearchError before anything is written when the folder holds another search, or its study
        cannot be read."""
        deciding = {**spec.record(), "base_overrides": _deciding(base_overrides)}
        record = self.record()
        if record is not None:  # a logger may change (logger=mlflow on a re-run): it decides no result
            held = {**record["spec"], "base_overrides": _deciding(record.get("base_overrides", []))}
            differences = [
                f"  {key}: {held.get(key)!r} (recorded) -> {deciding[key]!r} (this run)"
                for key in deciding
                if held.get(key) != deciding[key]
            ]
            if differences:
                raise SearchError(
                    f"{self.path} holds another search ({self / SEARCH}); refusing to mix their trials, "
                    "nothing was started:\n" + "\n".join(differences) + "\nRun the same command to "
                    "continue it, or search into another folder (hydra.sweep.dir=...)."
                )
        if (self / JOURNAL).exists() or record is not None:
            study = self.study(spec, seed_offset=0)  # reads the journal: an unreadable one is reported
            if study.direction.name.lower() != spec.direction.value:
                raise SearchError(
                    f"{self / JOURNAL}: its study is {study.direction.name.lower()}d, this search "
                    f"{spec.direction.value}s {spec.metric}; search into another folder"
                )
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            study = self._create(spec)
            for params in spec.enqueue:
                study.enqueue_trial(params, skip_if_exists=True)
        atomic_write_json(
            self / SEARCH,
            {
                "version": VERSION,
                "created": (record or {}).get("created") or now(),
                "updated": now(),
                "config_name": config_name,
                "base_overrides": list(base_overrides),
                "spec": spec.record(),
                "n_trials": spec.n_trials,
                "n_workers": spec.n_workers,
                "dead_after_s": spec.dead_after_s,  # for bionn-report --watch (not part of the study)
                "source": spec.source,
            },
        )

    # ---- the study ----------------------------------------------------------------------

    def storage(self) -> Any:
        """The study's journal storage (opened once per SearchFolder; it reads new entries as they come)."""
        import optuna
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        if self._storage is not None:
            return self._storage
        path = str(self / JOURNAL)
        try:
            backend = JournalFileBackend(path, lock_obj=JournalFileOpenLock(path))
            self._storage = optuna.storages.JournalStorage(backend)
            return self._storage
        except Exception as err:
            raise SearchError(
                f"{path}: the study cannot be read ({type(err).__name__}: {err}); it was not changed. "
                "Restore it, or search into another folder (hydra.sweep.dir=...)"
            ) from None

    def _create(self, spec: SearchSpec) -> Any:
        import optuna

        return optuna.create_study(
            storage=self.storage(), study_name=STUDY_NAME, direction=spec.direction.value, load_if_exists=True
        )

    def study(self, spec: SearchSpec, seed_offset: int = 0) -> Any:
        """The study with the search's sampler (seeded by seed + seed_offset) and pruner."""
        import optuna

        storage = self.storage()
        try:
            return optuna.load_study(
                study_name=STUDY_NAME,
                storage=storage,
                sampler=make_sampler(spec.sampler, seed_offset),
                pruner=make_pruner(spec.pruner),
            )
        except KeyError:
            raise SearchError(
                f"{self / JOURNAL}: holds no study named {STUDY_NAME!r} (not a bionn search's study?); "
                "it was not changed"
            ) from None

    def trials(self) -> list[Any]:
        """Every trial of the study (FrozenTrial), without sampler or pruner; [] without a study."""
        import optuna

        if not (self / JOURNAL).exists():
            return []
        try:
            return optuna.load_study(study_name=STUDY_NAME, storage=self.storage()).get_trials(deepcopy=False)
        except KeyError:
            return []

    def run_folder(self, number: int) -> RunFolder:
        return RunFolder(self / TRIALS / str(number))

    # ---- workers ------------------------------------------------------------------------

    def worker_record(self, index: int) -> dict | None:
        try:
            record = read_json(self / WORKERS / str(index) / WORKER)
        except RunFolderError:
            return None  # torn by a kill: as good as absent (the worker is not alive to finish it)
        return record if isinstance(record, dict) else None

    def worker_alive(
        self, index: int, dead_after_s: float, me: int | None = None, slurm_job: str | None = None
    ) -> bool:
        """True if worker `index` is running: its process is on this host, or (elsewhere) its heartbeat
        is younger than dead_after_s. slurm_job: the asking process's Slurm job (bionn.slurm.attempt_job_id);
        a record written by an earlier start of that same job (requeued after a lost node) is dead, since
        Slurm runs a job once at a time, however young its heartbeat."""
        record = self.worker_record(index)
        if record is None or record.get("stopped"):
            return False
        if slurm_job is not None and attempt_job_id(record.get("slurm")) == slurm_job:
            return False
        if index == me and record.get("pid") == os.getpid() and record.get("host") == socket.gethostname():
            return True
        if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
            if not process_alive(record["pid"]):
                return False
        return time.time() - float(record.get("heartbeat_unix", 0)) < dead_after_s

    @contextlib.contextmanager
    def heartbeat(self, index: int, spec: SearchSpec, slurm: dict | None) -> Iterator[Heartbeat]:
        """Write workers/<index>/worker.json now and every heartbeat_s until the block ends."""
        beat = Heartbeat(self / WORKERS / str(index) / WORKER, index, slurm)
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(spec.heartbeat_s):
                with contextlib.suppress(OSError):
                    beat.update()

        thread = threading.Thread(target=loop, name="bionn-search-heartbeat", daemon=True)
        thread.start()
        try:
            yield beat
        finally:
            stop.set()
            thread.join(timeout=5)
            with contextlib.suppress(OSError):
                beat.update(stopped=now())

    @contextlib.contextmanager
    def claim_lock(self) -> Iterator[None]:
        from optuna.storages.journal import JournalFileOpenLock

        lock = JournalFileOpenLock(str(self / CLAIM), grace_period=120)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def claim(self, index: int, spec: SearchSpec, n_trials: int) -> Claimed | None:
        """The next trial for worker `index` (see the module's docstring), or None when the study has
        n_trials trials running or ended and none to take over."""
        from optuna.trial import TrialState

        with self.claim_lock():
            trials = self.trials()
            running = [t for t in trials if t.state == TrialState.RUNNING]
            own = [t for t in running if t.user_attrs.get(OWNER) == index]
            orphans = [
                t
                for t in running
                if t.user_attrs.get(OWNER) != index
                and not self.worker_alive(int(t.user_attrs.get(OWNER, -1)), spec.dead_after_s, me=index)
            ]
            study = self.study(spec, seed_offset=len(trials))
            for trial, why in [*((t, "its own") for t in own), *((t, "orphaned") for t in orphans)]:
                if why == "orphaned":
                    log.warning(
                        "trial %d: its worker %s is gone; worker %d resumes it",
                        trial.number,
                        trial.user_attrs.get(OWNER),
                        index,
                    )
                trial_id = self.trial_id(trial.number)
                self.storage().set_trial_user_attr(trial_id, OWNER, index)
                return Claimed(trial.number, trial_id, dict(trial.params), self._trial_dir(trial), True)
            counted = [t for t in trials if t.state != TrialState.WAITING]
            if len(counted) >= n_trials:
                return None
            trial = study.ask(spec.distributions())
            run_dir = self / TRIALS / str(trial.number)
            trial.set_user_attr(OWNER, index)
            trial.set_user_attr(RUN_DIR, os.path.relpath(run_dir, self.path))
            return Claimed(trial.number, self.trial_id(trial.number), dict(trial.params), run_dir, False)

    def trial_id(self, number: int) -> int:
        storage = self.storage()
        study_id = storage.get_study_id_from_name(STUDY_NAME)
        return storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def _trial_dir(self, trial: Any) -> Path:
        return self / str(trial.user_attrs.get(RUN_DIR) or Path(TRIALS) / str(trial.number))

    def running_trials(self) -> dict[int, int]:
        """{number: its worker's index} of the study's running trials."""
        from optuna.trial import TrialState

        trials = self.trials()
        return {t.number: int(t.user_attrs.get(OWNER, -1)) for t in trials if t.state == TrialState.RUNNING}

    def waiting_worker(self, index: int, dead_after_s: float) -> int | None:
        """Another live worker than `index` that waits with no trial left to start, or None."""
        found = sorted(int(p.name) for p in (self / WORKERS).glob("*") if p.name.isdigit())
        for other in found:
            record = self.worker_record(other) or {}
            if other != index and record.get("waiting") and self.worker_alive(other, dead_after_s):
                return other
        return None

    def wait_for_change(self, running: dict[int, int], spec: SearchSpec, poll_s: float) -> None:
        """Return once one of the `running` trials ({number: worker}) may have ended or lost its worker:
        the worker's record names no longer that trial, or the worker is not alive (gone from this host,
        or silent for dead_after_s, never sooner). Reads the workers' records every poll_s, not the study."""
        while True:
            time.sleep(poll_s)
            for number, worker in running.items():
                record = self.worker_record(worker) or {}
                if record.get("trial") != number or not self.worker_alive(worker, spec.dead_after_s):
                    return

    def finished(self, n_trials: int) -> bool:
        """True once n_trials trials have ended (complete, pruned or failed) and none runs."""
        from optuna.trial import TrialState

        trials = self.trials()
        ended = [t for t in trials if t.state.is_finished()]
        return len(ended) >= n_trials and not any(t.state == TrialState.RUNNING for t in trials)


def _deciding(overrides: list[str]) -> list[str]:
    """The overrides that can change a trial's result (those of LEDGER_EXCLUDED keys, loggers, left out)."""
    return [o for o in overrides if not ledger_excluded(str(o).split("=", 1)[0].lstrip("+~"))]
