"""Which MLflow store and experiment a run folder goes into, and the client that talks to it: bounded
by a timeout, made under the store's lock (bionn.tracking)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bionn.config.errors import ConfigError

STORE_DIR = ".mlflow"  # the default store in a sweep or run folder (hidden: no report looks inside)
STORE_DB = "mlflow.db"
ARTIFACTS = "artifacts"
DEFAULT_EXPERIMENT = "bionn"
SWEEP_RECORDS = ("sweep.json", "search.json", "multirun.yaml")  # a folder holding one is a sweep's


class TrackerError(ConfigError):
    """A store that logger.mlflow.required=true needs and cannot reach (raised before any work)."""


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


def open_client(uri: str, timeout_s: float) -> Any:
    """An MlflowClient of the store `uri` whose every request gives up after timeout_s seconds."""
    # MLflow retries an unanswered request for minutes by default: one try within the timeout.
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(timeout_s)))
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its database set-up lines in a job's log

    # MlflowClient opens its store when it is made: a new SQLite store's tables are created and migrated
    # then, so that happens under the store's lock (two jobs of a sweep starting together raced on it).
    with store_lock(uri):
        return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Jobs of one sweep start together: a new SQLite store is created (its tables, the experiment) by
    one of them at a time. Not re-entrant: never make a client (open_client) while holding it."""
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


def experiment_of(client: Any, store: Store) -> str:
    """The id of the store's experiment, created (or restored) if needed."""
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
        client = open_client(store.uri, timeout_s)
        with store_lock(store.uri):
            experiment_of(client, store)
    except Exception as err:
        raise TrackerError(
            f"logger.mlflow.required=true, but the MLflow store {store.uri} did not answer within "
            f"{timeout_s:g} s ({type(err).__name__}: {first_line(err)}). Start the server (mlflow server "
            "--host ... --port ...), correct logger.mlflow.tracking_uri, or drop logger.mlflow.required "
            "to train without it (bionn-report DIR --to-mlflow URI imports the run later)."
        ) from None


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else ""
