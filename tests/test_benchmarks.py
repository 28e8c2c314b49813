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


def test_bench_train_reports_input_bound_ratio():
    result = last_json("scripts/bench_train.py", "--steps", "3", "--dataset", "dtest")
    assert result["samples_per_s_streamed"] > 0 and result["samples_per_s_in_memory"] > 0
    assert result["input_bound_ratio"] == pytest.approx(
        result["samples_per_s_in_memory"] / result["samples_per_s_streamed"], rel=0.01
    )


def test_bench_accuracy_reports_per_output_r2_beside_ridge_and_ceiling():
    result = last_json(
        "scripts/bench_accuracy.py",
        *("--architectures", "P", "--epochs", "1"),
        *("--train-samples", "320", "--val-samples", "64", "--test-samples", "128"),
    )
    for name in ("P", "ridge", "ceiling"):
        per_output = result["results"][name]["r2_per_output"]
        assert len(per_output) == 12 and result["results"][name]["r2_mean"] == pytest.approx(
            sum(per_output) / 12, abs=1e-3
        )
    assert result["best"] == "P" and result["budget"]["epochs"] == {"P": 1}
    assert result["options"]["scale_labels"] is True and result["options"]["svd_sign"] == "first_positive"
    assert result["results"]["ceiling"]["r2_mean"] < 1
