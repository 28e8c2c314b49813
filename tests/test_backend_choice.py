"""runtime.backend: the choice of the framework under Keras (bionn.backend.select) and what follows it:
refusals in one paragraph (an unknown backend, JAX not installed, another backend in the same process or
in the same run folder, jax on more than one task), provenance, and logger=tensorboard without
TensorFlow (bionn.nn.tensorboard). Everything under JAX runs in a subprocess: this process runs Keras
on TensorFlow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import ROOT, composed
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from bionn.backend import select
from bionn.backend import tensorflow as tensorflow_backend
from bionn.config.errors import ConfigError
from bionn.config.schema import OnConfigChange
from bionn.nn.tensorboard import EpochScalars
from bionn.provenance import provenance
from bionn.run.claim import Claim, claim
from bionn.run_folder import HISTORY, ConfigChanged, RunFolder
from bionn.run_folder.ledger import fingerprint
from bionn.sweep_arrays import job_resources
from bionn.sweep_plan import check_workers
from bionn.train import resolved

# A tiny model fitted for 3 epochs (with validation) with `callbacks`; returns its history.
TINY_FIT = textwrap.dedent(
    """
    def tiny_fit(callbacks):
        import keras, numpy as np
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
        x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
        fit = model.fit(x, x.sum(1), validation_data=(x, x.sum(1)), epochs=3, batch_size=8, verbose=0,
                        callbacks=callbacks)
        return fit.history
    """
)
# Makes `tensorflow` unimportable, and records each try (Keras catches the ImportError of a try).
FORBID_TENSORFLOW = textwrap.dedent(
    """
    import importlib.abc, sys
    TRIED = []
    class ForbidTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "tensorflow":
                TRIED.append(name)
                raise ImportError(f"{name}: no TensorFlow under runtime.backend=jax")
    sys.meta_path.insert(0, ForbidTensorFlow())
    """
)


def python(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`code` run by this interpreter in the repository root."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def train_py(*overrides: str, prelude: str = "") -> subprocess.CompletedProcess:
    """`python train.py <overrides>`, after `prelude` (Python run first in the same process)."""
    run = "import runpy, sys\nsys.argv[0] = 'train.py'\nrunpy.run_path('train.py', run_name='__main__')"
    return python(prelude + "\n" + run, *overrides)


def test_an_unknown_backend_names_the_allowed_ones_in_one_paragraph(tmp_path):
    done = train_py("runtime.backend=torch", f"hydra.run.dir={tmp_path / 'run'}")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Invalid value 'torch', expected one of [tensorflow, jax]" in output
    assert "full_key: runtime.backend" in output and "Traceback" not in output
    with pytest.raises(
        ConfigError, match=r"backend 'torch' \(runtime.backend, --backend or \$KERAS_BACKEND\) "
    ):
        select("torch")


def test_jax_without_jax_installed_names_the_install_command_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    missing = "import sys\nsys.modules['jax'] = sys.modules['jaxlib'] = None  # find_spec: None"
    done = train_py("debug=quick", "runtime.backend=jax", f"hydra.run.dir={run}", prelude=missing)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert (
        "runtime.backend = jax needs JAX, and this environment lacks jax and jaxlib: install it with "
        "`bash scripts/setup.sh` (a checkout) or `pip install -e '.[jax]'` (CPU); for NVIDIA GPUs "
        "docs/backends.md says how"
    ) in output
    assert "Traceback" not in output, output
    assert not {"ledger.json", "attempts.json", "info.json"} & {p.name for p in run.iterdir()}
    no_tf = (
        "import sys\nsys.modules['tensorflow'] = None\nfrom bionn.backend import select\nselect('tensorflow')"
    )
    done = python(no_tf)
    assert "runtime.backend = tensorflow (the default) needs TensorFlow, and this environment lacks it: " in (
        done.stderr
    )


def test_one_backend_per_process(monkeypatch):
    """Keras in this process runs on TensorFlow: selecting it again is a no-op, jax is refused."""
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    select("tensorflow")
    assert os.environ["KERAS_BACKEND"] == "tensorflow"
    with pytest.raises(ConfigError) as refused:
        select("jax", 2)
    assert str(refused.value) == (
        "runtime.backend = jax is invalid here: this process already runs Keras on tensorflow, and Keras' "
        "backend is fixed once Keras is imported. Use one runtime.backend per process (sweep it with a "
        "launcher that starts one process per job: hydra/launcher=local or slurm)."
    )


def test_jax_splits_the_host_into_cpu_replicas_devices_keeping_other_xla_flags():
    code = textwrap.dedent(
        """
        import os, jax
        from bionn.backend import select
        from bionn.config.errors import ConfigError
        select("jax", 3)
        print(os.environ["XLA_FLAGS"], len(jax.devices()), os.environ["KERAS_BACKEND"])
        select("jax", 3)  # the same layout again: a no-op
        try:
            select("jax", 2)
        except ConfigError as err:
            print(err)
        """
    )
    flags = "--xla_dump_to=/nonexistent --xla_force_host_platform_device_count=7"
    done = python(code, env={"XLA_FLAGS": flags, "KERAS_BACKEND": "tensorflow"})
    assert done.returncode == 0, done.stderr
    first, refusal = done.stdout.splitlines()
    assert first == "--xla_dump_to=/nonexistent --xla_force_host_platform_device_count=3 3 jax"
    assert refusal.startswith(
        "runtime.cpu_replicas = 2 is invalid here: this process already runs JAX with 3 CPU device(s)"
    )


def test_jax_keeps_its_compiled_programs_in_bionns_cache_and_the_user_can_move_or_drop_it(tmp_path):
    """A second process loads what the first compiled (no new cache entry) and computes the same bits;
    $JAX_COMPILATION_CACHE_DIR set by the user (here empty: no cache) stands."""
    code = textwrap.dedent(
        """
        import os, jax, jax.numpy as jnp, numpy as np
        from bionn.backend import select
        select("jax")
        x = np.linspace(-3, 3, 4096, dtype=np.float32).reshape(64, 64)
        y = jax.jit(lambda a: jnp.tanh(a @ a.T).sum(axis=0) / 7.0)(x)
        print(os.environ["JAX_COMPILATION_CACHE_DIR"] or "(none)", np.asarray(y).tobytes().hex())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["BIONN_CACHE_DIR"] = str(tmp_path / "cache")
    compiled = tmp_path / "cache" / "jax"

    def run(extra: dict | None = None) -> tuple[str, str]:
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env={**env, **(extra or {})},
        )
        assert done.returncode == 0, done.stderr
        return tuple(done.stdout.split())

    first = run()
    entries = sorted(p.name for p in compiled.iterdir())
    assert first[0] == str(compiled) and entries
    assert run() == first
    assert sorted(p.name for p in compiled.iterdir()) == entries  # loaded, not compiled again

    mine = tmp_path / "mine"
    assert run({"JAX_COMPILATION_CACHE_DIR": str(mine)})[1] == first[1]
    assert any(mine.iterdir())
    off = run({"JAX_COMPILATION_CACHE_DIR": "", "BIONN_CACHE_DIR": str(tmp_path / "other")})
    assert off == ("(none)", first[1]) and not (tmp_path / "other").exists()


def test_jax_on_more_than_one_task_is_refused_before_submission():
    """What the launchers check before submitting (bionn.sweep_plan.plan_launch), on the real Slurm
    launcher's config."""

    def check(*overrides: str) -> None:
        cfg = composed("hydra/launcher=slurm", *overrides, with_hydra=True)
        check_workers(cfg, job_resources(cfg, []))

    check("hydra.launcher.nodes=2", "dataset.shape.batch_size=64")  # tensorflow: multi-worker
    check("runtime.backend=jax")
    for nodes, tasks in ((2, 1), (1, 2)):
        with pytest.raises(ConfigError) as refused:
            check(
                f"hydra.launcher.nodes={nodes}",
                f"hydra.launcher.tasks_per_node={tasks}",
                "runtime.backend=jax",
            )
        assert str(refused.value) == (
            f"the command-line override runtime.backend=jax: runtime.backend = jax is invalid with "
            f"hydra.launcher.nodes = {nodes} x tasks_per_node = {tasks} (2 tasks): the jax backend trains in "
            "one process on its local devices; multi-host training stays on TensorFlow's "
            "MultiWorkerMirroredStrategy (runtime.backend=tensorflow), or use nodes = 1 and "
            "tasks_per_node = 1"
        )


def test_a_folder_trained_on_tensorflow_refuses_a_resume_on_jax_naming_the_key(tmp_path):
    folder = RunFolder(tmp_path)
    folder.write_ledger(resolved(composed("debug=quick")))
    (tmp_path / HISTORY).write_text("epoch,loss\n0,1.0\n")  # an epoch was trained
    same = resolved(composed("debug=quick", "runtime.backend=tensorflow"))
    assert claim(folder, same, OnConfigChange.refuse) == Claim()  # resumes
    with pytest.raises(ConfigChanged) as refused:
        claim(folder, resolved(composed("debug=quick", "runtime.backend=jax")), OnConfigChange.refuse)
    assert '  runtime.backend: "tensorflow" (in the folder) -> "jax" (this run)' in str(refused.value)


def test_a_ledger_of_a_bionn_before_runtime_backend_resumes_on_tensorflow_only(tmp_path):
    """runtime.backend = tensorflow leaves the fingerprint as it was before the key existed."""
    folder, config = RunFolder(tmp_path), resolved(composed("debug=quick"))
    older = {**config, "runtime": {k: v for k, v in config["runtime"].items() if k != "backend"}}
    folder.write_ledger(older)
    (tmp_path / HISTORY).write_text("epoch,loss\n0,1.0\n")
    assert folder.ledger()["fingerprint"] == fingerprint(config)
    assert claim(folder, config, OnConfigChange.refuse) == Claim()  # resumes
    with pytest.raises(ConfigChanged, match='  runtime.backend: "tensorflow" \\(in the folder\\) -> "jax"'):
        claim(folder, resolved(composed("debug=quick", "runtime.backend=jax")), OnConfigChange.refuse)


def event_scalars(log_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{side (train, validation): {tag: [(step, value), ...]}}: the scalars of a TensorBoard log folder."""
    found = {}
    for side in sorted(p.name for p in log_dir.iterdir()):
        events = EventAccumulator(str(log_dir / side), size_guidance={"tensors": 0})
        events.Reload()
        found[side] = {
            tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
            for tag in events.Tags()["tensors"]
            if events.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"  # not Keras' model config
        }
    return found


def test_epoch_scalars_write_what_keras_tensorboard_callback_writes(tmp_path):
    namespace: dict = {}
    exec(TINY_FIT, namespace)
    assert isinstance(tensorflow_backend.tensorboard(tmp_path / "k"), keras.callbacks.TensorBoard)
    namespace["tiny_fit"](
        [keras.callbacks.TensorBoard(log_dir=str(tmp_path / "keras")), EpochScalars(tmp_path / "ours")]
    )
    theirs, ours = event_scalars(tmp_path / "keras"), event_scalars(tmp_path / "ours")
    assert sorted(ours["train"]) == ["epoch_learning_rate", "epoch_loss", "epoch_mae"]
    assert sorted(ours["validation"]) == [
        "epoch_loss",
        "epoch_mae",
        "evaluation_loss_vs_iterations",
        "evaluation_mae_vs_iterations",
    ]
    assert {side: sorted(tags) for side, tags in ours.items()} == {
        side: sorted(tags) for side, tags in theirs.items()
    }
    for side, tags in ours.items():
        for tag, points in tags.items():
            steps = [0, 1, 2] if tag.startswith("epoch_") else [4, 8, 12]  # 4 batches an epoch
            assert [s for s, _ in points] == [s for s, _ in theirs[side][tag]] == steps
            np.testing.assert_allclose([v for _, v in points], [v for _, v in theirs[side][tag]], rtol=1e-6)


def test_under_jax_tensorboard_and_provenance_import_no_tensorflow(tmp_path):
    code = (
        FORBID_TENSORFLOW
        + TINY_FIT
        + textwrap.dedent(
            """
        import json
        from bionn.backend import select
        select("jax")
        from bionn.backend import current
        from bionn.provenance import provenance
        callback = current().tensorboard(sys.argv[1])
        history = tiny_fit([callback])
        loaded = [m for m in sys.modules if m.split(".")[0] == "tensorflow"]
        found = {"history": history, "provenance": provenance(), "callback": type(callback).__name__}
        print(json.dumps(found | {"tried": TRIED, "loaded": loaded}))
        """
        )
    )
    done = python(code, str(tmp_path / "tb"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["tried"] == [] and result["loaded"] == [] and result["callback"] == "EpochScalars"
    assert result["provenance"]["backend"] == "jax"
    libraries = result["provenance"]["libraries"]
    assert libraries["jax"].startswith("0.") and libraries["jaxlib"] == libraries["jax"]
    assert "tensorflow" not in libraries
    written = event_scalars(tmp_path / "tb")
    history = result["history"]
    for key, values in history.items():
        side, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
        points = written[side][f"epoch_{tag}"]
        assert [s for s, _ in points] == [0, 1, 2]
        np.testing.assert_allclose([v for _, v in points], values, rtol=1e-6)
        if side == "validation":
            points = written[side][f"evaluation_{tag}_vs_iterations"]
            assert [s for s, _ in points] == [4, 8, 12]
            np.testing.assert_allclose([v for _, v in points], values, rtol=1e-6)
    assert [v for _, v in written["train"]["epoch_learning_rate"]] == pytest.approx([0.01] * 3)


def test_provenance_names_the_backend_and_its_libraries():
    record = provenance()
    assert record["backend"] == "tensorflow" and record["libraries"]["tensorflow"].startswith("2.21")
    assert "jax" not in record["libraries"]


def test_the_commands_that_load_a_model_take_a_backend_defaulting_to_keras_backend(monkeypatch, capsys):
    from bionn import evaluate, predict

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert predict.parse_args(["run", "in.npz"]).backend == "jax"
    monkeypatch.delenv("KERAS_BACKEND")
    assert evaluate.parse_args(["run"]).backend == "tensorflow"  # installed here
    with pytest.raises(SystemExit):
        predict.parse_args(["run", "in.npz", "--backend", "torch"])
    choices = r"--backend: invalid choice: 'torch' \(choose from '?tensorflow'?, '?jax'?\)"
    assert re.search(choices, capsys.readouterr().err)
    assert predict.main(["run", "in.npz", "--backend", "jax"]) == 2  # this process runs Keras on TensorFlow
    assert capsys.readouterr().err.startswith(
        "bionn-predict: error: runtime.backend = jax is invalid here: this process already runs Keras on "
        "tensorflow"
    )
