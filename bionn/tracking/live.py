"""The mlflow logger of one attempt: it continues the run folder's MLflow run, logs each committed
epoch, and never costs a result (a store that does not answer turns it off for the attempt)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from bionn.run_folder import RunFolder, Status
from bionn.tracking.runs import (
    committed_rows,
    log_epochs,
    log_final,
    log_params,
    open_run,
    run_tags,
    set_status,
    tag_list,
)
from bionn.tracking.store import check_reachable, first_line, open_client, store_for

log = logging.getLogger("bionn.train")


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
                first_line(err),
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
            self.client = open_client(self.store.uri, self.timeout_s)
            self.run_id = open_run(self.client, self.store, self.folder, record_it=True)
            set_status(self.client, self.run_id, Status.RUNNING)
            self.client.log_batch(self.run_id, tags=tag_list(run_tags(self.folder)))
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
            self.client.log_batch(self.run_id, tags=tag_list(run_tags(self.folder)))
            set_status(self.client, self.run_id, status)

        self._call("ending the run", action)
        log.info(
            "MLflow run %s (%s); to browse: %s", self.run_id, self.store.experiment, self.store.ui_command
        )


def check_required(cfg: Any, run_dir: Path) -> None:
    """logger.mlflow.required=true: the store answers, or TrackerError before any work."""
    mlflow = (cfg.get("logger") or {}).get("mlflow")
    if mlflow is not None and mlflow.required:
        store = store_for(run_dir, mlflow.tracking_uri, mlflow.experiment_name)
        check_reachable(store, float(mlflow.timeout_s))
