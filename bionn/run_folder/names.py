"""A run folder's file names and the statuses its records hold (the layout is described in
bionn.run_folder)."""

from __future__ import annotations

import enum

HYDRA = ".hydra"
LEDGER = "ledger.json"
ATTEMPTS = "attempts.json"
INFO = "info.json"
HISTORY = "history.csv"
FINAL = "final_results.json"
ERROR = "error.json"
BACKUP = "backup"
BACKUP_STATE = "state.json"
MODEL = "model.keras"
STATISTICS = "statistics.npz"  # the normalisation statistics the network was trained with
BEST = "best"  # the best validation epoch's weights: state.json names the epoch and the file
# Raw features -> labels, self-contained (bionn.nn.inference): from the best or the last epoch's weights.
INFERENCE = {"best": "inference_best.keras", "last": "inference_last.keras"}
EVALUATION_PREFIX = "evaluation_"  # evaluation_<name>.json: bionn-evaluate on another dataset
CHECKPOINTS = "checkpoints"
RESULTS_PREFIX = "results_epoch_"  # results_epoch_N.json beside checkpoints/model_epoch_N.keras
PLOTS = "plots"
TENSORBOARD = "tensorboard"
TRACKING = "mlflow.json"  # the MLflow run of this folder: store, experiment, run id (bionn.tracking)
PREVIOUS = "previous"
JOB_LOG = "train.log"  # Hydra's log of the job (hydra.job.name = train); it stays open while the job runs
# A folder holding any of these is a run folder (Hydra creates the folder first, then bionn writes these).
MARKERS = (HYDRA, LEDGER, ATTEMPTS, INFO, HISTORY, FINAL)


class Status(enum.StrEnum):
    """What a run folder says about its run."""

    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    NAN = "nan"  # the loss became NaN or infinite: training stopped
    PRUNED = "pruned"  # a hyperparameter search stopped this trial early (bionn.search)
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # signalled, requeued, killed: it resumes when run again
    RUNNING = "running"


FINISHED = frozenset({Status.COMPLETED, Status.EARLY_STOPPED, Status.NAN, Status.PRUNED})
FINAL_STATUSES = FINISHED | {Status.FAILED}


class Outcome(enum.StrEnum):
    """How one attempt ended (None in the record while it runs)."""

    COMPLETED = "completed"  # wrote final_results.json (status completed, early_stopped, nan or pruned)
    INTERRUPTED = "interrupted"
    FAILED = "failed"
