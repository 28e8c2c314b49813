"""Normalisation statistics (cache, concurrency) and the tf.data pipeline."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, make_dataset

from bionn.data.stats import (
    STD_EPSILON,
    compute_statistics,
    load_or_compute_statistics,
    statistics_key,
)

SMALL = {
    "name": "tiny",
    "shape.n_samples": 400,
    "shape.batch_size": 16,
    "shape.n_shards": 4,
    "shape.shuffle_buffer_size": 50,
    "shape.splits": [0.5, 0.25, 0.25],
}


def test_statistics_are_those_of_the_first_training_samples(small_dataset):
    stats = compute_statistics(small_dataset, 150, progress=False)
    s = small_dataset.generate(np.arange(150))
    np.testing.assert_allclose(stats.feature_mean, s.features.mean(0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(stats.feature_std, s.features.std(0), rtol=1e-10)
    np.testing.assert_allclose(stats.label_std, s.labels.std(0), rtol=1e-10)


def test_key_hashes_exactly_the_sample_defining_inputs():
    base = make_dataset(**SMALL)
    key = statistics_key(base, 100)
    same = [
        {"shape.batch_size": 8},
        {"shape.n_shards": 2},
        {"shape.shuffle_buffer_size": 3},
        {"shape.n_samples": 800},
        {"name": "renamed"},
    ]
    for change in same:
        assert statistics_key(make_dataset(**{**SMALL, **change}), 100) == key, change
    different = [
        {"shape.seed": 1},
        {"parameters.k1_max": 0.06},
        {"simulation.mechanism": "legacy"},
        {"simulation.n_times": 300},
        {"simulation.svd_sign": "max_abs_positive"},
    ]
    for change in different:
        assert statistics_key(make_dataset(**{**SMALL, **change}), 100) != key, change
    assert statistics_key(base, 101) != key


def test_cache_is_reused(tmp_path, small_dataset):
    first = load_or_compute_statistics(small_dataset, 120, tmp_path, progress=False)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and first.count == 120
    written = (files[0].stat().st_ino, files[0].read_bytes())  # a rewrite is atomic: a new inode
    again = load_or_compute_statistics(small_dataset, 120, tmp_path, progress=False)
    assert (files[0].stat().st_ino, files[0].read_bytes()) == written
    np.testing.assert_array_equal(again.feature_std, first.feature_std)
    # more than the training split holds is capped at the split
    assert load_or_compute_statistics(small_dataset, 10**6, tmp_path, progress=False).count == 200


def test_corrupt_cache_file_is_recomputed(tmp_path, small_dataset):
    stats = load_or_compute_statistics(small_dataset, 100, tmp_path, progress=False)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"not a zip")
    again = load_or_compute_statistics(small_dataset, 100, tmp_path, progress=False)
    np.testing.assert_array_equal(again.feature_mean, stats.feature_mean)


@pytest.mark.slow
def test_four_processes_computing_the_same_cache(tmp_path):
    # Each process says on stderr whether it computed (the real compute_statistics, wrapped to report a call).
    code = (
        "import sys; sys.path.insert(0, 'tests'); from conftest import make_dataset;"
        "import bionn.data.stats as st; compute = st.compute_statistics;"
        "st.compute_statistics = lambda *a, **k: (print('computed', file=sys.stderr), compute(*a, **k))[1];"
        f"ds = make_dataset(**{{'shape.n_samples': 40000}});"
        f"s = st.load_or_compute_statistics(ds, 30000, {str(tmp_path)!r}, progress=False);"
        "print(repr(float(s.feature_std.sum())))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    done = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in done]
    outputs = [out.strip() for out, _ in done]
    assert len(set(outputs)) == 1, outputs
    assert sum(err.count("computed") for _, err in done) == 1  # one computed, three waited and read it
    files = sorted(os.listdir(tmp_path))  # the cache file and its lock; no temporary .tmp-* file left behind
    assert len(files) == 2 and files[0].startswith(".") and files[0].endswith(".lock"), files
    assert files[1].endswith(".npz"), files
    with np.load(tmp_path / files[1]) as data:
        assert int(data["count"]) == 30000
        assert repr(float(data["feature_std"].sum())) == outputs[0]


def test_pipeline_batches_are_the_normalised_samples(small_dataset):
    import bionn.backend.tensorflow as backend
    import bionn.data.pipeline as pipeline

    stats = compute_statistics(small_dataset, 200, progress=False)
    clock = pipeline.EpochClock(epoch=2)
    train = backend.make_dataset(pipeline.batch_source(small_dataset, "train", stats, clock, batch_size=24))
    assert int(train.cardinality()) == 9  # 200 samples: 8 full batches of 24 and one of 8
    batches = list(train.as_numpy_iterator())
    assert [len(f) for f, _ in batches] == [24] * 8 + [8]
    features = np.concatenate([f for f, _ in batches])
    labels = np.concatenate([lab for _, lab in batches])
    expected = small_dataset.generate(small_dataset.order("train", 2))
    want = (expected.features - stats.feature_mean) / (stats.feature_std + STD_EPSILON)
    np.testing.assert_allclose(features[..., 0], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(labels, expected.labels, rtol=1e-6, atol=1e-7)
    assert features.dtype == np.float32 and features.shape[1:] == (501, 3, 1)
    clock.epoch = 3  # the next epoch feeds the next order, from the same dataset object
    again = np.concatenate([lab for _, lab in train.as_numpy_iterator()])
    np.testing.assert_allclose(
        again, small_dataset.generate(small_dataset.order("train", 3)).labels, rtol=1e-6, atol=1e-7
    )


def test_pipeline_chunks_do_not_change_batches(small_dataset, monkeypatch):
    import bionn.backend.tensorflow as backend
    import bionn.data.pipeline as pipeline

    stats = compute_statistics(small_dataset, 200, progress=False)
    val = backend.make_dataset(pipeline.batch_source(small_dataset, "val", stats))
    reference = [lab for _, lab in val.as_numpy_iterator()]
    monkeypatch.setattr(pipeline, "CHUNK_SAMPLES", 48)
    chunked = backend.make_dataset(pipeline.batch_source(small_dataset, "val", stats))
    chunked = [lab for _, lab in chunked.as_numpy_iterator()]
    assert len(chunked) == len(reference) == 7
    for a, b in zip(chunked, reference, strict=False):
        np.testing.assert_array_equal(a, b)


def test_generate_cli_writes_the_documented_arrays(tmp_path):
    out = tmp_path / "val.npz"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bionn.generate",
            "--dataset",
            "dtest",
            "--split",
            "val",
            "--start",
            "10",
            "--count",
            "37",
            "--batch-size",
            "16",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    with np.load(out) as data:
        shapes = {key: data[key].shape for key in data.files}
        index, conc, labels = data["index"], data["concentrations"], data["labels"]
        d = conc[5] @ np.diag(data["amplitudes"][5]) @ data["spectra"][5].T  # D = C diag(a) S^T
        np.testing.assert_allclose(data["absorbance"][5], d, rtol=1e-12, atol=1e-15)
        k1, e0, time = data["k1"], data["E0"], data["time"]
    assert shapes == {
        "index": (37,),
        "k1": (37,),
        "k2": (37,),
        "k3": (37,),
        "E0": (37,),
        "S0": (37,),
        "spectra": (37, 4, 4),
        "amplitudes": (37, 4),
        "time": (501,),
        "concentrations": (37, 501, 4),
        "absorbance": (37, 501, 4),
        "features": (37, 501, 3, 1),
        "labels": (37, 12),
    }
    np.testing.assert_array_equal(index, np.arange(3510, 3547))  # val starts after 3500 train samples
    np.testing.assert_array_equal(time, np.arange(501.0))
    np.testing.assert_allclose(conc[:, 0, 0], e0)
    from bionn.config.dataset import resolve_dataset
    from bionn.data.dataset import KineticsDataset

    ds = KineticsDataset(resolve_dataset("dtest", str(ROOT / "conf")))
    np.testing.assert_array_equal(labels, ds.generate(index).labels)
    assert (k1 >= 0.01).all()


def test_generate_cli_rejects_bad_requests(tmp_path):
    out = tmp_path / "x.npz"
    for args, message in [
        (["--dataset", "nope", "--split", "val", "--count", "3"], "unknown dataset 'nope'"),
        (
            ["--dataset", "dtest", "--split", "val", "--start", "740", "--count", "20"],
            "outside the val split",
        ),
        (["--dataset", "dtest", "--split", "val", "--count", "0"], "--count = 0"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "bionn.generate", *args, "--out", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not out.exists()
