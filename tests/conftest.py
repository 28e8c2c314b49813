"""Shared fixtures: the real conf/ composed by Hydra, dataset configs built through the real schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bionn.config.compose import compose_run
from bionn.config.dataset import DatasetConfig
from bionn.data.dataset import KineticsDataset
from bionn.run_folder import RunFolder, RunFolderError

ROOT = Path(__file__).resolve().parents[1]
# Epochs of several seconds by data size (not by timing): after an attempt's first commit, five epochs
# of 4,200 samples remain (about 9 s each in one process on the AMD EPYC, 2 cores), several times
# Slurm's KillWait (5 s) even on a fast idle CPU, so a requeue's SIGKILL lands while the job trains.
LONG = ["debug=quick", "dataset.shape.n_samples=6000", "training.epochs=6", "training.save_interval=0"]


def pytest_addoption(parser):
    parser.addoption(
        "--reverse-order",
        action="store_true",
        help="run the collected tests in reverse order (scripts/test.sh's second pass: no test may depend "
        "on what another left behind)",
    )
    parser.addoption(
        "--durations-file",
        metavar="PATH",
        help="append each test's seconds (setup + call + teardown) to PATH as `seconds<TAB>test` lines; "
        "write it as --durations-file=PATH (pytest takes a separate PATH for a test folder before it "
        "reads this file's options). scripts/test.sh prints a run's slowest from there at the end",
    )


# The tests that must not run beside each other: the Slurm cluster's (some hold, lose or stop its nodes)
# and the container image's (buildah's one image tag). scripts/test.sh runs the slow tier as two pytest
# processes at once, `-m cluster` and `-m "not cluster"`, so that each of these runs alone among them.
CLUSTER_FIXTURES = {"slurm", "two_nodes", "image"}
CLUSTER_MODULES = {"test_slurm.py", "test_multinode.py", "test_search_slurm.py", "test_containers.py"}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("full"):  # full tier only: never in the fast tier either
            item.add_marker(pytest.mark.slow)
        uses_cluster = CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ()))
        if uses_cluster or item.path.name in CLUSTER_MODULES or "Slurm" in item.nodeid:
            item.add_marker(pytest.mark.cluster)
    if config.getoption("--reverse-order"):
        items.reverse()


_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    # Under pytest-xdist the controller gets every worker's reports here too.
    _SECONDS[report.nodeid] = _SECONDS.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    path = session.config.getoption("--durations-file")
    if path and not hasattr(session.config, "workerinput"):  # the controller writes, not each worker
        with open(path, "a") as out:
            out.writelines(f"{seconds:.2f}\t{test}\n" for test, seconds in _SECONDS.items())


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


def interrupt_at(epoch: int):
    """A Keras callback standing in for a kill or Ctrl-C: KeyboardInterrupt as `epoch` begins, after the last
    commit (keras imported only here). Real signals and kills are in test_train.py and test_slurm.py."""
    import keras

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, begun, logs=None):
            if begun == epoch:
                raise KeyboardInterrupt(f"interrupted at epoch {begun}")

    return Interrupt()


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 at a free port, over a SQLite file in `folder`; stop() and
    start() again keep its store and port (a server that goes down and comes back)."""

    def __init__(self, folder: Path):
        import socket

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> MlflowServer:
        import os
        import subprocess
        import sys
        import time
        import urllib.request

        mlflow = Path(sys.executable).parent / "mlflow"
        cmd = [
            str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination", str(self.folder / "artifacts"),
        ]  # fmt: skip
        log = open(self.folder / "server.log", "a")  # noqa: SIM115 (the server writes it while it runs)
        # Without its job runner (a queue of worker processes for features bionn does not use): it starts
        # in a fraction of the time.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"mlflow server did not answer on {self.uri}")

    def stop(self) -> None:
        import os
        import signal

        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the server and its workers
            self.process.wait(timeout=60)
        self.process = None

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One real MLflow server for the session's tests (each test its own experiment or run folder)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


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
