"""The search report (bionn.report.search): real studies made through SearchFolder and Optuna, real run
folders through bionn.run_folder, real Hydra compositions of best.yaml; one slow test runs the smoke
search with the local launcher and trains again from its best.yaml."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, absent_pid, composed
from omegaconf import OmegaConf

from bionn.report import write_report
from bionn.report.cli import watch
from bionn.report.search import read_search
from bionn.report.search_render import group_overrides
from bionn.report.search_watch import search_ended, worker_states
from bionn.run_folder import FINAL, HYDRA, RunFolder, fingerprint
from bionn.search.folder import JOURNAL, SEARCH, Heartbeat, SearchFolder
from bionn.search.space import SearchSpec

PARAMS = {
    "training.compile.learning_rate": "tag(log, interval(1e-4, 1e-2))",
    "model.vars.width": "choice(32, 64)",
}


def make_spec(n_trials: int = 6, direction: str | None = None) -> SearchSpec:
    node = {
        "params": dict(PARAMS),
        "objective": {"metric": "val_r2_mean", "direction": direction},
        "n_trials": n_trials,
        "n_workers": 2,
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
    }
    return SearchSpec.from_config(node, "conf/hparams_search/test.yaml", frozenset({"model", "dataset"}))


def begin(root: Path, spec: SearchSpec) -> SearchFolder:
    folder = SearchFolder(root)
    folder.begin(spec, ["hparams_search=smoke"], "train")
    return folder


def train_rows(run: RunFolder, values: list[float]) -> None:
    """history.csv as a training writes it: one row per epoch."""
    run.write_history(
        [{"epoch": i, "loss": 1.0 - v, "val_loss": 1.0 - v, "val_r2_mean": v} for i, v in enumerate(values)]
    )


def finish(run: RunFolder, status: str, value: float | None) -> None:
    evaluation = {"validation": {"r2_mean": value}, "test": {"r2_mean": value}} if value is not None else None
    run.write_json(FINAL, {"status": status, "epochs_completed": 3, "evaluation": evaluation})


@pytest.fixture
def study(tmp_path) -> tuple[SearchFolder, SearchSpec]:
    """Six trials: complete 0.5, 0.8, 0.2; pruned after reporting 0.3, 0.1; failed; running; waiting."""
    from optuna.trial import TrialState

    spec = make_spec(n_trials=8)
    folder = begin(tmp_path / "search", spec)
    outcomes = [("complete", 0.5), ("complete", 0.8), ("pruned", None), ("failed", None), ("complete", 0.2)]
    outcomes.append(("running", None))
    for worker, (state, value) in enumerate(outcomes):
        claimed = folder.claim(worker % 2, spec, 8)
        study = folder.study(spec)
        run = RunFolder(claimed.run_dir)
        if state == "complete":
            train_rows(run, [value / 2, value * 0.9, value])
            finish(run, "completed", value)
            study.tell(claimed.number, value)
        elif state == "pruned":
            train_rows(run, [0.3, 0.1])
            for epoch, v in enumerate([0.3, 0.1]):
                folder.storage().set_trial_intermediate_value(claimed.trial_id, epoch, v)
            finish(run, "pruned", None)
            study.tell(claimed.number, state=TrialState.PRUNED)
        elif state == "failed":
            folder.storage().set_trial_user_attr(claimed.trial_id, "error", "ValueError: width refused")
            study.tell(claimed.number, state=TrialState.FAIL)
        else:
            train_rows(run, [0.4])
    folder.study(spec).enqueue_trial({"training.compile.learning_rate": 0.001, "model.vars.width": 32})
    return folder, spec


def test_trials_are_sorted_best_first_then_the_rest_by_number(study):
    folder, _ = study
    summary = read_search(folder.path)
    assert [(t.number, t.state) for t in summary.trials] == [
        (1, "complete"),
        (0, "complete"),
        (4, "complete"),
        (2, "pruned"),
        (3, "failed"),
        (5, "running"),
        (6, "waiting"),
    ]
    assert [t.value for t in summary.trials[:3]] == [0.8, 0.5, 0.2]
    assert summary.best.number == 1 and summary.notes == []
    pruned = summary.trials[3]
    assert pruned.value == 0.1 and pruned.value_epoch == 1  # its last reported value, not the best
    assert [t.epochs for t in summary.trials] == [3, 3, 3, 2, None, 1, None]
    assert summary.trials[5].run_dir == "trials/5" and summary.trials[6].run_dir == "-"  # waiting: none yet
    assert summary.trials[4].error == "ValueError: width refused"


def test_a_minimised_objective_sorts_lowest_first(tmp_path):
    spec = make_spec(direction=None)
    spec.metric, spec.direction = "val_loss", spec.direction.__class__("minimize")
    folder = begin(tmp_path, spec)
    for value in (0.4, 0.1, 0.9):
        claimed = folder.claim(0, spec, 6)
        folder.study(spec).tell(claimed.number, value)
    summary = read_search(tmp_path)
    assert summary.direction == "minimize"
    assert [t.value for t in summary.trials] == [0.1, 0.4, 0.9] and summary.best.value == 0.1


def test_report_writes_search_csv_and_prints_the_table(study):
    folder, _ = study
    jobs, text = write_report(folder.path, baseline=None)
    with open(folder / "search.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "number",
        "state",
        "objective",
        "objective_source",
        "metric",
        *PARAMS,
        "epochs",
        "run_dir",
        "worker",
        "error",
        "unreadable",
    ]
    assert [r["number"] for r in rows] == ["1", "0", "4", "2", "3", "5", "6"]
    assert rows[0]["objective"] == "0.8" and rows[0]["objective_source"] == "final"
    assert rows[3]["state"] == "pruned" and rows[3]["objective"] == "0.1"
    assert rows[3]["objective_source"] == "last reported (epoch 2)"
    assert rows[4]["objective"] == "" and rows[4]["error"] == "ValueError: width refused"
    assert (
        rows[0]["run_dir"] == "trials/1" and rows[0]["epochs"] == "3" and rows[0]["metric"] == "val_r2_mean"
    )
    trial = folder.trials()[1]
    assert float(rows[0][next(iter(PARAMS))]) == trial.params[next(iter(PARAMS))]

    assert (
        "# Search: " in text
        and "7 of 8 trial(s): 3 complete, 1 pruned, 1 failed, 1 running, 1 waiting" in text
    )
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[1].startswith("| 1 ") and "| complete " in table[1] and "| 0.8 " in table[1]
    assert "0.1 (pruned at epoch 2)" in text and "- trial 3: ValueError: width refused" in text
    # the grid summary lists the trials' run folders, not the workers from sweep.json
    assert all(j.job.startswith("trials/") for j in jobs)
    assert (folder / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_never_lists_workers_as_jobs(study):
    folder, spec = study
    sweep = {
        "version": 1,
        "created": "now",
        "command": {},
        "sweep_overrides": ["hparams_search=smoke"],
        "jobs": [
            {"num": i, "overrides": ["hparams_search=smoke"], "run_dir": f"workers/{i}"}
            for i in range(spec.n_workers)
        ],
        "launches": [],
    }
    (folder / "sweep.json").write_text(json.dumps(sweep))
    jobs, text = write_report(folder.path, baseline=None)
    assert not [j for j in jobs if j.job.startswith("workers")] and "not started" not in text


def test_a_corrupt_journal_is_a_named_note_not_an_error(study):
    folder, _ = study
    journal = folder / JOURNAL
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:3] + ["{not json"] + lines[3:]) + "\n")
    jobs, text = write_report(folder.path, baseline=None)
    assert f"- search: {journal}" in text
    assert (folder / "search.csv").read_text().startswith("number,state,objective")
    assert not (folder / "best.yaml").exists()
    assert len(jobs) == 5  # the trials' run folders are still reported


def test_an_unreadable_search_record_is_a_named_note(study):
    folder, _ = study
    (folder / SEARCH).write_text('{"spec": ')
    summary = read_search(folder.path)
    assert any(str(folder / SEARCH) in note and "not valid JSON" in note for note in summary.notes)
    assert len(summary.trials) == 7  # the study itself is still read
    _, text = write_report(folder.path, baseline=None)
    assert str(folder / SEARCH) in text
    assert watch(folder.path, 0.01, io.StringIO()) == 2  # without the record, no end to watch for


def test_a_folder_without_a_study_yet_is_a_note(tmp_path):
    (tmp_path / SEARCH).write_text(json.dumps({"spec": {"params": PARAMS}, "n_trials": 4}))
    summary = read_search(tmp_path)
    assert summary.trials == [] and summary.notes == [f"{tmp_path / JOURNAL}: no study yet"]


def compose_best(folder: Path, *overrides: str):
    """What `python train.py --config-dir <folder> --config-name best` composes (the real conf/)."""
    from hydra import compose, initialize_config_dir

    from bionn.config.schema import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
        return compose(
            config_name="best", overrides=[f"hydra.searchpath=[file://{ROOT / 'conf'}]", *overrides]
        )


def test_best_yaml_composes_to_the_best_trials_config(tmp_path):
    """The best trial's run folder as a search worker leaves it (model TR chosen by the search's config, not
    by an override); best.yaml composes to a config with the trial's fingerprint."""
    spec = make_spec()
    folder = begin(tmp_path, spec)
    claimed = folder.claim(0, spec, 6)
    params = [spec.params[k].override(v) for k, v in claimed.params.items()]
    overrides = ["hparams_search=smoke", *params]
    trial_cfg = composed("model=TR", "dataset.shape.n_samples=1200", *params)
    hydra_cfg = composed("model=TR", "dataset.shape.n_samples=1200", *params, with_hydra=True).hydra
    hydra_node = OmegaConf.create({"hydra": OmegaConf.to_container(hydra_cfg)})
    hydra_node.hydra.runtime.choices["hparams_search"] = "smoke"
    run = RunFolder(claimed.run_dir)
    run.write_hydra(
        {"config.yaml": OmegaConf.to_yaml(trial_cfg), "hydra.yaml": OmegaConf.to_yaml(hydra_node)}
    )
    config = OmegaConf.to_container(trial_cfg, resolve=True, enum_to_str=True)
    run.write_ledger(config)
    folder.storage().set_trial_user_attr(claimed.trial_id, "overrides", overrides)
    folder.study(spec).tell(claimed.number, 0.7)

    write_report(folder.path, baseline=None)
    best = (folder / "best.yaml").read_text()
    assert f"# trial {claimed.number}, val_r2_mean = 0.7 (maximize), run folder trials/0" in best
    assert f"--config-dir {folder.path.resolve()} --config-name best" in best
    head = OmegaConf.create(best)
    assert head.defaults[0] == "train" and head.defaults[-1] == "_self_"
    assert {"override model": "TR"} in head.defaults and not any(
        "hparams_search" in str(d) for d in head.defaults
    )
    cfg = compose_best(folder.path)
    again = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert fingerprint(again) == run.ledger()["fingerprint"]
    # more overrides on the command line apply on top
    assert compose_best(folder.path, "training.epochs=7").training.epochs == 7


def test_best_yaml_without_the_trials_hydra_record_is_a_note(tmp_path):
    spec = make_spec()
    folder = begin(tmp_path, spec)
    claimed = folder.claim(0, spec, 6)
    RunFolder(claimed.run_dir).write_hydra({"config.yaml": OmegaConf.to_yaml(composed("model=TR"))})
    folder.study(spec).tell(claimed.number, 0.7)
    _, text = write_report(folder.path, baseline=None)
    assert f"{claimed.run_dir / HYDRA / 'hydra.yaml'}: no hydra.runtime.choices" in text
    assert not (folder / "best.yaml").exists() and (folder / "search.csv").exists()


def test_a_failing_plot_leaves_the_table(study):
    folder, _ = study
    (folder / "search.png").mkdir()  # a folder where the plot goes: the write fails for real
    _, text = write_report(folder.path, baseline=None)
    assert "search.png not written" in text and (folder / "search.csv").exists()


def test_watch_shows_trials_and_workers_until_the_study_has_its_trials(study):
    folder, spec = study
    summary = read_search(folder.path)
    dead = Heartbeat(folder / "workers" / "0" / "worker.json", 0, None)
    dead.update(pid=absent_pid(), trial=4)
    alive = Heartbeat(folder / "workers" / "1" / "worker.json", 1, None)
    alive.update(trial=5)
    workers = worker_states(folder.path, 2, None)
    assert [(w.state, w.trial, w.active) for w in workers] == [("dead", 4, False), ("alive", 5, True)]
    assert not search_ended(summary, workers)  # trial 5 runs, worker 1 is alive

    alive.update(stopped="2026-11-30T00:00:00+00:00")
    out = io.StringIO()
    code = watch(folder.path, 0.01, out)  # every worker stopped or dead: watching ends
    shown = out.getvalue()
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in shown.splitlines()}
    assert "epoch 2 of" in rows[("5", "running", "1")]  # its history has one epoch
    assert "0.1 (pruned at epoch 2) after 2 epoch(s)" in rows[("2", "pruned", "0")]
    assert ("0", "-", "dead") in rows and ("1", "-", "stopped") in rows
    assert code == 1 and "no worker is left to go on" in shown


def test_watch_takes_a_silent_worker_elsewhere_for_dead_after_the_searchs_own_dead_after_s(tmp_path):
    """search.json records dead_after_s; --watch uses it, not the default of 300 s."""
    import dataclasses
    import time

    folder = begin(tmp_path, dataclasses.replace(make_spec(), dead_after_s=10.0))
    record = {"worker": 0, "host": "elsewhere", "pid": 1, "trial": 0, "heartbeat_unix": time.time() - 60}
    (folder / "workers" / "0").mkdir(parents=True)
    (folder / "workers" / "0" / "worker.json").write_text(json.dumps(record))
    assert [(w.state, w.trial) for w in worker_states(folder.path, 1, None)] == [("dead", 0)]


def test_watch_ends_when_the_study_has_its_trials(tmp_path):
    spec = make_spec(n_trials=2)
    folder = begin(tmp_path, spec)
    for value in (0.3, 0.6):
        claimed = folder.claim(0, spec, 2)
        folder.study(spec).tell(claimed.number, value)
    out = io.StringIO()
    assert watch(folder.path, 0.01, out) == 0
    assert "ended: 2 of 2 trial(s) ended: 2 complete" in out.getvalue()


@pytest.mark.slow
def test_smoke_search_report_and_a_training_from_best_yaml(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sweep = tmp_path / "search"
    cmd = [sys.executable, "train.py", "-m", "hparams_search=smoke", "hydra/launcher=local"]
    cmd.append("hydra.sweeper.n_trials=2")  # two workers, one trial each (the Slurm tests run all four)
    # One epoch instead of smoke's three (nothing here needs a pruning step); best.yaml holds the trial's
    # composed config, epochs included, so the training from it below trains one epoch too.
    cmd.append("training.epochs=1")
    cmd.append("logger=mlflow")  # the search is one MLflow experiment in its folder's SQLite store
    done = subprocess.run(
        [*cmd, f"hydra.sweep.dir={sweep}", f"runtime.stats_cache_dir={tmp_path / 'cache'}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_search(sweep)
    assert len(summary.trials) == 2 and summary.notes == []
    assert all(t.state in ("complete", "pruned") for t in summary.trials)
    best = summary.best
    printed = done.stdout[done.stdout.index("# Search: ") :]
    assert f"Best: trial {best.number}, val_r2_mean = {best.value:.4g}" in printed
    assert (
        "bionn-report: wrote summary.csv, summary.md, summary.png, search.csv, best.yaml, search.png"
        in printed
    )
    assert "not started" not in printed and "workers/" not in printed
    with open(sweep / "search.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["number"]) for r in rows] == [t.number for t in summary.trials]
    assert float(rows[0]["objective"]) == best.value
    assert (sweep / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # MLflow: one experiment for the search, a run per trial with its number and state, the best marked.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{sweep.resolve()}/.mlflow/mlflow.db")
    experiment = client.get_experiment_by_name(str(sweep.resolve()))
    runs = {r.data.tags["bionn_trial"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {str(t.number) for t in summary.trials}
    for trial in summary.trials:
        tags = runs[str(trial.number)].data.tags
        assert runs[str(trial.number)].info.run_name == f"trials/{trial.number}"
        assert runs[str(trial.number)].info.status == "FINISHED" and tags["bionn_trial_state"] == trial.state
        assert tags["bionn_best_trial"] == str(trial.number == best.number).lower()

    again = tmp_path / "again"
    trained = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--config-dir",
            str(sweep),
            "--config-name",
            "best",
            f"hydra.run.dir={again}",
            f"runtime.stats_cache_dir={tmp_path / 'cache'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    trial = RunFolder(sweep / best.run_dir)
    assert RunFolder(again).ledger()["fingerprint"] == trial.ledger()["fingerprint"]
    assert RunFolder(again).final()["status"] == "completed"


@pytest.mark.slow
def test_a_search_under_hydras_basic_launcher_a_trial_again_without_m_and_a_failed_trial_exit_1(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cache = f"runtime.stats_cache_dir={tmp_path / 'cache'}"
    quick = ["hparams_search=smoke", "hydra.sweeper.n_trials=1", "training.epochs=1"]

    def train(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "train.py", *args]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)

    # No hydra/launcher=...: Hydra's basic launcher runs the two workers one after the other in-process
    # (the first trains the one trial, the second finds none left and stops).
    sweep = tmp_path / "basic"
    done = train("-m", *quick, f"hydra.sweep.dir={sweep}", cache)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_search(sweep)
    assert len(summary.trials) == 1 and summary.notes == []
    assert [
        json.loads((sweep / "workers" / str(i) / "worker.json").read_text())["trials"] for i in (0, 1)
    ] == [
        [0],
        [],
    ]
    assert all(t.state in ("complete", "pruned") for t in summary.trials), summary.trials

    # Without -m, a trial's own overrides train that one configuration, and say nothing is searched.
    trial = summary.trials[0]
    overrides = [
        o
        for o in OmegaConf.load(sweep / trial.run_dir / HYDRA / "overrides.yaml")
        if not o.startswith(("hydra.", "runtime.stats_cache_dir="))
    ]
    one = tmp_path / "one"
    again = train(*overrides, f"hydra.run.dir={one}", cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "without -m: training this one configuration, searching nothing" in again.stdout + again.stderr
    assert RunFolder(one).ledger()["fingerprint"] == RunFolder(sweep / trial.run_dir).ledger()["fingerprint"]
    assert (
        RunFolder(one).final() is not None and not (one / JOURNAL).exists() and not (one / "trials").exists()
    )

    # A trial that fails (its statistics cannot be written): the search ends with exit code 1.
    failing = tmp_path / "failing"
    failed = train(
        "-m",
        *quick,
        "hydra.sweeper.n_workers=1",
        "hydra.sweeper.n_trials=1",
        f"hydra.sweep.dir={failing}",
        "runtime.stats_cache_dir=/proc/bionn-none",
    )
    assert failed.returncode == 1, failed.stdout[-2000:] + failed.stderr[-3000:]
    [failed_trial] = read_search(failing).trials
    assert failed_trial.state == "failed", failed_trial


def test_best_yaml_names_each_config_group_choice_of_the_trial(tmp_path):
    """The trial's own group overrides replace the choices its worker's Hydra record holds (a searched
    group); an appended group (+group=option) is appended again; hparams_search, hydra/* and empty
    optional groups are left out."""
    choices = {"hparams_search": "smoke", "debug": None, "model": "TR", "dataset": "dtest", "extra": "x"}
    choices["hydra/launcher"] = "local"
    run = RunFolder(tmp_path)
    run.write_hydra({"hydra.yaml": OmegaConf.to_yaml({"hydra": {"runtime": {"choices": choices}}})})
    overrides = ["hparams_search=smoke", "model=P", "+extra=x", "training.epochs=3"]
    assert group_overrides(tmp_path, overrides) == [
        {"override model": "P"},
        {"override dataset": "dtest"},
        {"extra": "x"},
    ]
