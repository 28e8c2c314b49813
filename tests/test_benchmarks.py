"""The benchmark scripts run and print their documented JSON (figures: BENCHMARKS.md, not tests)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def last_json(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, *args, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_bench_datagen_reports_speed_and_error():
    result = last_json("scripts/bench_datagen.py", "--seconds", "0.3", "--error-samples", "3")
    assert result["samples_per_s"] > 0 and result["reference_samples_per_s"] > 0
    assert result["speedup"] == pytest.approx(
        result["samples_per_s"] / result["reference_samples_per_s"], rel=0.01
    )
    assert 0 < result["max_abs_error"] <= 1e-8


def test_bench_train_reports_each_option_per_model_and_the_precision_accuracy():
    result = last_json(
        "scripts/bench_train.py",
        *("--models", "P,TR", "--rounds", "1", "--scale", "0.05"),
        *("--acc-samples", "1024", "--input-steps", "3", "--backends", ""),
    )
    for model in ("P", "TR"):
        speeds = result["options"][model]["samples_per_s"]
        assert {"float32", "xla", "steps_per_execution_8"} <= set(speeds) and min(speeds.values()) > 0
        ratios = result["options"][model]["ratio_to_float32"]
        assert set(ratios) == set(speeds)
        for name in speeds:  # one round: the ratio is that round's speed over float32's (to 3 decimals)
            assert ratios[name] == pytest.approx(speeds[name] / speeds["float32"], rel=0.01), name
    accuracy = result["accuracy"]["results"]
    assert "float32" in accuracy and -1 < accuracy["float32"]["r2_mean"] <= 1
    for res in accuracy.values():  # every precision this CPU runs, against float32's figure
        difference = res["r2_mean"] - accuracy["float32"]["r2_mean"]
        assert res["difference_to_float32"] == pytest.approx(difference, abs=1e-4)
        assert res["within_tolerance"] == (abs(res["difference_to_float32"]) <= 0.01)
    assert result["input"]["input_bound_ratio"] == pytest.approx(
        result["input"]["samples_per_s_in_memory"] / result["input"]["samples_per_s_streamed"], rel=0.01
    )


# Three trainings and four ceiling processes (about 70 s); per commit, test_jax.py trains on jax end to end
# and test_bench_train_reports_each_option_per_model_and_the_precision_accuracy runs the other parts.
@pytest.mark.full
def test_bench_train_reports_each_backend_end_to_end_against_its_ceilings_and_the_targets():
    result = last_json(
        "scripts/bench_train.py",
        *("--models", "", "--skip-accuracy", "--input-steps", "0", "--backends", "tensorflow,jax"),
        *("--backend-epochs", "1", "--ceiling-batches", "2", "--rounds", "1", "--train-overrides"),
        *("dataset.shape.n_samples=7200", "training.use_stats_of=1024"),
    )["backends"]
    for backend in ("tensorflow", "jax"):
        res = result[backend]
        assert res["backend"] == backend and backend in res["versions"]
        assert res["in_memory_samples_per_s"] > 0 and res["resident_samples_per_s"] > 0
        run = res["end_to_end"]
        assert run["epochs"] == 1 and run["train_samples"] == 6000  # the training split of 7,200 samples
        assert run["samples_per_s"] == pytest.approx(run["train_samples"] / run["fit_s"], rel=0.01)
        assert -1 < run["r2_mean"] <= 1 and f"runtime.backend={backend}" in run["command"]
    speeds = [result[b]["end_to_end"]["samples_per_s"] for b in ("jax", "tensorflow")]
    assert result["jax_to_tensorflow_end_to_end"] == pytest.approx(speeds[0] / speeds[1], rel=0.01)
    r2 = [result[b]["end_to_end"]["r2_mean"] for b in ("jax", "tensorflow")]
    assert result["r2_mean_difference"] == pytest.approx(abs(r2[0] - r2[1]), abs=1e-4)
    assert result["meets_speed_target"] == (result["jax_to_tensorflow_end_to_end"] >= 2)
    warm = result["jax"]["end_to_end_warm"]  # with the programs the first jax run compiled
    assert warm["train_samples"] == 6000 and result["jax_warm_r2_mean_equal"]
    assert result["jax_to_tensorflow_end_to_end_warm"] == pytest.approx(
        warm["samples_per_s"] / speeds[1], rel=0.01
    )
    assert result["meets_speed_target_warm"] == (result["jax_to_tensorflow_end_to_end_warm"] >= 2)
    assert result["meets_r2_target"] == (result["r2_mean_difference"] <= 0.01)


def test_bench_accuracy_reports_each_label_beside_ridge_ceiling_and_seed_models(tmp_path):
    result = last_json(
        "scripts/bench_accuracy.py",
        *("--labels", "seed_label,scale_free", "--models", "TR,P", "--seed-models", "P", "--epochs", "2"),
        *("--train-samples", "1024", "--val-samples", "512", "--test-samples", "512"),
        *("--seed-train-samples", "256", "--plot", str(tmp_path / "curves.png")),
    )
    for key, ceiling in (("seed_label", (0.5, 0.99)), ("scale_free", (1.0, 1.0))):
        res = result[key]
        assert set(res["models"]) == {"TR", "P"} and len(res["r2_per_output"]) == 12
        best = max(res["models"], key=lambda m: res["models"][m]["r2_mean"])  # two candidates
        assert res["best_model"] == best and res["r2_mean"] == res["models"][best]["r2_mean"]
        assert res["r2_mean"] == pytest.approx(sum(res["r2_per_output"]) / 12, abs=1e-3)
        assert ceiling[0] <= res["ceiling_r2_mean"] <= ceiling[1] and -1 < res["ridge_r2_mean"] < 1
        assert res["outputs_above_ridge"] == sum(
            m > r for m, r in zip(res["r2_per_output"], res["ridge_r2_per_output"], strict=True)
        )
        assert set(res["seed_models"]) == {"P"}
        assert [point[0] for point in res["models"]["TR"]["curve"]] == [2048]
        assert res["ceiling_r2_mean"] == pytest.approx(sum(res["ceiling_r2_per_output"]) / 12, abs=1e-4)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.full  # four trainings and two searches; the search itself is tested per commit elsewhere
def test_bench_search_reports_idle_worker_seconds_of_async_and_batch_and_the_best_r2():
    result = last_json(
        "scripts/bench_search.py",
        *("--trials", "2", "--workers", "2", "--epochs", "1", "--seed-models", "P"),
        *("--train-samples", "1024", "--val-samples", "1024", "--test-samples", "1024"),
    )
    workers = result["workers"]
    for run in ("async", "batch"):
        makespan, busy, idle = (result[f"{run}_{key}"] for key in ("makespan_s", "busy_s", "idle_s"))
        assert 0 < busy <= result[f"{run}_run_s"] and 0 <= result[f"{run}_idle_fraction"] <= 1
        # idle, makespan and busy are each rounded to 0.1 s (by at most 0.05): idle, busy and each
        # worker's makespan add up to (2 + workers) * 0.05 at worst; 1e-9 for the floats' own rounding.
        assert idle == pytest.approx(workers * makespan - busy, abs=(2 + workers) * 0.05 + 1e-9)
        # (idle and makespan are printed to 0.1 s: over a makespan of seconds that moves the ratio ~0.005)
        assert result[f"{run}_idle_fraction"] == pytest.approx(idle / (workers * makespan), abs=0.01)
    trials = result["search_trials"]
    assert [t["number"] for t in trials] == [0, 1] and len(result["batch_busy_per_trial_s"]) == 2
    # busy_s rounded to 0.1 s, each trial's to 1 ms
    assert result["async_busy_s"] == pytest.approx(sum(t["busy_s"] for t in trials), abs=0.05 + 2 * 5e-4)
    best = max(trials, key=lambda t: t["val_r2_mean"])
    assert result["search_best_trial"] == best["number"]
    assert result["search_best_r2_mean"] == best["test_r2_mean"] and -1 < best["test_r2_mean"] <= 1
    assert set(result["seed_models"]) == {"P"} and result["seed_best_model"] == "P"
    assert result["seed_best_r2_mean"] == result["seed_models"]["P"]["test_r2_mean"]
    assert result["per_trial_budget"]["train_samples"] == 1024
    assert result["wall_time_s"] >= result["async_makespan_s"] + result["batch_makespan_s"]
    # The workers' window lies inside the whole search command (the sweeper's checks and report outside it).
    assert 0 < result["async_makespan_s"] <= result["async_command_s"]


def bench_accuracy_module():
    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "scripts" / "bench_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_samples_axis_fit_recovers_a_known_curve_and_the_samples_it_predicts_for_a_target():
    bench = bench_accuracy_module()
    points = [
        {"samples": n, "r2_mean": 0.95 - 0.04 * (n / 1e6) ** -0.5} for n in (2e5, 4e5, 8e5, 1.6e6, 3.2e6)
    ]
    fit = bench.fit_curve(points, 0.93)
    assert fit["a"] == pytest.approx(0.95, abs=1e-4) and fit["c"] == pytest.approx(0.5, abs=1e-3)
    assert fit["samples_for_target"] == pytest.approx(4e6, rel=0.01)  # 0.04 n^-0.5 = 0.02 at n = 4 million
    assert bench.fit_curve(points, 0.96)["samples_for_target"] is None  # above the asymptote: never


# Three trainings through train.py on jax and a ridge fit (about 60 s); per commit, the fit itself above.
@pytest.mark.full
def test_bench_accuracy_samples_axis_trains_each_point_once_and_writes_the_csv_and_figure(tmp_path):
    args = (
        *(
            "scripts/bench_accuracy.py",
            "--samples-axis",
            "--labels",
            "scale_free",
            "--points",
            "6000,12000,18000",
        ),
        *(
            "--runs",
            str(tmp_path / "runs"),
            "--csv",
            str(tmp_path / "axis.csv"),
            "--plot",
            str(tmp_path / "axis.png"),
        ),
        *("--train-overrides", "dataset.shape.n_samples=7200", "training.use_stats_of=1024"),
        f"runtime.stats_cache_dir={tmp_path / 'cache'}",
    )
    res = last_json(*args)["scale_free"]
    assert res["experiment"] == "TR_relative_long"
    assert [(p["samples"], p["epochs"], p["reused"]) for p in res["points"]] == [
        (6000, 1, False),
        (12000, 2, False),
        (18000, 3, False),
    ]
    rows = (tmp_path / "axis.csv").read_text().splitlines()
    assert rows[0].startswith("label,experiment,samples,epochs,test_r2_mean,fitted_r2_mean")
    assert [r.split(",")[2] for r in rows[1:]] == ["6000", "12000", "18000"]
    assert res["largest_outputs_above_ridge"] == sum(
        m > r for m, r in zip(res["points"][-1]["r2_per_output"], res["ridge_r2_per_output"], strict=True)
    )
    assert (tmp_path / "axis.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = last_json(*args)["scale_free"]  # the run folders are read, not trained again
    assert [p["reused"] for p in again["points"]] == [True] * 3 and again["fit"] == res["fit"]
