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
    cfg = compose(
        "model=P",
        "debug=quick",
        "dataset.shape.n_samples=320",
        "training.verbose=silent",
        "training.save_interval=0",
        f"runtime.stats_cache_dir={tmp_path / 'cache'}",
    )
    folder = RunFolder(tmp_path / "run")
    loss = run(cfg, folder.path)

    final = folder.final()
    assert folder.status() == Status.COMPLETED and final["epochs_completed"] == 1
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
