"""Experiment tracking in MLflow: one MLflow run per run folder, for life (docs/tracking.md).

The run folder stays the record; MLflow gets a copy of it. Every attempt at a run folder (a first
start, a Slurm requeue, a preemption, a kill and a re-run, `bionn-sweep resume`, a search trial taken
over by another worker) continues the same MLflow run: its id is in the folder's mlflow.json, and a
run of another store is found again by its tag `bionn_run_folder`. An epoch is logged when it is
committed to the resume point (RunBackup), with step = epoch as in history.csv; an attempt first
logs the committed epochs the store lacks (a kill between the commit and the log, a server that was
down), so each epoch is logged once, whatever the attempts re-trained. `bionn-report DIR --to-mlflow
URI` copies whole run, sweep and search folders the same way, from their own records (import()).

A tracker never costs a result: a store that does not answer within logger.mlflow.timeout_s is left
alone for the rest of the attempt, with one warning; logger.mlflow.required=true instead checks the
store before any work and refuses to start without it.

MLflow is imported here only, and only when the mlflow logger is selected or an import asked for.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bionn.config.errors import ConfigError
from bionn.run_folder import (
    FINAL,
    HYDRA,
    MODEL,
    PLOTS,
    TRACKING,
    RunFolder,
    RunFolderError,
    Status,
    find_runs,
    read_json,
    result_config,
)

log = logging.getLogger("bionn.train")

STORE_DIR = ".mlflow"  # the default store in a sweep or run folder (hidden: no report looks inside)
STORE_DB = "mlflow.db"
ARTIFACTS = "artifacts"
DEFAULT_EXPERIMENT = "bionn"
FOLDER_TAG = "bionn_run_folder"  # a run folder's MLflow run is found again by this tag
FINGERPRINT_TAG = "bionn_fingerprint"
SWEEP_RECORDS = ("sweep.json", "search.json", "multirun.yaml")  # a folder holding one is a sweep's
# How a run folder's status shows in MLflow: only what ended well is FINISHED.
MLFLOW_STATUS = {
    Status.COMPLETED: "FINISHED",
    Status.EARLY_STOPPED: "FINISHED",
    Status.PRUNED: "FINISHED",
    Status.NAN: "FAILED",
    Status.FAILED: "FAILED",
    Status.INTERRUPTED: "KILLED",
    Status.RUNNING: "RUNNING",
}
SENTINEL = "loss"  # every epoch logs it: its steps are the epochs a run holds
PARAMS_PER_CALL = 100  # MLflow's limit of one log_batch
PARAM_VALUE_MAX = 6000


class TrackerError(ConfigError):
    """A store that logger.mlflow.required=true needs and cannot reach (raised before any work)."""


# ---- where ----------------------------------------------------------------------------------


def sweep_root(run_dir: Path) -> Path | None:
    """The sweep or search folder a run folder belongs to (it or a parent holds the sweep's record), or
    None for a single run."""
    path = Path(run_dir).resolve()
    for parent in list(path.parents)[:3]:
        if any((parent / name).exists() for name in SWEEP_RECORDS):
            return parent
    return None


@dataclass(frozen=True)
class Store:
    """An MLflow store and the experiment a run folder goes into."""

    uri: str
    experiment: str
    artifact_location: str | None  # for an experiment created in a local store; a server decides its own

    @property
    def ui_command(self) -> str:
        if self.uri.startswith(("http://", "https://")):
            return f"open {self.uri} (experiment {self.experiment!r})"
        return f"mlflow ui --backend-store-uri {self.uri}"


def store_for(run_dir: Path, tracking_uri: str | None, experiment: str | None) -> Store:
    """The store of logger.mlflow's settings for a run folder: by default a SQLite file in the sweep
    folder (a single run: in its run folder), and the sweep folder's path as the experiment."""
    root = sweep_root(run_dir)
    name = experiment or (str(root) if root is not None else DEFAULT_EXPERIMENT)
    if tracking_uri is None:
        base = (root or Path(run_dir).resolve()) / STORE_DIR
        return Store(f"sqlite:///{base / STORE_DB}", name, (base / ARTIFACTS).as_uri())
    if tracking_uri.startswith("sqlite:///"):
        base = Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent
        return Store(tracking_uri, name, (base / ARTIFACTS).as_uri())
    return Store(tracking_uri, name, None)


# ---- the MLflow client, bounded -------------------------------------------------------------


def _client(uri: str, timeout_s: float) -> Any:
    # MLflow retries an unanswered request for minutes by default: one try within the timeout.
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(timeout_s)))
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its database set-up lines in a job's log

    # MlflowClient opens its store when it is made: a new SQLite store's tables are created and migrated
    # then, so that happens under the store's lock (two jobs of a sweep starting together raced on it).
    with _store_lock(uri):
        return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Jobs of one sweep start together: a new SQLite store is created (its tables, the experiment) by
    one of them at a time. Not re-entrant: never make a client (_client) while holding it."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///")).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _experiment_id(client: Any, store: Store) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(store.experiment)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    try:
        return client.create_experiment(store.experiment, artifact_location=store.artifact_location)
    except MlflowException:  # another job created it meanwhile
        found = client.get_experiment_by_name(store.experiment)
        if found is None:
            raise
        return found.experiment_id


def check_reachable(store: Store, timeout_s: float) -> None:
    """TrackerError naming the store unless it answers (logger.mlflow.required=true, before any work)."""
    try:
        client = _client(store.uri, timeout_s)
        with _store_lock(store.uri):
            _experiment_id(client, store)
    except Exception as err:
        raise TrackerError(
            f"logger.mlflow.required=true, but the MLflow store {store.uri} did not answer within "
            f"{timeout_s:g} s ({type(err).__name__}: {_first_line(err)}). Start the server (mlflow server "
            "--host ... --port ...), correct logger.mlflow.tracking_uri, or drop logger.mlflow.required "
            "to train without it (bionn-report DIR --to-mlflow URI imports the run later)."
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else ""


# ---- one run folder's MLflow run ------------------------------------------------------------


def folder_key(folder: RunFolder) -> str:
    return str(folder.path.resolve())


def run_name(folder: RunFolder) -> str:
    root = sweep_root(folder.path)
    path = folder.path.resolve()
    return str(path.relative_to(root)) if root is not None else "/".join(path.parts[-2:])


def _find_run(client: Any, experiment_id: str, folder: RunFolder, fingerprint: str) -> str | None:
    """The MLflow run of this folder and config in this experiment (a store the folder's record does
    not name: an import, or a logger pointed elsewhere)."""
    key = folder_key(folder).replace("'", "\\'")
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{FOLDER_TAG}` = '{key}'", max_results=50)
    for run in runs:
        if run.data.tags.get(FINGERPRINT_TAG) == fingerprint:
            return run.info.run_id
    return None


def open_run(client: Any, store: Store, folder: RunFolder, record_it: bool) -> str:
    """This folder's MLflow run in `store`: the one its mlflow.json names (same store, same config), or
    the one tagged with its path and fingerprint, or a new one. record_it: write mlflow.json (a live
    logger; an import leaves the folder as it is)."""
    ledger = folder.ledger()
    if ledger is None:
        raise RunFolderError(f"{folder.path}: no ledger: its config is unknown, nothing to track")
    fingerprint = ledger["fingerprint"]
    record = read_json(folder / TRACKING) or {}
    with _store_lock(store.uri):
        experiment_id = _experiment_id(client, store)
        run_id = None
        if record.get("tracking_uri") == store.uri and record.get("fingerprint") == fingerprint:
            run_id = record.get("run_id") if _exists(client, record.get("run_id")) else None
        run_id = run_id or _find_run(client, experiment_id, folder, fingerprint)
        if run_id is None:
            run = client.create_run(
                experiment_id,
                run_name=run_name(folder),
                tags={FOLDER_TAG: folder_key(folder), FINGERPRINT_TAG: fingerprint},
            )
            run_id = run.info.run_id
    if record_it:
        folder.write_json(
            TRACKING,
            {
                "tracking_uri": store.uri,
                "experiment_id": experiment_id,
                "run_id": run_id,
                "fingerprint": fingerprint,
            },
        )
    return run_id


def _exists(client: Any, run_id: Any) -> bool:
    from mlflow.exceptions import MlflowException

    if not isinstance(run_id, str):
        return False
    try:
        return client.get_run(run_id).info.lifecycle_stage != "deleted"
    except MlflowException:
        return False


def run_tags(folder: RunFolder) -> dict[str, str]:
    """Tags from the folder's own records: model, dataset, experiment, Slurm ids, host, attempts,
    bionn's and the data engine's versions, the status (and a search trial's number)."""
    ledger = folder.ledger() or {}
    config = ledger.get("config") or {}
    attempts = folder.attempts()
    last = attempts[-1] if attempts else {}
    provenance = last.get("provenance") or {}
    tags = {
        "bionn_model": (config.get("model") or {}).get("name"),
        "bionn_dataset": (config.get("dataset") or {}).get("name"),
        "bionn_experiment": _choices(folder).get("experiment"),
        "bionn_attempts": len(attempts),
        "bionn_host": last.get("host"),
        "bionn_version": provenance.get("bionn"),
        "bionn_engine_version": provenance.get("engine_version", ledger.get("engine_version")),
        "bionn_status": folder.status().value,
    }
    slurm = last.get("slurm") or {}
    for key in ("job_id", "array_job_id", "array_task_id", "restart_count"):
        if slurm.get(key) is not None:
            tags[f"slurm.{key}"] = slurm[key]
    root = sweep_root(folder.path)
    if root is not None:
        tags["bionn_sweep"] = str(root)
        if folder.path.resolve().parent.name == "trials" and folder.path.name.isdigit():
            tags["bionn_trial"] = folder.path.name
    return {k: str(v) for k, v in tags.items() if v is not None}


def _choices(folder: RunFolder) -> dict:
    import yaml

    try:
        hydra = yaml.safe_load((folder / HYDRA / "hydra.yaml").read_text()) or {}
        return dict(hydra["hydra"]["runtime"]["choices"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}


def log_params(client: Any, run_id: str, folder: RunFolder) -> None:
    """The flattened config (the ledger's keys) and the engine version, once per run (params never change
    within a run: another config is another run)."""
    from mlflow.entities import Param

    if client.get_run(run_id).data.params:
        return
    ledger = folder.ledger() or {}
    params = {k: v for k, v in result_config(ledger.get("config") or {}).items()}
    if ledger.get("engine_version") is not None:
        params["engine_version"] = ledger["engine_version"]
    items = [Param(k, str(v)[:PARAM_VALUE_MAX]) for k, v in sorted(params.items())]
    for start in range(0, len(items), PARAMS_PER_CALL):
        client.log_batch(run_id, params=items[start : start + PARAMS_PER_CALL])


def log_epochs(client: Any, run_id: str, rows: list[dict]) -> int:
    """Log the history rows whose epoch the run lacks (step = epoch); returns how many were logged."""
    from mlflow.entities import Metric

    logged = {m.step for m in client.get_metric_history(run_id, SENTINEL)}
    missing = [row for row in rows if int(row["epoch"]) not in logged]
    now_ms = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now_ms, int(row["epoch"]))
        for row in missing
        for key, value in row.items()
        if key != "epoch"
    ]
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    return len(missing)


def committed_rows(folder: RunFolder) -> list[dict]:
    """history.csv's rows of the epochs the folder holds for good: all once the run finished, else those
    before the resume point (a later row is trained again by the next attempt)."""
    rows = folder.history_rows()
    if folder.final() is not None:
        return rows
    committed = folder.committed_epoch()
    return [row for row in rows if row["epoch"] < committed]


def log_final(client: Any, run_id: str, folder: RunFolder, log_model: bool) -> None:
    """final_results.json's evaluation as metrics (test_r2_mean, ...), it and plots/ as artefacts, and
    model.keras when asked."""
    from mlflow.entities import Metric

    final = folder.final()
    if final is None:
        return
    now_ms = int(time.time() * 1000)
    step = int(final.get("epochs_completed") or 0)
    metrics = []
    for split, values in (final.get("evaluation") or {}).items():
        for key, value in (values or {}).items():
            if isinstance(value, int | float) and math.isfinite(value):
                metrics.append(Metric(f"final_{split}_{key}", float(value), now_ms, step))
    if metrics and not any(k.startswith("final_") for k in client.get_run(run_id).data.metrics):
        client.log_batch(run_id, metrics=metrics)  # once: an import of a finished run adds none
    client.log_artifact(run_id, str(folder / FINAL))
    if (folder / PLOTS).is_dir():
        client.log_artifacts(run_id, str(folder / PLOTS), PLOTS)
    if log_model and (folder / MODEL).exists():
        client.log_artifact(run_id, str(folder / MODEL))


def set_status(client: Any, run_id: str, status: Status, ended_ms: int | None = None) -> None:
    mlflow_status = MLFLOW_STATUS[status]
    if mlflow_status == "RUNNING":
        client.update_run(run_id, status="RUNNING")
    else:
        client.set_terminated(run_id, status=mlflow_status, end_time=ended_ms or int(time.time() * 1000))


# ---- the live logger of one attempt ---------------------------------------------------------


class MlflowTracker:
    """The mlflow logger of one attempt (the chief's): open() when training starts, log_epoch() at every
    commit, end() with the attempt. Any call the store does not answer turns it off for the attempt."""

    def __init__(self, folder: RunFolder, settings: Any):
        self.folder = folder
        self.settings = settings
        self.store = store_for(folder.path, settings.tracking_uri, settings.experiment_name)
        self.timeout_s = float(settings.timeout_s)
        self.client: Any = None
        self.run_id: str | None = None
        self.off = False
        self.seconds = 0.0  # time spent in the store, for the benchmark

    def _call(self, what: str, action: Any) -> Any:
        if self.off:
            return None
        started = time.perf_counter()
        try:
            return action()
        except Exception as err:
            self.off = True
            log.warning(
                "MLflow (%s): %s failed (%s: %s); training goes on without MLflow for this attempt. The run "
                "folder keeps everything: bionn-report %s --to-mlflow %s fills in what MLflow missed",
                self.store.uri,
                what,
                type(err).__name__,
                _first_line(err),
                self.folder.path,
                self.store.uri,
            )
            return None
        finally:
            self.seconds += time.perf_counter() - started

    def open(self) -> None:
        """Continue (or create) the folder's MLflow run, RUNNING; tags, params, and the committed epochs
        the run lacks."""

        def action() -> None:
            self.client = _client(self.store.uri, self.timeout_s)
            self.run_id = open_run(self.client, self.store, self.folder, record_it=True)
            set_status(self.client, self.run_id, Status.RUNNING)
            self.client.log_batch(self.run_id, tags=_tag_list(run_tags(self.folder)))
            log_params(self.client, self.run_id, self.folder)
            log_epochs(self.client, self.run_id, committed_rows(self.folder))

        self._call("opening the run", action)

    def log_epoch(self, epoch: int, logs: dict) -> None:
        """An epoch just committed to the resume point: its metrics, step = epoch."""
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now_ms, epoch) for k, v in logs.items()]
        self._call(f"logging epoch {epoch}", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def end(self, status: Status) -> None:
        """The attempt ended: the epochs the run still lacks, final results and artefacts, the status."""
        if self.run_id is None:
            return

        def action() -> None:
            log_epochs(self.client, self.run_id, committed_rows(self.folder))
            if status not in (Status.INTERRUPTED, Status.RUNNING):
                log_final(self.client, self.run_id, self.folder, bool(self.settings.log_model))
            self.client.log_batch(self.run_id, tags=_tag_list(run_tags(self.folder)))
            set_status(self.client, self.run_id, status)

        self._call("ending the run", action)
        log.info(
            "MLflow run %s (%s); to browse: %s", self.run_id, self.store.experiment, self.store.ui_command
        )


def _tag_list(tags: dict[str, str]) -> list:
    from mlflow.entities import RunTag

    return [RunTag(k, v) for k, v in tags.items()]


def tracker_for(cfg: Any, folder: RunFolder) -> MlflowTracker | None:
    mlflow = (cfg.get("logger") or {}).get("mlflow")
    return MlflowTracker(folder, mlflow) if mlflow is not None else None


def check_required(cfg: Any, run_dir: Path) -> None:
    """logger.mlflow.required=true: the store answers, or TrackerError before any work."""
    mlflow = (cfg.get("logger") or {}).get("mlflow")
    if mlflow is not None and mlflow.required:
        store = store_for(run_dir, mlflow.tracking_uri, mlflow.experiment_name)
        check_reachable(store, float(mlflow.timeout_s))


# ---- import -----------------------------------------------------------------------------------


def import_folder(
    root: Path, tracking_uri: str | None, experiment: str | None = None, extra_tags: dict | None = None
) -> list[tuple[str, str, int]]:
    """Copy every run folder at or under `root` into the store at `tracking_uri` (None: each folder's
    default store), from the folders' own records: (run folder, run id, epochs added) each. Importing
    again adds nothing: a folder's run is found by its tag, only the epochs it lacks are logged, the final
    metrics once. extra_tags: run folder path -> more tags (a search's trial states, its best trial)."""
    done = []
    clients: dict[str, Any] = {}
    for folder in find_runs(Path(root)):
        if folder.ledger() is None:
            continue  # nothing trained (a config error): no config to record
        store = store_for(folder.path, tracking_uri, experiment)
        client = clients.get(store.uri) or clients.setdefault(store.uri, _client(store.uri, 60.0))
        run_id = open_run(client, store, folder, record_it=False)
        tags = {**run_tags(folder), **((extra_tags or {}).get(str(folder.path.resolve())) or {})}
        client.log_batch(run_id, tags=_tag_list(tags))
        log_params(client, run_id, folder)
        added = log_epochs(client, run_id, committed_rows(folder))
        if folder.final() is not None:
            log_final(client, run_id, folder, log_model=False)
        set_status(client, run_id, folder.status())
        done.append((str(folder.path), run_id, added))
    return done
