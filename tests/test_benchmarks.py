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
