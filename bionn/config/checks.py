"""Semantic checks of a composed run config beyond its types (bionn.config.schema): training,
schedule and speed options, runtime, layers and the MLflow logger; errors name the file Hydra used."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from bionn.config.dataset import check_dataset
from bionn.config.errors import ConfigError
from bionn.config.layers import check_layers
from bionn.config.schema import Schedule, unknown_keys
from bionn.config.sources import source_of

# (key of training, its least value, what is allowed), checked in this order.
TRAINING_MINIMUMS = (
    ("epochs", 1, "must be >= 1"),
    ("save_interval", 0, "must be >= 0 (0 = no periodic checkpoints)"),
    ("use_stats_of", 1, "must be >= 1"),
    ("early_stopping_patience", 0, "must be >= 0 (0 = off)"),
)


def check_run(cfg: Any, hydra_cfg: Any | None = None) -> None:
    """Semantic checks of a composed run config beyond the types; errors name the file Hydra used
    for the group at fault (hydra_cfg: the composition's `hydra` node, by default the running job's)."""
    if hydra_cfg is None and isinstance(cfg, DictConfig) and "hydra" in cfg:
        hydra_cfg = cfg.hydra
    extra = [k for k in unknown_keys(cfg) if not k.startswith("hydra")]
    if extra:
        raise ConfigError(f"unknown config key(s): {'; '.join(extra)}")
    check_dataset(cfg.dataset, source=lambda key: source_of(f"dataset.{key}", hydra_cfg))
    t = cfg.training

    def fail(key: str, value: Any, allowed: str) -> None:
        source = source_of(f"training.{key}", hydra_cfg)
        raise ConfigError(f"{source}: training.{key} = {value!r} is invalid: {allowed}")

    for key, least, allowed in TRAINING_MINIMUMS:
        if getattr(t, key) < least:
            fail(key, getattr(t, key), allowed)
    if not t.compile.learning_rate > 0:
        fail("compile.learning_rate", t.compile.learning_rate, "must be > 0")
    if t.compile.clipvalue is not None and not t.compile.clipvalue > 0:
        fail("compile.clipvalue", t.compile.clipvalue, "must be > 0, or null for no clipping")
    _check_training_controls(cfg, fail)
    if cfg.runtime.cpu_replicas < 1:
        source = source_of("runtime.cpu_replicas", hydra_cfg)
        value = cfg.runtime.cpu_replicas
        raise ConfigError(f"{source}: runtime.cpu_replicas = {value!r} is invalid: must be >= 1")
    check_layers(cfg.model.layers, f"{source_of('model.layers', hydra_cfg)}: model.layers")
    mlflow = cfg.get("logger", {}).get("mlflow")
    if mlflow is not None:
        check_tracking(mlflow, lambda key: source_of(f"logger.mlflow.{key}", hydra_cfg))


TRACKING_SCHEMES = ("http", "https", "sqlite", "file")


def check_tracking(mlflow: Any, source: Callable[[str], str]) -> None:
    """logger.mlflow's values: a tracking URI MLflow can open (scheme, host, path) and a positive timeout."""
    from urllib.parse import urlsplit

    def fail(key: str, value: Any, allowed: str) -> None:
        raise ConfigError(f"{source(key)}: logger.mlflow.{key} = {value!r} is invalid: {allowed}")

    uri = mlflow.tracking_uri
    if uri is not None:
        parts = urlsplit(uri)
        allowed = (
            "allowed: null (a SQLite store in the sweep or run folder), http(s)://host:port (an MLflow "
            "server), sqlite:///path/to/file.db or file:///path/to/folder"
        )
        if parts.scheme not in TRACKING_SCHEMES:
            fail("tracking_uri", uri, allowed)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme in ("http", "https") and (not parts.hostname or port == -1):
            fail("tracking_uri", uri, f"a server URI needs a host and a valid port; {allowed}")
        if parts.scheme in ("sqlite", "file") and (parts.netloc or not parts.path.strip("/")):
            fail("tracking_uri", uri, f"a local store needs three slashes and a path; {allowed}")
    if not mlflow.timeout_s > 0:
        fail("timeout_s", mlflow.timeout_s, "must be > 0 (seconds)")


def _check_training_controls(cfg: Any, fail) -> None:
    """Contradictory or out-of-range schedule, weight-decay and speed settings."""
    t = cfg.training
    s = t.schedule
    if s.warmup_epochs < 0:
        fail("schedule.warmup_epochs", s.warmup_epochs, "must be >= 0 (0 = no warm-up)")
    if s.warmup_epochs > t.epochs or (s.warmup_epochs == t.epochs and s.name != Schedule.constant):
        fail(
            "schedule.warmup_epochs",
            s.warmup_epochs,
            f"the warm-up must end before the training does (training.epochs = {t.epochs})",
        )
    if not 0 <= s.final_fraction <= 1:
        fail("schedule.final_fraction", s.final_fraction, "allowed: 0..1 (a fraction of the peak)")
    if not 0 < s.decay_rate <= 1:
        fail("schedule.decay_rate", s.decay_rate, "allowed: > 0 and <= 1 (a decay, not a growth)")
    if not s.decay_epochs > 0:
        fail("schedule.decay_epochs", s.decay_epochs, "must be > 0")
    if not 0 < s.plateau_factor < 1:
        fail("schedule.plateau_factor", s.plateau_factor, "allowed: > 0 and < 1")
    if s.plateau_patience < 1:
        fail("schedule.plateau_patience", s.plateau_patience, "must be >= 1")
    if not 0 <= s.min_learning_rate < t.compile.learning_rate:
        fail(
            "schedule.min_learning_rate",
            s.min_learning_rate,
            f"allowed: >= 0 and < compile.learning_rate = {t.compile.learning_rate!r}",
        )
    if t.compile.weight_decay is not None and not t.compile.weight_decay >= 0:
        fail("compile.weight_decay", t.compile.weight_decay, "must be >= 0, or null for the optimizer's own")
    if t.steps_per_execution < 1:
        fail("steps_per_execution", t.steps_per_execution, "must be >= 1")
    if t.jit_compile and cfg.runtime.deterministic:
        # Keras silently drops XLA when TensorFlow's op determinism is on.
        fail("jit_compile", t.jit_compile, "needs runtime.deterministic=false (XLA is not deterministic)")
