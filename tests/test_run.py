"""bionn.train.run in-process on the real composed config: the whole story (claim, build, fit, finish) in
seconds, for the fast tier. The same through train.py, with kills and sweeps, is in test_train.py."""

from __future__ import annotations

import pytest

from bionn.run_folder import LEDGER, ConfigChanged, RunFolder, Status
from bionn.train import run


def test_run_in_process_trains_records_one_attempt_and_does_not_redo_a_finished_run(
    tmp_path, compose, monkeypatch
):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # keep pytest's own stderr capture as it is
    from bionn.baseline import cached_baseline

    # The relative label, a cosine schedule with warm-up and AdamW: the run reports the label's ceiling
    # (1 by construction here; the seed label's is checked in test_accuracy.py) and the cached ridge.
    cfg = compose(
        "model=P",
        "debug=quick",
        "dataset.shape.n_samples=320",
        "dataset.label=relative",
        "dataset.simulation.n_times=41",
        "training.schedule.name=cosine",
        "training.schedule.warmup_epochs=0.5",
        "training.compile.optimizer=adamw",
        "training.compile.weight_decay=0.001",
        "training.verbose=silent",
        "training.save_interval=0",
        f"runtime.stats_cache_dir={tmp_path / 'cache'}",
    )
    ridge = cached_baseline(cfg.dataset, tmp_path / "cache", compute=True)
    folder = RunFolder(tmp_path / "run")
    loss = run(cfg, folder.path)

    final = folder.final()
    assert folder.status() == Status.COMPLETED and final["epochs_completed"] == 1
    assert final["reference"]["label"] == "relative" and final["reference"]["ceiling_r2_mean"] == 1.0
    assert final["reference"]["ridge_r2_mean"] == ridge["r2_mean"] and ridge["label"] == "relative"
    assert final["evaluation"]["validation"]["loss"] == pytest.approx(loss)
    assert len(final["evaluation"]["test"]["r2_per_output"]) == 12
    [attempt] = folder.attempts()
    assert (attempt["outcome"], attempt["start_epoch"], attempt["end_epoch"]) == ("completed", 0, 1)
    assert folder.ledger()["config"]["model"]["name"] == "P"
    assert "name: P" in (folder / ".hydra" / "config.yaml").read_text()
    assert [row["epoch"] for row in folder.history_rows()] == [0]
    assert (folder / "model.keras").is_file() and not (folder / "backup").exists()

    assert run(cfg, folder.path) == loss  # finished with this config: returned, not trained again
    assert len(folder.attempts()) == 1

    # Training results without a ledger (an older bionn's folder): its config is unknown, so refused.
    (folder / LEDGER).unlink()
    before = {p: p.read_bytes() for p in folder.path.rglob("*") if p.is_file()}
    with pytest.raises(ConfigChanged, match=r"holds training results but no ledger.*move_aside"):
        run(cfg, folder.path)
    assert {p: p.read_bytes() for p in folder.path.rglob("*") if p.is_file()} == before


def test_claim_lets_a_corrected_config_take_a_folder_whose_attempts_trained_nothing(tmp_path):
    from bionn.config.schema import OnConfigChange
    from bionn.run.claim import claim
    from bionn.run_folder import Outcome

    folder = RunFolder(tmp_path)
    typo = {"training": {"compile": {"optimizer": "adamm"}}}
    corrected = {"training": {"compile": {"optimizer": "adam"}}}
    folder.write_ledger(typo)
    folder.begin_attempt(None)
    folder.end_attempt(Outcome.FAILED, error={"type": "ValueError", "message": "before the first epoch"})
    refuse = OnConfigChange.refuse

    taken = claim(folder, corrected, refuse)
    assert taken.new_ledger and not taken.move_aside and taken.superseded == folder.ledger()
    assert folder.ledger()["config"] == typo  # claim writes nothing

    folder.write_history([{"epoch": 0.0, "loss": 1.0}])  # one epoch trained: its config is kept
    with pytest.raises(ConfigChanged, match=r"training\.compile\.optimizer: \"adamm\" \(in the folder\)"):
        claim(folder, corrected, refuse)


def test_a_pruned_run_killed_before_its_final_results_resumes_as_pruned(tmp_path, compose, monkeypatch):
    import keras

    from bionn.nn.callbacks import ReportEpochs

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    cfg = compose(
        "model=P",
        "debug=quick",
        "dataset.shape.n_samples=320",
        "training.epochs=3",
        "training.verbose=silent",
        "training.save_interval=0",
        f"runtime.stats_cache_dir={tmp_path / 'cache'}",
    )

    class KilledAfterTheCommit(keras.callbacks.Callback):
        """Ends the process's training after the pruned epoch was committed, before final_results.json."""

        def on_train_end(self, logs=None):
            raise KeyboardInterrupt

    folder = RunFolder(tmp_path / "run")
    pruner = ReportEpochs("val_loss", lambda epoch, value: True)  # prunes after the first epoch
    with pytest.raises(KeyboardInterrupt):
        run(cfg, folder.path, callbacks=[pruner, KilledAfterTheCommit()])
    assert folder.status() == Status.INTERRUPTED and folder.final() is None
    assert folder.backup.state()["pruned"] is True and folder.committed_epoch() == 1

    never = ReportEpochs("val_loss", lambda epoch, value: False)  # the resumed pruner has not decided yet
    run(cfg, folder.path, callbacks=[never])
    assert folder.final()["status"] == "pruned" and folder.final()["epochs_completed"] == 1
    assert [a["outcome"] for a in folder.attempts()] == ["interrupted", "completed"]


def test_a_model_choice_that_does_not_exist_is_refused_naming_the_choices_and_writes_nothing(
    tmp_path, compose
):
    """A model family picks a layer by name (conf/model/TRX.yaml: ${model.vars.fronts.${model.vars.front}});
    a name with no layer ends the run before its folder is claimed, naming the key and the choices (under
    train.py the message starts with conf/model/TRX.yaml and its line, as every layer error does)."""
    from bionn.config.errors import ConfigError

    cfg = compose("model=TRX", "model.vars.front=cnn", "debug=quick")
    folder = tmp_path / "run"
    allowed = r"model\.layers\[0\]: refers to model\.vars\.fronts\.cnn, which does not exist "
    with pytest.raises(ConfigError, match=allowed + r"\(allowed at model\.vars\.fronts: none, conv\)"):
        run(cfg, folder)
    assert not folder.exists()
