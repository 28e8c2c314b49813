"""Shared fixtures: the real conf/ composed by Hydra, dataset configs built through the real schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bionn.config.compose import compose_run
from bionn.config.schema import DatasetConfig
from bionn.data.dataset import KineticsDataset
from bionn.run_folder import RunFolder, RunFolderError

ROOT = Path(__file__).resolve().parents[1]
# Epochs of several seconds by data size (not by timing): after an attempt's first commit, five epochs
# of 8,400 samples remain, several times Slurm's KillWait (5 s) even on a fast idle CPU, so a requeue's
# SIGKILL lands while the job trains.
LONG = ["debug=quick", "dataset.shape.n_samples=12000", "training.epochs=6", "training.save_interval=0"]


def pytest_addoption(parser):
    parser.addoption(
        "--reverse-order",
        action="store_true",
        help="run the collected tests in reverse order (scripts/test.sh's second pass: no test may depend "
        "on what another left behind)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--reverse-order"):
        items.reverse()


def composed(*overrides: str, **options):
    """The run config `python train.py <overrides>` would train: the real conf/ through Hydra's
    compose API (bionn.config.compose.compose_run; config_dir=..., with_hydra=True as there)."""
    return compose_run(*overrides, conf=ROOT / "conf", **options)


@pytest.fixture
def compose():
    """`compose("model=P", "debug=quick")`: the composed config, as `composed` above."""
    return composed


def absent_pid() -> int:
    """A process id no process can have: one above the kernel's pid_max. (A reaped child's pid may be
    reused by a new process at any time; this one cannot.)"""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def training_in_attempt(run_dir: Path, attempt: int) -> bool:
    """True once attempt number `attempt` trains: it is running and committed an epoch of its own, so fit
    is under way (the commit is an epoch's last step; the next epoch has begun unless it was the last)."""
    folder = RunFolder(run_dir)
    try:
        attempts = folder.attempts()
        committed = folder.committed_epoch()
    except (RunFolderError, OSError):  # a file being replaced: ask again
        return False
    if len(attempts) != attempt or attempts[-1]["outcome"] is not None:
        return False
    start = attempts[-1]["start_epoch"]
    return start is not None and committed > start


def rescaled_concentrations(ds, sample: dict, c: float):
    """Concentrations of `sample` (a reference_sample of ds) under the scale invariance (k1 / c, c E0,
    c S0), solved with DOP853 at tight tolerances: every trajectory scales by c, the features do not."""
    from scipy.integrate import solve_ivp

    from bionn.data.reference import rates

    k1, k2, k3, e0, s0 = sample["kinetic"]
    return solve_ivp(
        lambda t, y: rates(y, k1 / c, k2, k3, 0),
        (ds.time[0], ds.time[-1]),
        [c * e0, c * s0, 0.0, 0.0],
        method="DOP853",
        t_eval=ds.time,
        rtol=1e-12,
        atol=1e-14,
    ).y.T


def dataset_config(**overrides):
    """A DatasetConfig with dotted-key overrides, e.g. dataset_config(**{"shape.n_samples": 10})."""
    cfg = OmegaConf.structured(DatasetConfig)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def make_dataset(**overrides) -> KineticsDataset:
    return KineticsDataset(dataset_config(**overrides))


@pytest.fixture
def small_dataset() -> KineticsDataset:
    return make_dataset(
        **{
            "name": "tiny",
            "shape.n_samples": 400,
            "shape.batch_size": 16,
            "shape.n_shards": 4,
            "shape.shuffle_buffer_size": 50,
            "shape.splits": [0.5, 0.25, 0.25],
        }
    )


# Session fixtures shared by several test modules live here: a fixture imported from another test module
# is a second fixture of its own, computed again (the reference training below cost 5 minutes twice).


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """One statistics cache folder for the session's trainings and sweeps."""
    return tmp_path_factory.mktemp("stats")


@pytest.fixture(scope="session")
def one_process_two_replicas(cache, tmp_path_factory) -> Path:
    """The run folder of `model=P` + LONG trained in one process with 2 replicas: what every multi-worker
    training of that config must equal (tests/test_slurm.py, tests/test_multinode.py; trained once)."""
    single = tmp_path_factory.mktemp("one_process") / "run"
    cmd = [sys.executable, "train.py", "model=P", *LONG, "runtime.cpu_replicas=2", f"hydra.run.dir={single}"]
    alone = subprocess.run(
        [*cmd, f"runtime.stats_cache_dir={cache}"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    return single
