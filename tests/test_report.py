"""Sweep report: real multiruns with a failing job (basic and submitit_local launchers),
then bionn-report on partial folders made from them."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT
from omegaconf import OmegaConf

from bionn import report
from bionn.baseline import cached_baseline

# Job 1 fails at the config check (before any training); jobs 0 and 2 train one quick epoch.
SWEEP = ["model=P", "debug=quick", "training.compile.learning_rate=0.001,-1,0.002"]
FAILURE = "training.compile.learning_rate = -1.0 is invalid"
SOURCE = "the command-line override training.compile.learning_rate=-1"


def multirun(*overrides: str, cache: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", "-m", *overrides, f"runtime.stats_cache_dir={cache}"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)


def reopen(run: Path, new: bool = False, **fields) -> None:
    """Edit a finished job's attempts.json as a job in another state leaves it (new: a further attempt)."""
    record = json.loads((run / "attempts.json").read_text())
    if new:
        record["attempts"].append({**record["attempts"][-1], "number": len(record["attempts"]) + 1})
    record["attempts"][-1].update(fields)
    (run / "attempts.json").write_text(json.dumps(record))


def summary_rows(folder: Path) -> dict[str, dict]:
    with open(folder / "summary.csv", newline="") as handle:
        return {row["job"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("sweep")
    done = multirun(*SWEEP, f"hydra.sweep.dir={tmp / 'sweep'}", cache=tmp / "cache")
    return tmp / "sweep", done


@pytest.mark.slow
def test_sweep_with_a_failing_job_finishes_the_others_prints_the_table_and_exits_nonzero(sweep):
    folder, done = sweep
    assert done.returncode == 1, done.stderr[-3000:]
    assert "├── dataset" in done.stdout and "learning_rate: 0.002" in done.stdout  # config tree per job
    statuses = {job: json.loads((folder / job / "final_results.json").read_text())["status"] for job in "012"}
    assert statuses == {"0": "completed", "1": "failed", "2": "completed"}  # job 2 ran after the failure
    table = done.stdout[done.stdout.index("# Sweep summary") :]
    assert "3 job(s): 2 completed, 1 failed" in table
    assert "Overrides common to all jobs: `model=P debug=quick" in table
    for job, lr, status in (("0", "0.001", "completed"), ("1", "-1", "failed"), ("2", "0.002", "completed")):
        assert any(
            line.startswith(f"| {job} ") and f"learning_rate={lr} " in line and f"| {status} " in line
            for line in table.splitlines()
        )
    assert "test r_squared" in table and "## Failed jobs" in table and FAILURE in table
    assert f"bionn: job 1 failed: {SOURCE}: {FAILURE}" in done.stderr
    assert "1 of 3 job(s) failed" in done.stderr

    rows = summary_rows(folder)
    assert [rows[j]["status"] for j in "012"] == ["completed", "failed", "completed"]
    assert rows["0"]["overrides"] == "model=P debug=quick training.compile.learning_rate=0.001 " + (
        f"runtime.stats_cache_dir={folder.parent / 'cache'}"
    )
    final = json.loads((folder / "0" / "final_results.json").read_text())
    assert float(rows["0"]["test_r_squared"]) == pytest.approx(final["evaluation"]["test"]["r_squared"])
    assert float(rows["0"]["best_val_loss"]) == pytest.approx(final["best_val_loss"])
    assert rows["0"]["epochs"] == "1" and float(rows["0"]["training_time_s"]) > 0
    assert FAILURE in rows["1"]["error"] and rows["1"]["test_loss"] == ""
    assert (folder / "summary.md").read_text().strip() == table.split("\nbionn-report: wrote")[0].strip()
    assert (folder / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_report_reads_partial_folders_and_says_what_it_could_not_read(sweep, tmp_path, capsys):
    folder = tmp_path / "partial"
    shutil.copytree(sweep[0], folder)
    for name in report.SUMMARY_FILES:
        (folder / name).unlink()
    # 0: still running (its final results not written yet); its test metrics come from results_epoch_1.json
    (folder / "0" / "final_results.json").unlink()
    reopen(folder / "0", outcome=None, pid=os.getpid())
    # 2: preempted (SIGUSR2) after a requeue, waiting to run again; 3: corrupt final_results.json, history.csv
    shutil.copytree(folder / "2", folder / "3")
    (folder / "2" / "final_results.json").unlink()
    reopen(folder / "2", outcome="interrupted", reason="ended without a record (killed)")
    reopen(folder / "2", outcome="interrupted", reason="interrupted by SIGUSR2", new=True)
    (folder / "3" / "final_results.json").write_text('{"status": "compl')
    (folder / "3" / "history.csv").write_text("epoch,loss\n0,1.0,2.0\n")
    # 1: failed, and its overrides file is gone; 4: Hydra made the folder, nothing else yet
    (folder / "1" / ".hydra" / "overrides.yaml").unlink()
    (folder / "4").mkdir()

    assert report.main([str(folder)]) == 0
    printed = capsys.readouterr().out
    rows = summary_rows(folder)
    assert list(rows) == ["0", "1", "2", "3"]
    assert {job: row["status"] for job, row in rows.items()} == {
        "0": "running",
        "1": "failed",
        "2": "interrupted",
        "3": "unknown",
    }
    assert (rows["2"]["restarts"], rows["2"]["interruption"]) == ("1", "interrupted by SIGUSR2")
    assert rows["0"]["epochs"] == "1" and rows["0"]["best_val_loss"]
    periodic = json.loads((folder / "0" / "results_epoch_1.json").read_text())["evaluation"]["test"]
    assert float(rows["0"]["test_r_squared"]) == pytest.approx(periodic["r_squared"])
    assert "from their latest results_epoch_1.json" in printed
    could_not = printed[printed.index("## Could not read") :]
    assert "- 1: .hydra/overrides.yaml: missing" in could_not
    assert "- 3: final_results.json: not valid JSON (Unterminated string" in could_not
    assert "- 3: history.csv: unreadable (row 1 has more cells than the header)" in could_not
    assert "| interrupted (1 restart(s)) |" in printed
    assert "- 2: interrupted by SIGUSR2; 1 restart(s) so far" in printed
    assert (folder / "summary.png").is_file() and (folder / "summary.md").is_file()

    # Once the ridge baseline of the sweep's dataset is cached, the report shows it as a row.
    assert not any(job.status == "baseline" for job in report.collect(folder))
    quick = OmegaConf.load(folder / "0" / ".hydra" / "config.yaml")
    ridge = cached_baseline(quick.dataset, quick.runtime.stats_cache_dir, compute=True)
    jobs, text = report.write_report(folder)
    assert [(j.job, j.test_r2()) for j in jobs if j.status == "baseline"] == [
        ("baseline (dtest)", ("r2_mean", ridge["r2_mean"]))
    ]
    assert "baseline (dtest)" in text and "baseline (dtest)" in summary_rows(folder)

    # A single run folder is a report of one row.
    assert report.main([str(folder / "0"), "--quiet"]) == 0
    assert list(summary_rows(folder / "0")) == ["0", "baseline (dtest)"]


def test_report_of_a_missing_folder_is_a_clear_error_and_the_console_script_is_declared(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'} is not a folder" in capsys.readouterr().err
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["bionn-report"] == "bionn.report:main"


def test_list_metrics_are_expanded_in_csv_and_r2_mean_is_preferred(tmp_path):
    run = tmp_path / "run"
    test = {"loss": 0.5, "r_squared": 0.9, "r2_mean": 0.7, "r2_per_output": [0.6, 0.8]}
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- model=E\n")
    (run / "final_results.json").write_text(
        json.dumps({"status": "completed", "epochs_completed": 3, "evaluation": {"test": test}})
    )
    jobs, text = report.write_report(run)
    assert jobs[0].test_r2() == ("r2_mean", 0.7)
    assert "r2_per_output" not in text and "test r2_mean" in text
    row = summary_rows(run)["run"]
    assert (row["test_r2_per_output_0"], row["test_r2_per_output_1"], row["test_r2_mean"]) == (
        "0.6",
        "0.8",
        "0.7",
    )


@pytest.mark.slow
def test_submitit_local_sweep_with_a_failing_job_exits_nonzero_after_the_others(tmp_path):
    folder = tmp_path / "sweep"
    done = multirun(
        "hydra/launcher=submitit_local",
        "model=P",
        "debug=quick",
        "training.compile.learning_rate=-1,0.001",
        f"hydra.sweep.dir={folder}",
        cache=tmp_path / "cache",
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert json.loads((folder / "1" / "final_results.json").read_text())["status"] == "completed"
    assert "2 job(s): 1 failed, 1 completed" in done.stdout  # printed by the launcher process
    assert f"bionn: job 0 failed: {SOURCE}: {FAILURE}" in done.stderr
    assert [r["status"] for r in summary_rows(folder).values()] == ["failed", "completed"]


def _finished_run(run: Path, overrides: list[str], status: str = "completed", **test) -> None:
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    final = {"status": status, "epochs_completed": 2, "best_val_loss": test.pop("val", None)}
    (run / "final_results.json").write_text(json.dumps({**final, "evaluation": {"test": test}}))


def test_runs_differing_only_in_the_seed_are_grouped_with_mean_and_std(tmp_path):
    sweep = tmp_path / "sweep"
    for job, seed, r2 in (("0", 0, 0.6), ("1", 1, 0.7), ("2", 2, 0.8)):
        _finished_run(sweep / job, ["model=E", f"runtime.seed={seed}"], val=r2 / 2, r2_mean=r2, loss=1 - r2)
    _finished_run(sweep / "3", ["model=P", "runtime.seed=0"], r2_mean=0.5, loss=0.5)
    _finished_run(sweep / "4", ["model=P", "runtime.seed=1"], status="failed")  # not a repeat
    _finished_run(sweep / "5", ["model=A"], r2_mean=0.1, loss=0.9)  # no seed: not a repeat

    _, text = report.write_report(sweep, baseline=None)
    section = text[text.index("## Repeats") :]
    assert "| model=E   | 3 | 0 1 2 |" in section and "model=P" not in section
    assert "0.7 +- 0.1" in section and "0.35 +- 0.05" in section  # r2_mean, best_val_loss
    with open(sweep / "repeats.csv", newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert (row["overrides"], row["n"], row["seeds"], row["jobs"]) == ("model=E", "3", "0 1 2", "0 1 2")
    assert float(row["test_r2_mean_mean"]) == pytest.approx(0.7)
    assert float(row["test_r2_mean_std"]) == pytest.approx(0.1)
    assert float(row["test_loss_std"]) == pytest.approx(0.1)
    assert (sweep / "repeats.png").read_bytes().startswith(b"\x89PNG")
    assert report.cli.written_files(sweep) == (
        "summary.csv",
        "summary.md",
        "summary.png",
        "repeats.csv",
        "repeats.png",
    )

    shutil.rmtree(sweep / "2")
    shutil.rmtree(sweep / "1")  # one seed left: no group, and the stale files go
    _, text = report.write_report(sweep, baseline=None)
    assert "## Repeats" not in text and not (sweep / "repeats.csv").exists()


def test_the_report_reaches_the_data_engine_only_in_ridge_baseline_and_no_plugin():
    """bionn.report loads Numba or TensorFlow in one named place (read.ridge_baseline, lazily) and
    imports no hydra_plugins module."""
    import ast

    banned = ("bionn.baseline", "bionn.data", "bionn.nn", "bionn.train", "numba", "tensorflow", "keras")
    found = []
    for path in sorted((ROOT / "bionn" / "report").glob("*.py")):
        tree = ast.parse(path.read_text())
        places = [("", tree)] + [(n.name, n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        for where, place in places:
            for node in ast.walk(place):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
                found += [(path.name, where, n) for n in names if n.startswith((*banned, "hydra_plugins"))]
    # each import inside a function is found twice: in the module and in the function
    assert sorted(found) == [
        ("read.py", "", "bionn.baseline"),
        ("read.py", "ridge_baseline", "bionn.baseline"),
    ]
