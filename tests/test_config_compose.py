"""Real Hydra composition of conf/: shapes, experiments vs the seed TOML, and every bad config."""

from __future__ import annotations

import re
import tomllib

import pytest
from conftest import ROOT, composed
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from bionn.config.checks import check_run
from bionn.config.errors import ConfigError

SEED = ROOT / "examples"  # the seed configurations, in the older TOML format


def test_default_composition_has_the_documented_shape():
    cfg = composed()
    assert cfg.model.name == "E" and cfg.dataset.name == "dtest" and cfg.training.name == "default"
    assert cfg.model.layers[0].type == "Conv2D" and list(cfg.model.layers[0].kernel_size) == [3, 1]
    assert set(cfg.dataset.parameters) >= {
        "k1_min",
        "k3_max",
        "E0_min",
        "S0_max",
        "spectra_min",
        "amplitude_max",
    }
    assert set(cfg.dataset.shape) >= {
        "seed",
        "n_samples",
        "n_shards",
        "batch_size",
        "shuffle_buffer_size",
        "splits",
    }
    assert set(cfg.training.compile) >= {"optimizer", "loss", "metrics", "clipvalue"}
    assert cfg.training.compile.clipvalue == 1.0
    check_run(cfg)


@pytest.mark.parametrize("name", ["A", "E", "P", "P2"])
def test_experiment_pins_every_value_of_the_seed_toml(name):
    configs = tomllib.loads((SEED / "configurations.toml").read_text())
    datasets = tomllib.loads((SEED / "data.toml").read_text())
    seed = configs[name]
    cfg = composed(f"experiment={name}")
    assert OmegaConf.to_container(cfg.model.layers) == seed["structure"]["layers"]
    for key, value in seed["compile"].items():
        assert OmegaConf.to_container(cfg.training.compile)[key] == value
    assert cfg.training.epochs == seed["training"]["epochs"]
    assert cfg.training.save_interval == seed["training"]["save_interval"]
    assert cfg.training.use_stats_of == seed["dataset"]["use_stats_of"]
    data = datasets[seed["dataset"]["training"]]
    assert cfg.dataset.name == seed["dataset"]["training"]
    for key, value in data["parameters"].items():
        assert cfg.dataset.parameters[key] == value
    for key, value in data["shape"].items():
        assert OmegaConf.to_container(cfg.dataset.shape)[key] == value
    check_run(cfg)


def test_experiment_E_is_model_E_on_dbig_for_200_epochs():
    cfg = composed("experiment=E")
    assert (cfg.model.name, cfg.dataset.name, cfg.training.epochs) == ("E", "dbig", 200)
    assert (cfg.training.save_interval, cfg.training.use_stats_of) == (1, 300000)


def test_quick_debug_shrinks_any_run():
    cfg = composed("experiment=P2", "debug=quick")
    assert cfg.training.epochs == 1 and cfg.dataset.shape.n_samples <= 1000
    check_run(cfg)


@pytest.mark.parametrize(
    "override,error,message",
    [  # a command-line override is its own source: the message names it, the value, the key, what is allowed
        (
            "training.epochs=abc",
            ConfigCompositionException,
            r"override training\.epochs=abc .*Value 'abc' of type 'str' could not be converted to Integer"
            r".*full_key: training\.epochs",
        ),
        (
            "training.epochz=3",
            ConfigCompositionException,
            r"override 'training\.epochz'.*Key 'epochz' not in 'TrainingConfig'.*full_key: training\.epochz",
        ),
        (
            "dataset.shape.batch_size=1.5",
            ConfigCompositionException,
            r"Value '1\.5' of type 'float' could not be converted to Integer"
            r".*full_key: dataset\.shape\.batch_size",
        ),
        (
            "model=Z",
            MissingConfigException,
            r"Could not find 'model/Z'.*options in 'model':\s+A\s+E\s+P\s+P2\s",
        ),
        (
            "logger=wandb",
            MissingConfigException,
            r"Could not find 'logger/wandb'.*options in 'logger':\s+csv\s+mlflow\s+none\s+tensorboard\s",
        ),
        (
            "training.verbose=7",
            ConfigCompositionException,
            r"Invalid value '7', expected one of \[silent, bar, epoch, auto\].*full_key: training\.verbose",
        ),
        (
            "runtime.on_config_change=delete",
            ConfigCompositionException,
            r"Invalid value 'delete'.*refuse, move_aside.*full_key: runtime\.on_config_change",
        ),
        (
            "runtime.backend=torch",
            ConfigCompositionException,
            r"Invalid value 'torch', expected one of \[tensorflow, jax\].*full_key: runtime\.backend",
        ),
    ],
)
def test_hydra_rejects_types_and_unknown_keys(override, error, message):
    with pytest.raises(error) as err:
        composed(override)
    chain = [str(err.value), str(err.value.__cause__ or "")]
    assert re.search(message, " ".join(chain).replace("\n", " ")), chain


@pytest.mark.parametrize(
    "override,message",
    [
        ("+training.foo=1", r"unknown config key\(s\): training\.foo \(allowed there: name, compile, epochs"),
        ("+foo=1", r"unknown config key\(s\): foo \(allowed there: model, dataset, training, runtime, log"),
        ("training.epochs=0", r"override training\.epochs=0: training\.epochs = 0 is invalid: must be >= 1"),
        ("training.compile.learning_rate=-1", r"training\.compile\.learning_rate = -1\.0"),
        ("training.compile.clipvalue=0", r"training\.compile\.clipvalue = 0\.0 .*or null"),
        (
            "dataset.parameters.k1_min=9",
            r"override dataset\.parameters\.k1_min=9: dataset\.parameters\.k1_min = 9\.0",
        ),
        ("runtime.cpu_replicas=0", r"runtime\.cpu_replicas = 0"),
        (
            "logger.mlflow.tracking_uri=localhost:5000",
            r"override logger\.mlflow\.tracking_uri=localhost:5000: .* is invalid: allowed: null .*http\(s\)://",
        ),
        ("logger.mlflow.tracking_uri=http://:5000", r"needs a host and a valid port"),
        ("logger.mlflow.tracking_uri=sqlite://mlflow.db", r"needs three slashes and a path"),
        ("logger.mlflow.timeout_s=0", r"logger\.mlflow\.timeout_s = 0\.0 is invalid: must be > 0"),
    ],
)
def test_semantic_checks_name_key_value_and_allowed(override, message):
    cfg = composed(*(["logger=mlflow"] if override.startswith("logger.") else []), override, with_hydra=True)
    with pytest.raises(ConfigError, match=message):
        check_run(cfg)
