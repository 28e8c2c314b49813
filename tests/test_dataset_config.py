"""Bad dataset configs fail before any work, naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest
from conftest import ROOT, dataset_config

from bionn.config.dataset import load_dataset_config, resolve_dataset
from bionn.config.errors import ConfigError
from bionn.data.dataset import KineticsDataset

BAD = [
    ({"parameters.k1_min": 0.5}, r"dataset\.parameters\.k1_min = 0\.5 .*<= parameters\.k1_max = 0\.05"),
    ({"parameters.amplitude_min": 0.9}, r"parameters\.amplitude_min = 0\.9 .*<= parameters\.amplitude_max"),
    ({"parameters.k2_min": 0.0}, r"parameters\.k2_min = 0\.0 .*must be > 0"),
    ({"parameters.E0_min": -0.1}, r"parameters\.E0_min = -0\.1 .*must be > 0"),
    ({"parameters.S0_min": 0.0}, r"parameters\.S0_min = 0\.0"),
    ({"shape.splits": [0.7, 0.2, 0.2]}, r"shape\.splits = \[0\.7, 0\.2, 0\.2\] .*summing to 1"),
    ({"shape.splits": [0.5, 0.5]}, r"shape\.splits .*three fractions"),
    ({"shape.batch_size": 600}, r"shape\.batch_size = 600 .*smallest split \(val: 500 samples\)"),
    ({"shape.n_samples": 0}, r"shape\.n_samples = 0 .*>= 1"),
    ({"shape.n_samples": 2}, r"shape\.splits .*split of 2 samples is empty"),
    ({"simulation.n_components": 4}, r"simulation\.n_components = 4 .*1\.\.3 \(rank of D\)"),
    ({"simulation.t_stop": 0.0}, r"simulation\.t_stop = 0\.0 .*> simulation\.t_start"),
    ({"shape.n_shards": 0}, r"shape\.n_shards = 0"),
]


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_config_is_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        KineticsDataset(dataset_config(**overrides), source="conf/dataset/x.yaml")


def test_error_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nparameters:\n  k1_min: 1.0\n")
    with pytest.raises(ConfigError, match=rf"{path}: dataset\.parameters\.k1_min = 1\.0"):
        load_dataset_config(path)


def test_unknown_key_and_wrong_type_name_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: t\nshape:\n  n_sample: 10\n")
    with pytest.raises(
        ConfigError, match=rf"{path}: dataset\.shape\.n_sample: .*allowed keys: seed, n_samples"
    ):
        load_dataset_config(path)
    path.write_text("name: t\nshape:\n  n_samples: many\n")
    with pytest.raises(ConfigError, match=rf"{path}: dataset\.shape\.n_samples: Value .many."):
        load_dataset_config(path)


def test_unknown_dataset_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown dataset 'dhuge': allowed dbig, dmedium, dsmall, dtest"):
        resolve_dataset("dhuge", str(ROOT / "conf"))


@pytest.mark.parametrize("name", ["dtest", "dsmall", "dmedium", "dbig"])
def test_shipped_datasets_are_valid(name):
    ds = KineticsDataset(resolve_dataset(name, str(ROOT / "conf")))
    assert ds.name == name
