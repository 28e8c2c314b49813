"""A search worker: one launcher job that trains trials until the study has its number of trials.

The sweeper (hydra_plugins/bionn_search) launches n_workers such jobs through the
launcher (Slurm array tasks or local processes). Each one, with no barrier between
them: claims a trial (bionn.search.folder), composes its config (the search's base
overrides plus the trial's parameters), trains it in trials/<n>/ with bionn.train.run
while a pruning callback reports every epoch's objective to the study, and tells the
study how it ended. A signal (preemption, requeue, Ctrl-C) ends the worker with the
trial still running in the study: the worker's next start, or another worker once
this one is gone, resumes it in its run folder at its next epoch. A worker with no
trial left to start waits while other workers' trials run, so that a trial whose
worker dies (a lost node: no heartbeat for dead_after_s) is taken over even at the
end of a search; it ends when no trial runs. One waiting worker is enough: a worker
that finds another one waiting ends at once, so at the end of a search one worker,
not every idle one, holds its allocation.
"""

from __future__ import annotations

import logging
import math
import traceback
from pathlib import Path
from typing import Any

from bionn.run_folder import RunFolderError, Status
from bionn.search.folder import ERROR_ATTR, OVERRIDES, Claimed, Heartbeat, SearchFolder
from bionn.search.space import SearchError, SearchSpec

log = logging.getLogger(__name__)
SWEEPER_TARGET = "hydra_plugins.bionn_search.sweeper.SearchSweeper"
# How often a waiting worker reads the running trials' worker records (small files; not the study).
WAIT_POLL_S = 0.5


def is_search_worker() -> bool:
    """True in a job launched by the search sweeper (its hydra.sweeper is bionn's search). Without -m,
    hparams_search=... trains the one composed config (a trial's .hydra/overrides.yaml run again), and
    says that nothing is searched."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except ValueError:
        return False
    from hydra.types import RunMode

    if hydra_cfg.sweeper.get("_target_") != SWEEPER_TARGET:
        return False
    if hydra_cfg.mode != RunMode.MULTIRUN:
        choice = hydra_cfg.runtime.choices.get("hparams_search")
        log.warning(
            "hparams_search=%s without -m: training this one configuration, searching nothing "
            "(a search: python train.py -m hparams_search=%s ...)",
            choice,
            choice,
        )
        return False
    return True


def work(cfg: Any) -> float:
    """Train trials until none is left; returns the study's best value so far (NaN without one)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from bionn.backend import select
    from bionn.console import quiet_tensorflow, setup_logging
    from bionn.slurm import attempt_job_id, slurm_info

    # every trial trains on it (bionn.train.run)
    select(cfg.runtime.backend, cfg.runtime.cpu_replicas, cfg.runtime.deterministic)
    quiet_tensorflow()
    setup_logging()
    hydra_cfg = HydraConfig.get()
    folder = SearchFolder(Path(str(hydra_cfg.sweep.dir)))
    index = int(hydra_cfg.job.num)
    node = OmegaConf.to_container(hydra_cfg.sweeper, resolve=True)
    record = folder.record()
    if record is None:
        raise SearchError(f"{folder.path}: no {folder / 'search.json'}: a worker needs the sweeper's record")
    spec = SearchSpec.from_config(
        node, record.get("source", "the search"), frozenset(hydra_cfg.runtime.choices)
    )
    slurm = slurm_info()
    if folder.worker_alive(index, spec.dead_after_s, slurm_job=attempt_job_id(slurm)):
        log.warning(
            "worker %d of %s is already running elsewhere; this job leaves the work to it", index, folder.path
        )
        return math.nan
    n_trials = int(record.get("n_trials", spec.n_trials))
    with folder.heartbeat(index, spec, slurm) as beat:
        done: list[int] = []
        while (claimed := next_trial(folder, spec, n_trials, beat)) is not None:
            log.info(
                "worker %d: trial %d%s: %s",
                index,
                claimed.number,
                " (resumed)" if claimed.resumed else "",
                " ".join(_param_overrides(spec, claimed.params)),
            )
            train_trial(folder, spec, record, claimed)
            done.append(claimed.number)
            beat.update(trial=None, trials=done)
    if folder.finished(n_trials):
        _write_report(folder, (cfg.get("logger") or {}).get("mlflow"))
    return _best_value(folder, spec)


def next_trial(folder: SearchFolder, spec: SearchSpec, n_trials: int, beat: Heartbeat) -> Claimed | None:
    """The next trial of the worker whose heartbeat is `beat`, or None when it should end: no trial
    runs, or another worker already waits. With no trial left to start, it waits (saying so in its
    worker.json) until a running trial ends or its worker is dead (then it takes the trial over)."""
    index = int(beat.record["worker"])
    while (claimed := folder.claim(index, spec, n_trials)) is None:
        running = folder.running_trials()
        if not running:
            return None
        if not beat.record["waiting"]:
            other = folder.waiting_worker(index, spec.dead_after_s)
            if other is not None:
                log.info(
                    "worker %d: no trial left to start; worker %d waits while trial(s) %s run: this one ends",
                    index,
                    other,
                    _numbers(running),
                )
                return None
            # stay: should the worker of one of them die, this one takes its trial over
            log.info(
                "worker %d: no trial left to start; waiting while trial(s) %s run", index, _numbers(running)
            )
            beat.update(waiting=True)
        folder.wait_for_change(running, spec, min(spec.heartbeat_s, WAIT_POLL_S))
    beat.update(trial=claimed.number, waiting=False)
    return claimed


def _numbers(running: dict[int, int]) -> str:
    return ", ".join(str(n) for n in running)


def train_trial(folder: SearchFolder, spec: SearchSpec, record: dict, claimed: Claimed) -> None:
    """Train one claimed trial in its run folder and tell the study how it ended. A signal propagates
    (the trial stays running, to be resumed); any other failure is told as the trial's failure."""
    import optuna
    from optuna.trial import TrialState

    from bionn.nn.callbacks import ReportEpochs
    from bionn.train import run

    storage = folder.storage()
    study = folder.study(spec)
    trial = optuna.trial.Trial(study, claimed.trial_id)
    overrides = trial_overrides(spec, record["base_overrides"], claimed.params)
    trial.set_user_attr(OVERRIDES, overrides)
    try:
        cfg = _compose(record.get("config_name") or "train", overrides)
    except (
        Exception
    ) as err:  # a combination of values the config refuses: the trial fails, the search goes on
        message = f"{type(err).__name__}: {err}"
        log.error("trial %d: its config does not compose: %s", claimed.number, message)
        trial.set_user_attr(ERROR_ATTR, message)
        study.tell(claimed.number, state=TrialState.FAIL)
        return

    def report(epoch: int, value: float) -> bool:
        """Report the epoch's objective; True if the trial should stop (pruned)."""
        if value is None or not math.isfinite(value):
            return False
        if epoch not in storage.get_trial(claimed.trial_id).intermediate_values:  # resumed: reported
            trial.report(float(value), step=epoch)
        return trial.should_prune()

    callback = ReportEpochs(spec.metric, report)
    try:
        run(cfg, claimed.run_dir, callbacks=[callback], overrides=overrides)
    except Exception as err:  # run() re-raises outside a reported sweep: the trial failed
        trial.set_user_attr(ERROR_ATTR, f"{type(err).__name__}: {err}")
        log.error("trial %d failed: %s\n%s", claimed.number, err, traceback.format_exc())
        study.tell(claimed.number, state=TrialState.FAIL)
        return
    tell_outcome(folder, spec, study, claimed.number)


def tell_outcome(folder: SearchFolder, spec: SearchSpec, study: Any, number: int) -> None:
    """Tell the study how trial `number` ended, from its run folder's final results."""
    from optuna.trial import TrialState

    run = folder.run_folder(number)
    try:
        final = run.final()
    except RunFolderError as err:
        final, problem = None, str(err)
    else:
        problem = f"{run.path} holds no final results"
    status = Status(final["status"]) if final else Status.FAILED
    value = objective_value(spec, final) if final else None
    if status == Status.PRUNED:
        study.tell(number, state=TrialState.PRUNED)
    elif status in (Status.COMPLETED, Status.EARLY_STOPPED) and value is not None:
        study.tell(number, value)
    else:
        why = (final or {}).get("error") or (f"status {status.value}" if final else problem)
        folder.storage().set_trial_user_attr(folder.trial_id(number), ERROR_ATTR, str(why))
        study.tell(number, state=TrialState.FAIL)
    log.info("trial %d: %s%s", number, status.value, "" if value is None else f", {spec.metric} {value:.4f}")


def objective_value(spec: SearchSpec, final: dict) -> float | None:
    """The objective from final_results.json (e.g. val_r2_mean: evaluation.validation.r2_mean)."""
    split, metric = spec.split_and_metric()
    value = ((final.get("evaluation") or {}).get(split) or {}).get(metric)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def trial_overrides(spec: SearchSpec, base: list[str], params: dict[str, Any]) -> list[str]:
    """The search's base overrides (less those of searched keys) and the trial's parameter values."""
    searched = set(spec.params)
    kept = [o for o in base if o.split("=", 1)[0].lstrip("+~") not in searched]
    return kept + _param_overrides(spec, params)


def _param_overrides(spec: SearchSpec, params: dict[str, Any]) -> list[str]:
    return [spec.params[k].override(v) for k, v in params.items() if k in spec.params]


def _compose(config_name: str, overrides: list[str]) -> Any:
    """The trial's run config, composed by the running Hydra app (its config path and search path)."""
    from hydra import compose

    return compose(config_name=config_name, overrides=overrides)


def _best_value(folder: SearchFolder, spec: SearchSpec) -> float:
    from optuna.trial import TrialState

    values = [t.value for t in folder.trials() if t.state == TrialState.COMPLETE and t.value is not None]
    if not values:
        return math.nan
    return max(values) if spec.direction.value == "maximize" else min(values)


def _write_report(folder: SearchFolder, mlflow: Any = None) -> None:
    """The search report; with logger=mlflow also the trials' states and the best trial in MLflow."""
    from bionn.report import write_report
    from bionn.report.cli import to_mlflow

    try:
        write_report(folder.path)
        log.info("the study of %s has its trials; wrote the search report there", folder.path)
    except Exception as err:  # the report can be written again: bionn-report DIR
        log.warning(
            "could not write the search report of %s: %s (bionn-report %s)", folder.path, err, folder.path
        )
    if mlflow is None:
        return
    try:
        to_mlflow(folder.path, mlflow.tracking_uri, mlflow.experiment_name)
        log.info("MLflow: the trials' states and the best trial of %s are tagged", folder.path)
    except Exception as err:  # a tracker never costs a result: the import can be run again
        log.warning(
            "MLflow: could not tag the trials of %s: %s (bionn-report %s --to-mlflow URI)",
            folder.path,
            err,
            folder.path,
        )
