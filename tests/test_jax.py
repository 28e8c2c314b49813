"""runtime.backend=jax through train.py: a training killed and resumed ends bit-equal to an uninterrupted
one; a local sweep and the smoke search run; and no process of them imports TensorFlow (an import hook
in every child process fails any `import tensorflow`, and with logger=csv any `import tensorboard`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, training_in_attempt

from bionn.report.search import read_search
from bionn.run_folder import RunFolder

pytestmark = pytest.mark.slow

NO_TENSORFLOW = '''
import sys


class NoTensorFlow:
    """Fail every import of TensorFlow (and of tensorboard, which a run logging to CSV does not need: the
    GPU machine has neither) in this process (tests/test_jax.py); not as an ImportError, which
    a library probing for TensorFlow would take as its absence: the attempt itself fails the run."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorboard"):  # tensorboard too: these runs log to CSV
            raise RuntimeError(f"{name} imported under runtime.backend=jax")


sys.meta_path.insert(0, NoTensorFlow())
'''
# TR on dmedium's distribution, small: epochs of 2,000 samples in batches of 64 (chunks of several).
SMALL_TR = [
    "runtime.backend=jax",
    "model=TR",
    "dataset=dmedium",
    "debug=quick",
    "logger=csv",
    "dataset.shape.n_samples=2400",
    "dataset.shape.batch_size=64",
    "training.save_interval=0",
    "training.early_stopping_patience=0",
]


@pytest.fixture
def jax_env(tmp_path) -> dict[str, str]:
    """The environment of a child process that may not import TensorFlow (nor may its own children)."""
    hook = tmp_path / "no_tensorflow"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NO_TENSORFLOW)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])}


def train(*overrides: str, env: dict, cache: Path, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "train.py", *overrides, f"runtime.stats_cache_dir={cache}"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, **popen)


def finished(proc: subprocess.Popen, log: Path | None = None) -> None:
    proc.wait(timeout=900)
    assert proc.returncode == 0, log.read_text()[-3000:] if log else proc.returncode


def test_a_killed_jax_run_resumes_bit_equal_without_tensorflow(tmp_path, jax_env):
    cache, straight, run = tmp_path / "cache", tmp_path / "straight", tmp_path / "resumed"
    args = [*SMALL_TR, "training.epochs=3"]
    with open(tmp_path / "straight.log", "w") as log:
        finished(train(*args, f"hydra.run.dir={straight}", env=jax_env, cache=cache, stdout=log, stderr=log))
    with open(tmp_path / "killed.log", "w") as log:
        proc = train(*args, f"hydra.run.dir={run}", env=jax_env, cache=cache, stdout=log, stderr=log)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and not training_in_attempt(run, 1):
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    with open(tmp_path / "resumed.log", "w") as log:
        finished(train(*args, f"hydra.run.dir={run}", env=jax_env, cache=cache, stdout=log, stderr=log))

    folder = RunFolder(run)
    starts = [a["start_epoch"] for a in folder.attempts()]
    assert starts[0] == 0 and 0 < starts[1] < 3, starts
    final = json.loads((run / "final_results.json").read_text())
    assert final["status"] == "completed"
    assert json.loads((straight / "final_results.json").read_text())["evaluation"] == final["evaluation"]
    import keras

    import bionn.nn  # noqa: F401  (bionn's layers and metrics, to load the models here, on TensorFlow)

    for a, b in zip(
        keras.models.load_model(straight / "model.keras").get_weights(),
        keras.models.load_model(run / "model.keras").get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    info = json.loads((run / "info.json").read_text())
    assert info["config"]["runtime"]["backend"] == "jax" and info["devices"][0].startswith("cpu:0")

    # The same folder on the other backend is another config: refused, naming the key, nothing written.
    refused = subprocess.run(
        [sys.executable, "train.py", *args[1:], f"hydra.run.dir={run}", f"runtime.stats_cache_dir={cache}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0 and "runtime.backend" in refused.stderr + refused.stdout
    assert len(folder.attempts()) == 2


def test_a_local_sweep_and_the_smoke_search_run_on_jax(tmp_path, jax_env):
    cache = tmp_path / "cache"
    sweep = tmp_path / "sweep"
    # Both jobs in this one process (Hydra's own launcher), each on two XLA host devices (DataParallel).
    grid = train(
        "-m", *SMALL_TR, "training.epochs=1", "runtime.seed=1,2", "runtime.cpu_replicas=2",
        f"hydra.sweep.dir={sweep}", env=jax_env, cache=cache, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = grid.communicate(timeout=900)
    assert grid.returncode == 0, out[-3000:]
    assert [RunFolder(sweep / j).final()["status"] for j in ("0", "1")] == ["completed", "completed"]
    for job in ("0", "1"):
        info = json.loads((sweep / job / "info.json").read_text())
        assert info["replicas"] == 2 and [d.split()[0] for d in info["devices"]] == ["cpu:0", "cpu:1"]

    search = tmp_path / "search"
    cmd = ["-m", "hparams_search=smoke", "hydra/launcher=local", "runtime.backend=jax", "logger=csv"]
    cmd += ["hydra.sweeper.n_trials=2", "training.epochs=2", f"hydra.sweep.dir={search}"]
    done = train(*cmd, env=jax_env, cache=cache, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = done.communicate(timeout=1500)
    assert done.returncode == 0, out[-3000:]
    summary = read_search(search)
    assert len(summary.trials) == 2 and all(t.state in ("complete", "pruned") for t in summary.trials)
    assert f"Best: trial {summary.best.number}" in out


KEPT_EVALUATION = """
import json, os, sys
from bionn.backend import select
select(sys.argv[1], 1)
import numpy as np
from bionn import backend
from bionn.clock import EpochClock
from bionn.config.compose import compose_run
from bionn.data.dataset import KineticsDataset
from bionn.data.stats import compute_statistics
from bionn.nn.model import build_model
from bionn.nn.optim import compile_for_training

# 24,000 training samples in batches of 512: 5 chunks of 10 batches and one of the last, partial batch,
# more chunks than the producer has slots, so slots are refilled while the kept copies are made
cfg = compose_run("model=TR", "dataset=dmedium", "debug=quick", "dataset.shape.n_samples=30000",
                  "dataset.shape.batch_size=512")
ds = KineticsDataset(cfg.dataset)
stats = compute_statistics(ds, 256)
engine = backend.current()
strategy, worker = engine.make_strategy(1)
scaling = (stats.label_mean, stats.label_std + 1e-6)
model = build_model(cfg.model, ds.feature_shape, ds.n_labels, scaling)
compile_for_training(model, cfg.training, 10, scaling)
kept, generated = (
    engine.feed(strategy, worker, ds, "train", stats, EpochClock(), fixed=f) for f in (True, False)
)
passes = [engine.evaluate(model, feed) for feed in (kept, kept, kept, generated)]
print(json.dumps({"passes": passes, "kept": [len(getattr(f, "kept", ())) for f in (kept, generated)]}))
"""


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_a_kept_evaluation_feed_gives_every_pass_what_generating_it_gives(tmp_path, jax_env, backend):
    env = jax_env if backend == "jax" else {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", KEPT_EVALUATION, backend], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cache" not in done.stderr  # no warning of a tf.data cache dropped
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["kept"] == ([6, 0] if backend == "jax" else [0, 0])  # jax: 6 chunks kept on the device
    first, *others = result["passes"]
    assert all(other == first for other in others), result["passes"]
