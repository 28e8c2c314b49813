"""A run folder's MLflow run: found again or created, and what goes into it from the folder's own
records (tags, params, committed epochs, final results); import_folder copies whole folders."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

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
from bionn.tracking.store import Store, experiment_of, open_client, store_for, store_lock, sweep_root

FOLDER_TAG = "bionn_run_folder"  # a run folder's MLflow run is found again by this tag
FINGERPRINT_TAG = "bionn_fingerprint"
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
    with store_lock(store.uri):
        experiment_id = experiment_of(client, store)
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


def tag_list(tags: dict[str, str]) -> list:
    """MLflow's RunTag of every tag."""
    from mlflow.entities import RunTag

    return [RunTag(k, v) for k, v in tags.items()]


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
        client = clients.get(store.uri) or clients.setdefault(store.uri, open_client(store.uri, 60.0))
        run_id = open_run(client, store, folder, record_it=False)
        tags = {**run_tags(folder), **((extra_tags or {}).get(str(folder.path.resolve())) or {})}
        client.log_batch(run_id, tags=tag_list(tags))
        log_params(client, run_id, folder)
        added = log_epochs(client, run_id, committed_rows(folder))
        if folder.final() is not None:
            log_final(client, run_id, folder, log_model=False)
        set_status(client, run_id, folder.status())
        done.append((str(folder.path), run_id, added))
    return done
