"""Shared fixtures: dataset configs built through the real schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bionn.config.schema import DatasetConfig
from bionn.data.dataset import KineticsDataset

ROOT = Path(__file__).resolve().parents[1]


def committed_epoch(run_dir: Path) -> int:
    """The epoch a run folder would resume at (its backup's last commit); 0 before the first or when done."""
    try:
        return json.loads((run_dir / "backup" / "state.json").read_text())["epoch"]
    except FileNotFoundError:
        return 0


def dataset_config(**overrides):
    """A DatasetConfig with dotted-key overrides, e.g. dataset_config(**{"shape.n_samples": 10})."""
    cfg = OmegaConf.structured(DatasetConfig)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def make_dataset(**overrides) -> KineticsDataset:
    return KineticsDataset(dataset_config(**overrides))


@pytest.fixture
def small_dataset() -> KineticsDataset:
    return make_dataset(
        **{
            "name": "tiny",
            "shape.n_samples": 400,
            "shape.batch_size": 16,
            "shape.n_shards": 4,
            "shape.shuffle_buffer_size": 50,
            "shape.splits": [0.5, 0.25, 0.25],
        }
    )
