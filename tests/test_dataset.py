"""Index addressing: splits, orders, reproducibility across batches, shards and processes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, make_dataset


def test_sample_is_independent_of_batch_and_kernel(small_dataset):
    ds = small_dataset
    whole = ds.generate(np.arange(200))
    for size in (1, 7, 16, 33):
        for lo in range(0, 200, size):
            part = ds.generate(np.arange(lo, min(200, lo + size)), parallel=size % 2 == 0)
            np.testing.assert_array_equal(part.features, whole.features[lo : lo + size])
            np.testing.assert_array_equal(part.labels, whole.labels[lo : lo + size])
    shuffled = np.random.default_rng(0).permutation(200)
    np.testing.assert_array_equal(ds.generate(shuffled).labels, whole.labels[shuffled])


def test_shape_keys_do_not_change_samples():
    a = make_dataset(**{"shape.n_shards": 1, "shape.batch_size": 8, "shape.shuffle_buffer_size": 1})
    b = make_dataset(**{"shape.n_shards": 50, "shape.batch_size": 100, "shape.shuffle_buffer_size": 999})
    idx = np.arange(0, 4000, 97)
    np.testing.assert_array_equal(a.generate(idx).features, b.generate(idx).features)
    c = make_dataset(**{"shape.seed": 43})
    assert not np.array_equal(a.generate(idx).features, c.generate(idx).features)


def test_same_bits_in_another_process(small_dataset, tmp_path):
    out = tmp_path / "other.npy"
    code = (
        "import numpy as np, sys; sys.path.insert(0, 'tests'); from conftest import make_dataset;"
        "ds = make_dataset(**{'name': 'tiny', 'shape.n_samples': 400, 'shape.batch_size': 16,"
        "'shape.n_shards': 4, 'shape.shuffle_buffer_size': 50, 'shape.splits': [0.5, 0.25, 0.25]});"
        f"np.save({str(out)!r}, ds.generate(np.arange(5, 45), parallel=False).features)"
    )
    subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "NUMBA_NUM_THREADS": "1"}
    )
    np.testing.assert_array_equal(np.load(out), small_dataset.generate(np.arange(5, 45)).features)


def test_splits_are_disjoint_and_cover_everything(small_dataset):
    ds = small_dataset
    seen = np.concatenate([ds.order(split, epoch=3) for split in ("train", "val", "test")])
    np.testing.assert_array_equal(np.sort(seen), np.arange(400))
    assert ds.splits == {"train": (0, 200), "val": (200, 300), "test": (300, 400)}


def test_training_order_is_a_seeded_permutation_per_epoch(small_dataset):
    ds = small_dataset
    e0, e1 = ds.order("train", 0), ds.order("train", 1)
    np.testing.assert_array_equal(np.sort(e0), np.arange(200))
    assert not np.array_equal(e0, e1)
    np.testing.assert_array_equal(
        e1,
        make_dataset(
            **{
                "name": "tiny",
                "shape.n_samples": 400,
                "shape.batch_size": 16,
                "shape.n_shards": 4,
                "shape.shuffle_buffer_size": 50,
                "shape.splits": [0.5, 0.25, 0.25],
            }
        ).order("train", 1),
    )
    np.testing.assert_array_equal(ds.order("val", 0), ds.order("val", 5))


def test_unshuffled_order_interleaves_shards():
    ds = make_dataset(
        **{
            "shape.n_samples": 100,
            "shape.splits": [0.6, 0.2, 0.2],
            "shape.n_shards": 3,
            "shape.shuffle_buffer_size": 1,
            "shape.batch_size": 4,
        }
    )
    np.testing.assert_array_equal(ds.order("train", 0)[:7], [0, 20, 40, 1, 21, 41, 2])


def test_shuffle_buffer_bounds_displacement():
    ds = make_dataset(
        **{
            "shape.n_samples": 2000,
            "shape.splits": [0.5, 0.25, 0.25],
            "shape.shuffle_buffer_size": 10,
            "shape.batch_size": 4,
        }
    )
    order = ds.order("train", 2)
    # an element can only leave the buffer after it entered: position >= index - buffer + 1
    assert (np.arange(1000) >= order - 9).all()


def test_fresh_training_samples_per_epoch():
    ds = make_dataset(**{"shape.fresh_train_each_epoch": True})
    assert ds.stream("train", 0) == 0 and ds.stream("train", 3) == 3 and ds.stream("val", 3) == 0
    a = ds.generate(np.arange(8), stream=ds.stream("train", 1))
    b = ds.generate(np.arange(8), stream=ds.stream("train", 2))
    assert not np.array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.features, ds.generate(np.arange(8), stream=1).features)
    assert make_dataset().stream("train", 3) == 0


@pytest.mark.parametrize("start,count", [(-1, 2), (0, 201), (199, 2)])
def test_positions_outside_split_are_rejected(small_dataset, start, count):
    with pytest.raises(ValueError, match="outside the train split"):
        small_dataset.positions_to_indices("train", start, count)
