"""RunBackup: atomic resume points, early-stopping state across a restart, torn saves ignored; ProgressLog."""

from __future__ import annotations

import json
import logging
import re

import keras
import numpy as np
import pytest
from conftest import interrupt_at

from bionn.nn import callbacks
from bionn.nn.callbacks import RunBackup
from bionn.run_folder import BACKUP, RunFolder

EPOCHS = 6


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 3))).astype("float32")
    return x, y


def model():
    keras.utils.set_random_seed(1)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
    m.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return m


def early():
    # No later epoch beats the first by 1e6: patience 2 stops training after epoch index 2.
    return keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=2, min_delta=1e6, restore_best_weights=True
    )


def fit(m, backup, *extra, epochs=EPOCHS):
    x, y = data()
    start = backup.restore(m)
    history = m.fit(
        x,
        y,
        validation_data=(x[:16], y[:16]),
        batch_size=8,
        shuffle=False,
        initial_epoch=start,
        epochs=start if backup.stopped else epochs,
        callbacks=[*extra, *([backup.early] if backup.early else []), backup],
        verbose=0,
    )
    return start, history.epoch


def test_resumed_fit_keeps_early_stopping_state_and_ends_bit_equal(tmp_path):
    straight = model()
    stop = early()
    _, epochs = fit(straight, RunBackup(RunFolder(tmp_path / "straight").backup, stop))
    assert epochs == [0, 1, 2] and stop.stopped_epoch == 2 and stop.best_epoch == 0

    interrupted = model()
    with pytest.raises(KeyboardInterrupt):
        fit(interrupted, RunBackup(RunFolder(tmp_path / "resumed").backup, early()), interrupt_at(2))
    state = json.loads((tmp_path / "resumed" / BACKUP / "state.json").read_text())
    assert state["epoch"] == 2 and state["early_stopping"]["wait"] == 1

    resumed = model()  # a new process: fresh weights, fresh callbacks
    stop = early()
    start, epochs = fit(resumed, RunBackup(RunFolder(tmp_path / "resumed").backup, stop))
    # Without the restored patience count, epoch 2 would count as an improvement and training go on.
    assert (start, epochs) == (2, [2]) and stop.stopped_epoch == 2 and stop.best_epoch == 0
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the best (epoch 0) weights, restored at train end

    # Killed after fit but before the run's results: the next start trains nothing and ends the same.
    again = model()
    start, epochs = fit(again, RunBackup(RunFolder(tmp_path / "resumed").backup, early()))
    assert (start, epochs) == (3, [])
    for a, b in zip(straight.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_save_killed_before_its_commit_leaves_the_last_resume_point(tmp_path):
    m = model()
    folder = RunFolder(tmp_path)
    backup_dir = folder / BACKUP
    fit(m, RunBackup(folder.backup), epochs=2)
    saved = [w.copy() for w in m.get_weights()]
    optimizer_step = int(m.optimizer.iterations.numpy())
    # A kill during epoch 3's save: a torn temporary file, and a renamed weights file not yet committed.
    (backup_dir / ".tmp-abc123-epoch_3.weights.h5").write_bytes(b"torn")
    (backup_dir / "epoch_3.weights.h5").write_bytes(b"not committed")

    reader = model()
    assert RunBackup(folder.backup, write=False).restore(reader) == 2
    assert (backup_dir / "epoch_3.weights.h5").exists()  # a non-chief worker never deletes

    chief = model()
    assert RunBackup(folder.backup).restore(chief) == 2
    for loaded in (reader, chief):
        for a, b in zip(saved, loaded.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        assert int(loaded.optimizer.iterations.numpy()) == optimizer_step  # the optimizer's state came along
    assert sorted(p.name for p in backup_dir.iterdir()) == ["epoch_2.weights.h5", "state.json"]


def test_no_backup_starts_at_epoch_zero(tmp_path):
    assert RunBackup(RunFolder(tmp_path / "none").backup).restore(model()) == 0


def test_progress_log_writes_a_line_per_epoch_and_within_a_long_epoch(monkeypatch, caplog):
    monkeypatch.setattr(callbacks, "PROGRESS_EVERY_S", 0.0)  # every batch counts as a long wait
    x, y = data()
    with caplog.at_level(logging.INFO, logger="bionn.train"):
        model().fit(
            x[:24],
            y[:24],
            validation_data=(x[:8], y[:8]),
            batch_size=8,
            epochs=2,
            callbacks=[callbacks.ProgressLog(within_epoch=True)],
            verbose=0,
        )
    # bionn.train's lines only: TensorFlow may add its own (a retracing warning, depending on what ran before)
    lines = [r.getMessage() for r in caplog.records if r.name == "bionn.train"]
    assert [line.split(",")[0] for line in lines if "batch" in line] == [
        f"epoch {e}/2: batch {b}/3" for e in (1, 2) for b in (1, 2, 3)
    ]
    epoch_lines = [line for line in lines if "batch" not in line]
    assert len(epoch_lines) == 2 and all(
        re.match(r"epoch \d/2: loss [\d.e+-]+, val_loss ", s) for s in epoch_lines
    )

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bionn.train"):
        model().fit(
            x, y, batch_size=8, epochs=1, callbacks=[callbacks.ProgressLog(within_epoch=False)], verbose=0
        )
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.name == "bionn.train"] == ["epoch 1/1"]
