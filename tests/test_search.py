"""An asynchronous hyperparameter search (docs/search.md): its definition, checked before any trial.

Bad search definitions go through the real sweeper (`train.py -m hparams_search=...` in a subprocess,
with the search file in a --config-dir): each is refused with the file, the key and the value named,
and nothing is written into the sweep folder. A folder holding another search, or an unreadable study,
is refused and left byte for byte as it was. The real searches (Slurm and local) are in
tests/test_search_slurm.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, absent_pid

from bionn.run.search_worker import trial_overrides
from bionn.search.folder import JOURNAL, SEARCH, SearchFolder
from bionn.search.space import SearchError, SearchSpec, logged_metrics, metric_direction

SMOKE = {
    "params": {
        "training.compile.learning_rate": "tag(log, interval(1e-4, 1e-2))",
        "model.vars.width": "choice(32, 64)",
    },
    "objective": {"metric": "val_r2_mean"},
    "n_trials": 4,
    "n_workers": 2,
    "sampler": {"name": "tpe", "seed": 0},
    "pruner": {"name": "median"},
}


def spec(**changes) -> SearchSpec:
    return SearchSpec.from_config({**SMOKE, **changes}, "conf/hparams_search/x.yaml")


def search(config_dir: Path, sweep: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "--config-dir",
        str(config_dir),
        "hparams_search=bad",
        "hydra/launcher=local",
        f"hydra.sweep.dir={sweep}",
        *overrides,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def search_file(tmp_path: Path, params: dict[str, str], objective: str = "{metric: val_r2_mean}") -> Path:
    config_dir = tmp_path / "conf"
    (config_dir / "hparams_search").mkdir(parents=True)
    lines = "\n".join(f"      {key}: {value}" for key, value in params.items())
    (config_dir / "hparams_search" / "bad.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /hydra/sweeper: bionn_search\n  - override /model: TR\n"
        f"hydra:\n  sweeper:\n    objective: {objective}\n    n_trials: 2\n    params:\n{lines}\n"
    )
    return config_dir


def test_the_space_reads_hydras_sweep_syntax():
    s = spec(
        params={
            "training.compile.learning_rate": "tag(log, interval(1e-4, 1e-2))",
            "model.vars.blocks": "range(1, 4)",
            "dataset.shape.batch_size": "choice(256, 512)",
            "training.compile.weight_decay": "interval(0.0, 0.01)",
        }
    )
    lr, blocks, batch, decay = s.params.values()
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-4, 1e-2, True)
    assert (blocks.kind, blocks.low, blocks.high, blocks.step) == ("int", 1, 3, 1)  # range's stop is excluded
    assert (batch.kind, batch.choices) == ("choice", (256, 512))
    assert (decay.kind, decay.log) == ("float", False)
    assert s.direction == "maximize" and s.split_and_metric() == ("validation", "r2_mean")
    assert (
        blocks.override(2) == "model.vars.blocks=2"
        and lr.override(0.003) == "training.compile.learning_rate=0.003"
    )
    # A trial's overrides: the base ones, less those of searched keys, then the trial's values.
    base = ["hparams_search=smoke", "model.vars.blocks=5", "training.epochs=4"]
    assert trial_overrides(s, base, {"model.vars.blocks": 2}) == [
        "hparams_search=smoke",
        "training.epochs=4",
        "model.vars.blocks=2",
    ]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"params": {"training.compile.learning_rate": "interval(0.01, 0.001)"}},
            "empty or inverted interval",
        ),
        ({"params": {"model.vars.blocks": "range(3, 3)"}}, "empty or inverted range"),
        ({"params": {"model.vars.width": "choice()"}}, "not Hydra's sweep syntax"),
        ({"params": {"training.compile.learning_rate": "tag(log, interval(0, 1))"}}, "positive lower bound"),
        ({"params": {"training.epochs": "5"}}, "a fixed value is no search range"),
        ({"params": {}}, "hydra.sweeper.params is empty"),
        ({"objective": {"metric": "val_loss", "direction": "maximize"}}, "does not match"),
        ({"objective": {"metric": "val_r2_mean", "direction": "upwards"}}, "allowed: maximize, minimize"),
        (
            {"pruner": {"name": "patience"}},
            "allowed: median, percentile, threshold, successive_halving, none",
        ),
        ({"pruner": {"name": "threshold"}}, "needs lower or upper"),
        ({"n_trials": 0}, "hydra.sweeper.n_trials = 0 must be a whole number >= 1"),
        ({"enqueue": [{"model.vars.width": 48}]}, "model.vars.width = 48 is outside choice(32, 64)"),
        ({"enqueue": [{"model.vars.depth": 2}]}, "model.vars.depth is not a searched key"),
    ],
)
def test_a_bad_definition_names_the_file_key_and_value(changes, expected):
    with pytest.raises(SearchError) as err:
        spec(**changes)
    assert expected in str(err.value) and "conf/hparams_search/x.yaml" in str(err.value)


def test_metrics_and_directions_are_the_logged_ones():
    logged = logged_metrics(["R_squared", "MeanSquaredError"])
    assert {"loss", "r2_mean", "r_squared", "mean_squared_error", "val_r2_mean", "val_loss"} <= set(logged)
    assert metric_direction("val_r2_mean") == "maximize" and metric_direction("val_loss") == "minimize"
    assert metric_direction("val_mean_absolute_error") == "minimize" and metric_direction("val_auc") is None


@pytest.mark.parametrize(
    ("params", "objective", "expected"),
    [
        (
            {"training.compile.lr": "interval(1e-4, 1e-2)"},
            "{metric: val_r2_mean}",
            ["training.compile.lr is no key of the composed config", "learning_rate"],
        ),
        (
            {"training.precision": "choice(float32, float8)"},
            "{metric: val_r2_mean}",
            ["training.precision=float8", "float8", "mixed_bfloat16"],
        ),
        (
            {"model.vars.blocks": "choice(0, 1)"},
            "{metric: val_r2_mean}",
            ["model.vars.blocks=0", "repeat = 0 must be a whole number >= 1"],
        ),
        (
            {"model.vars.width": "choice(32, 64)"},
            "{metric: val_auc, direction: maximize}",
            ["objective.metric = 'val_auc' is not logged", "val_r2_mean"],
        ),
    ],
)
def test_the_sweeper_refuses_a_bad_search_before_any_trial(tmp_path, params, objective, expected):
    config_dir = search_file(tmp_path, params, objective)
    done = search(config_dir, tmp_path / "sweep")
    assert done.returncode == 1, done.stderr[-2000:]
    message = done.stderr
    assert str(config_dir / "hparams_search" / "bad.yaml") in message, message
    for text in expected:
        assert text in message, message
    assert "Traceback" not in message
    sweep = tmp_path / "sweep"
    assert (
        not (sweep / JOURNAL).exists() and not (sweep / SEARCH).exists() and not (sweep / "workers").exists()
    )


def test_a_folder_with_another_search_or_an_unreadable_study_is_refused_and_left_as_it_was(tmp_path):
    config_dir = search_file(tmp_path, {"model.vars.width": "choice(32, 64)"})
    sweep = tmp_path / "sweep"
    # The folder holds a search of another space (as an earlier command would have left it).
    other = spec(params={"model.vars.width": "choice(16, 32)"})
    SearchFolder(sweep).begin(other, ["hparams_search=bad"], "train")
    before = {p.name: p.read_bytes() for p in sweep.iterdir()}
    done = search(config_dir, sweep)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "holds another search" in done.stderr and "choice(16, 32)" in done.stderr, done.stderr
    assert "choice(32, 64)" in done.stderr and "nothing was started" in done.stderr
    assert {p.name: p.read_bytes() for p in sweep.iterdir()} == before

    # An unreadable study is reported, never overwritten.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / JOURNAL).write_bytes(b'{"op_code": 0, "study_name": "bionn"\n\x00garbage\n')
    done = search(config_dir, broken)
    assert done.returncode == 1, done.stderr[-2000:]
    assert (
        f"{broken / JOURNAL}: the study cannot be read" in done.stderr and "it was not changed" in done.stderr
    )
    assert (broken / JOURNAL).read_bytes() == b'{"op_code": 0, "study_name": "bionn"\n\x00garbage\n'
    assert sorted(p.name for p in broken.iterdir()) == [JOURNAL]


def test_claims_resume_own_and_dead_workers_trials_and_never_exceed_n_trials(tmp_path):
    """Which trial a worker trains next, with a real study in a real search folder."""
    import json
    import os
    import socket
    import time

    s = spec(n_trials=3)
    folder = SearchFolder(tmp_path)
    folder.begin(s, ["hparams_search=smoke"], "train")

    def worker_record(index: int, host: str, pid: int, age_s: float) -> None:
        path = tmp_path / "workers" / str(index) / "worker.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"worker": index, "host": host, "pid": pid, "heartbeat_unix": time.time() - age_s})
        )

    here, gone = socket.gethostname(), absent_pid()
    # Worker 0 (this process, alive) takes trial 0; worker 1 takes a new trial 1 (0 has a live owner).
    worker_record(0, here, os.getpid(), 0)
    first = folder.claim(0, s, s.n_trials)
    assert (first.number, first.resumed, first.run_dir) == (0, False, tmp_path / "trials" / "0")
    assert folder.claim(1, s, s.n_trials).number == 1
    # Worker 0 comes back (a requeue): it takes its own running trial back first.
    again = folder.claim(0, s, s.n_trials)
    assert (again.number, again.resumed, again.params) == (0, True, first.params)
    # Worker 0's process is gone from this host: worker 2 takes its trial over, as the same trial.
    worker_record(0, here, gone, 0)
    taken = folder.claim(2, s, s.n_trials)
    assert (taken.number, taken.resumed) == (0, True)
    assert folder.trials()[0].user_attrs["worker"] == 2
    # A worker on another host is dead once its heartbeat is older than dead_after_s.
    worker_record(1, "elsewhere", 1, s.dead_after_s - 60)
    worker_record(2, here, os.getpid(), 0)
    assert folder.claim(3, s, s.n_trials).number == 2  # worker 1 is alive: a new trial, the last one
    worker_record(3, here, os.getpid(), 0)
    worker_record(1, "elsewhere", 1, s.dead_after_s + 1)
    assert (folder.claim(4, s, s.n_trials).number, folder.trials()[1].user_attrs["worker"]) == (1, 4)
    # Three trials exist and every one has a live owner: nothing is left to claim.
    worker_record(4, here, os.getpid(), 0)
    assert folder.claim(5, s, s.n_trials) is None
    assert [t.number for t in folder.trials()] == [0, 1, 2]
    assert folder.running_trials() == {0: 2, 1: 4, 2: 3}  # {trial: its worker}

    # A record written by an earlier start of the asking Slurm job (requeued after its node was lost) is
    # dead however young its heartbeat: Slurm runs a job once at a time.
    path = tmp_path / "workers" / "1" / "worker.json"
    record = {"worker": 1, "host": "elsewhere", "pid": 1, "heartbeat_unix": time.time()}
    path.write_text(json.dumps({**record, "slurm": {"job_id": "9", "array_job_id": "8", "array_task_id": 1}}))
    assert folder.worker_alive(1, s.dead_after_s) and folder.worker_alive(1, s.dead_after_s, slurm_job="8_0")
    assert not folder.worker_alive(1, s.dead_after_s, slurm_job="8_1")


def test_one_worker_with_no_trial_left_waits_and_takes_a_dead_workers_trial_over_after_dead_after_s(tmp_path):
    """The end of a search, with real worker records: a worker with no trial left to start waits (its
    worker.json says so), reading only the running trials' worker records, and takes a trial whose worker
    on another host went silent over once that heartbeat is dead_after_s old, never sooner; a worker that
    finds another one waiting ends at once; with no trial running, a worker ends."""
    import json
    import threading
    import time

    from bionn.run.search_worker import next_trial

    s = spec(n_trials=2, heartbeat_s=0.2, dead_after_s=1.5)
    folder = SearchFolder(tmp_path)
    folder.begin(s, ["hparams_search=smoke"], "train")

    def worker_record(index: int, **fields) -> None:
        path = tmp_path / "workers" / str(index) / "worker.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"worker": index, "host": "elsewhere", "pid": 1, "heartbeat_unix": time.time()}
        path.write_text(json.dumps({**record, **fields}))

    # Worker 0, on another host, trains trial 0; worker 1 has trained trial 1: no trial is left to start.
    assert folder.claim(0, s, s.n_trials).number == 0
    worker_record(0, trial=0)
    folder.study(s).tell(folder.claim(1, s, s.n_trials).number, 0.5)

    # Waiting returns when the running trial's worker names another trial (or none)...
    threading.Timer(0.5, lambda: worker_record(0, trial=None)).start()
    began = time.time()
    folder.wait_for_change({0: 0}, s, poll_s=0.05)
    assert 0.5 <= time.time() - began < 2.0
    # ...or once its heartbeat is dead_after_s old (another host: only the heartbeat tells), never sooner.
    worker_record(0, trial=0)
    began = time.time()
    folder.wait_for_change({0: 0}, s, poll_s=0.05)
    assert s.dead_after_s <= time.time() - began < s.dead_after_s + 2.0

    # Worker 1 waits for trial 0 and takes it over when worker 0 has been silent for dead_after_s.
    seen = {}
    with folder.heartbeat(1, s, None) as beat:
        worker_record(0, trial=0)
        silent = time.time()
        threading.Timer(0.7, lambda: seen.update(folder.worker_record(1))).start()  # while it waits
        taken = next_trial(folder, s, s.n_trials, beat)
        waited = time.time() - silent
        assert (taken.number, taken.resumed) == (0, True)
        assert s.dead_after_s <= waited < s.dead_after_s + 2.0, waited
        assert seen["waiting"] is True and seen["trial"] is None
        assert (folder.worker_record(1)["trial"], folder.worker_record(1)["waiting"]) == (0, False)

        # Worker 1 trains trial 0 now (not waiting). Worker 2 finds nothing to start: it waits...
        with folder.heartbeat(2, s, None) as second, folder.heartbeat(3, s, None) as third:
            waiter = threading.Thread(target=lambda: seen.update(second=next_trial(folder, s, 2, second)))
            waiter.start()
            deadline = time.time() + 30
            while not folder.worker_record(2)["waiting"] and time.time() < deadline:
                time.sleep(0.05)
            # ...so worker 3, finding worker 2 waiting, ends at once.
            assert next_trial(folder, s, s.n_trials, third) is None
            assert not folder.worker_record(3)["waiting"] and waiter.is_alive()
            folder.study(s).tell(0, 0.4)  # worker 1 ends trial 0, as work() does
            beat.update(trial=None)
            ended = time.time()
            waiter.join(timeout=30)
            assert seen["second"] is None and time.time() - ended < 2  # no trial runs any more: it ends
    assert folder.finished(s.n_trials)


SHIPPED_SEARCHES = sorted((ROOT / "conf" / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_SEARCHES, ids=lambda p: p.stem)
def test_every_shipped_search_passes_the_sweepers_checks(path, tmp_path):
    """Each conf/hparams_search/ file, composed as `train.py -m hparams_search=<name>` composes it and
    checked by the real sweeper (every searched key at both ends, every choice, every enqueued trial)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import HydraContext

    from bionn.config.schema import register_schemas
    from hydra_plugins.bionn_search.sweeper import SearchSweeper

    register_schemas()
    overrides = [f"hparams_search={path.stem}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", [*overrides, f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True)
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=None)
        sweeper = SearchSweeper()
        sweeper.setup(hydra_context=context, task_function=lambda _: None, config=cfg)
        spec = sweeper.check(overrides)
    assert spec.source.endswith(f"hparams_search/{path.name}") and spec.params
    assert not list(tmp_path.iterdir())  # checking writes nothing
