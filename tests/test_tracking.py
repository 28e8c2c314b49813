"""logger=mlflow: one MLflow run per run folder across attempts, each epoch once, a truthful status; a
server that goes down costs no result and the import fills the gap; importing twice duplicates nothing.

Real parts: bionn.train.run in-process on the real composed config (a tiny model, seconds), a real SQLite
store, a real `mlflow server` on 127.0.0.1 (conftest.MlflowServer); MLflow is read through its client.
The same through train.py with real signals and kills is in test_train.py, on Slurm in test_slurm.py."""

from __future__ import annotations

import logging

import keras
import pytest
from conftest import interrupt_at

from bionn.config.errors import ConfigError
from bionn.run_folder import LEDGER, TRACKING, RunFolder, read_json, result_config
from bionn.tracking import FOLDER_TAG, SENTINEL, store_for
from bionn.train import run

pytestmark = pytest.mark.slow


class StopServer(keras.callbacks.Callback):
    """Kills the MLflow server as epoch `at` begins."""

    def __init__(self, server, at: int):
        super().__init__()
        self.server, self.at = server, at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            self.server.stop()


def tiny(compose, tmp_path, *overrides):
    return compose(
        "model=P",
        "debug=quick",
        "dataset.shape.n_samples=320",
        "training.epochs=3",
        "training.verbose=silent",
        "training.save_interval=0",
        "training.early_stopping_patience=0",
        f"runtime.stats_cache_dir={tmp_path / 'cache'}",
        *overrides,
    )


def client_of(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_of(client, folder: RunFolder):
    return client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`{FOLDER_TAG}` = '{folder.path.resolve()}'",
    )


def steps(client, run_id, key=SENTINEL):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_attempts_continue_one_run_each_epoch_once_status_truthful_and_import_twice_adds_nothing(
    tmp_path, compose, monkeypatch
):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    folder = RunFolder(tmp_path / "run")
    # Attempt 1 without a tracker commits epoch 0; attempt 2 (mlflow) logs it at its start, epoch 1 at its
    # commit, and is interrupted; attempt 3 continues the same MLflow run to the end.
    with pytest.raises(KeyboardInterrupt):
        run(tiny(compose, tmp_path, "logger=none"), folder.path, callbacks=[interrupt_at(1)])
    assert not (folder / TRACKING).exists() and not (folder / "tensorboard").exists()
    mlflow_cfg = tiny(compose, tmp_path, "logger=mlflow")
    with pytest.raises(KeyboardInterrupt):
        run(mlflow_cfg, folder.path, callbacks=[interrupt_at(2)])
    record = read_json(folder / TRACKING)
    store = store_for(folder.path, None, None)
    assert record["tracking_uri"] == store.uri == f"sqlite:///{folder.path.resolve()}/.mlflow/mlflow.db"
    client = client_of(store.uri)
    [interrupted] = runs_of(client, folder)
    assert interrupted.info.run_id == record["run_id"] and interrupted.info.status == "KILLED"
    assert steps(client, record["run_id"]) == [0, 1]

    run(mlflow_cfg, folder.path)
    [finished] = runs_of(client, folder)
    run_id = finished.info.run_id
    assert run_id == record["run_id"] and finished.info.status == "FINISHED"
    for key in ("loss", "val_loss", "r2_mean", "val_r2_mean"):
        assert steps(client, run_id, key) == [0, 1, 2], key  # each epoch once, step = epoch
    tags = finished.data.tags
    assert (tags["bionn_attempts"], tags["bionn_model"], tags["bionn_status"]) == ("3", "P", "completed")
    assert tags["bionn_engine_version"] and tags["bionn_version"] and tags["bionn_host"]
    ledger = read_json(folder / LEDGER)
    assert set(finished.data.params) == {*result_config(ledger["config"]), "engine_version"}
    assert finished.data.metrics["final_test_r2_mean"] == pytest.approx(
        folder.final()["evaluation"]["test"]["r2_mean"]
    )
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert artifacts == {"final_results.json", "plots"}  # model.keras only with logger.mlflow.log_model

    # Another store, imported twice from the folder's own records: one run, each epoch once.
    from bionn.report.cli import main as report

    other = f"sqlite:///{tmp_path / 'other.db'}"
    before = {p: p.read_bytes() for p in folder.path.rglob("*") if p.is_file() and ".mlflow" not in p.parts}
    assert report([str(tmp_path / "run"), "--to-mlflow", other]) == 0
    assert report([str(tmp_path / "run"), "--to-mlflow", other]) == 0
    assert {p: p.read_bytes() for p in before} == before  # the import changes nothing in the folder
    imported = client_of(other)
    [copy] = runs_of(imported, folder)
    assert copy.info.status == "FINISHED" and copy.data.params == finished.data.params
    assert steps(imported, copy.info.run_id) == [0, 1, 2]
    assert len(imported.get_metric_history(copy.info.run_id, "final_test_r2_mean")) == 1


def test_a_server_down_mid_run_costs_no_result_and_the_import_fills_the_gap(
    tmp_path, compose, mlflow_server, caplog, monkeypatch
):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    folder = RunFolder(tmp_path / "run")
    cfg = tiny(
        compose,
        tmp_path,
        "logger=[tensorboard,mlflow]",
        f"logger.mlflow.tracking_uri={mlflow_server.uri}",
        "logger.mlflow.experiment_name=server-down",
        "logger.mlflow.timeout_s=2",
    )
    try:
        with caplog.at_level(logging.WARNING, logger="bionn.train"):
            run(cfg, folder.path, callbacks=[StopServer(mlflow_server, 1)])
    finally:
        mlflow_server.start()  # the session's other tests share it
    assert folder.final()["status"] == "completed" and any((folder / "tensorboard").rglob("events.*"))
    assert "training goes on without MLflow for this attempt" in caplog.text
    assert f"bionn-report {folder.path} --to-mlflow {mlflow_server.uri}" in caplog.text
    client = mlflow_server.client()
    [gap] = runs_of(client, folder)
    assert gap.info.status == "RUNNING" and steps(client, gap.info.run_id) == [0]

    from bionn.report.cli import main as report

    assert report([str(folder.path), "--to-mlflow", mlflow_server.uri, "--experiment", "server-down"]) == 0
    [filled] = runs_of(client, folder)
    assert filled.info.run_id == gap.info.run_id and filled.info.status == "FINISHED"
    assert steps(client, filled.info.run_id) == [0, 1, 2]
    assert {a.path for a in client.list_artifacts(filled.info.run_id)} == {"final_results.json", "plots"}


def test_a_required_store_that_does_not_answer_stops_the_run_before_any_work(tmp_path, compose):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = RunFolder(tmp_path / "run")
    cfg = tiny(
        compose,
        tmp_path,
        "logger=mlflow",
        f"logger.mlflow.tracking_uri=http://127.0.0.1:{port}",
        "logger.mlflow.required=true",
        "logger.mlflow.timeout_s=1",
    )
    with pytest.raises(ConfigError, match=rf"required=true, but the MLflow store http://127.0.0.1:{port} "):
        run(cfg, folder.path)
    assert not (folder / LEDGER).exists() and not (tmp_path / "cache").exists()  # no statistics computed
    assert folder.error()["type"] == "TrackerError" and not (folder / TRACKING).exists()


def test_jobs_starting_together_on_a_new_sqlite_store_each_open_it(tmp_path):
    """A sweep's jobs start together: MLflow creates and migrates a new SQLite store's tables when a client
    is made, so bionn makes it under the store's lock. Without the lock this failed (alembic's temporary
    tables, 'duplicate column name') in 3 of 9 processes, and in a real Slurm sweep."""
    import subprocess
    import sys

    script = (
        "import sys; from bionn.tracking.store import open_client; "
        "open_client(sys.argv[1], 30.0).search_experiments()"
    )
    for store in range(2):
        uri = f"sqlite:///{tmp_path / str(store) / '.mlflow' / 'mlflow.db'}"
        jobs = [
            subprocess.Popen([sys.executable, "-c", script, uri], stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        errors = [job.communicate(timeout=300)[1] for job in jobs]
        assert [job.returncode for job in jobs] == [0, 0, 0], "\n".join(e[-1500:] for e in errors)
