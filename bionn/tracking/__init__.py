"""Experiment tracking in MLflow: one MLflow run per run folder, for life (docs/tracking.md).

The run folder stays the record; MLflow gets a copy of it. Every attempt at a run folder (a first
start, a Slurm requeue, a preemption, a kill and a re-run, `bionn-sweep resume`, a search trial taken
over by another worker) continues the same MLflow run: its id is in the folder's mlflow.json, and a
run of another store is found again by its tag `bionn_run_folder`. An epoch is logged when it is
committed to the resume point (RunBackup), with step = epoch as in history.csv; an attempt first
logs the committed epochs the store lacks (a kill between the commit and the log, a server that was
down), so each epoch is logged once, whatever the attempts re-trained. `bionn-report DIR --to-mlflow
URI` copies whole run, sweep and search folders the same way, from their own records (import_folder()).

A tracker never costs a result: a store that does not answer within logger.mlflow.timeout_s is left
alone for the rest of the attempt, with one warning; logger.mlflow.required=true instead checks the
store before any work and refuses to start without it.

MLflow is imported in this package only, and only when the mlflow logger is selected or an import
asked for. store.py: which store and experiment, the bounded client; runs.py: a run folder's MLflow
run and what is logged into it, and the import; live.py: the logger of one attempt.
"""

from bionn.tracking.live import MlflowTracker, check_required
from bionn.tracking.runs import FOLDER_TAG, SENTINEL, import_folder
from bionn.tracking.store import Store, TrackerError, store_for

__all__ = [
    "FOLDER_TAG",
    "SENTINEL",
    "MlflowTracker",
    "Store",
    "TrackerError",
    "check_required",
    "import_folder",
    "store_for",
]
