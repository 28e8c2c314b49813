"""The benchmark scripts run and print their documented JSON (figures: BENCHMARKS.md, not tests)."""

from __future__ import annotations

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
        *("--acc-samples", "1024", "--input-steps", "3"),
    )
    for model in ("P", "TR"):
        speeds = result["options"][model]["samples_per_s"]
        assert {"float32", "xla", "steps_per_execution_8"} <= set(speeds) and min(speeds.values()) > 0
        assert result["options"][model]["ratio_to_float32"]["float32"] == 1.0
    accuracy = result["accuracy"]["results"]
    assert accuracy["float32"]["difference_to_float32"] == 0 and -1 < accuracy["float32"]["r2_mean"] <= 1
    assert result["input"]["input_bound_ratio"] == pytest.approx(
        result["input"]["samples_per_s_in_memory"] / result["input"]["samples_per_s_streamed"], rel=0.01
    )


def test_bench_accuracy_reports_each_label_beside_ridge_ceiling_and_seed_models(tmp_path):
    result = last_json(
        "scripts/bench_accuracy.py",
        *("--labels", "seed_label,scale_free", "--seed-models", "P", "--epochs", "2"),
        *("--train-samples", "1024", "--val-samples", "512", "--test-samples", "512"),
        *("--seed-train-samples", "256", "--plot", str(tmp_path / "curves.png")),
    )
    for key, ceiling in (("seed_label", (0.5, 0.99)), ("scale_free", (1.0, 1.0))):
        res = result[key]
        assert res["best_model"] == "TR" and len(res["r2_per_output"]) == 12
        assert res["r2_mean"] == pytest.approx(sum(res["r2_per_output"]) / 12, abs=1e-3)
        assert ceiling[0] <= res["ceiling_r2_mean"] <= ceiling[1] and -1 < res["ridge_r2_mean"] < 1
        assert res["outputs_above_ridge"] == sum(
            m > r for m, r in zip(res["r2_per_output"], res["ridge_r2_per_output"], strict=True)
        )
        assert set(res["seed_models"]) == {"P"}
        assert [point[0] for point in res["models"]["TR"]["curve"]] == [2048]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
