"""The dataset group's schema (parameter ranges, shape and splits, simulation, label), its checks, and
how a dataset config is found and loaded by name or path.

The dataclasses give Hydra/OmegaConf the types and the documented defaults (a wrong type or an unknown
key fails at composition); `check_dataset` adds the checks a type cannot express and names the key,
the value and what is allowed.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bionn.config.errors import ConfigError, describe_omegaconf_error

SPLIT_NAMES = ("train", "val", "test")
# Species of the mass-action system, in the order of every label row: E, S, ES, P.
SPECIES = ("E", "S", "ES", "P")
N_SPECIES = len(SPECIES)


class Mechanism(enum.StrEnum):
    """The reaction simulated (docs/data-model.md)."""

    # E + S <-> ES -> E + P
    textbook = "textbook"
    # The older code's E + S <-> ES -> S + P (the enzyme is not released)
    legacy = "legacy"


class SignRule(enum.StrEnum):
    """Sign of each singular vector U[:, j] (a singular vector has none of its own)."""

    # U[0, j] >= 0: each component starts positive
    first_positive = "first_positive"
    # the largest-magnitude entry of U[:, j] >= 0
    max_abs_positive = "max_abs_positive"
    # whatever the eigen-solver returns
    solver = "solver"


@dataclass
class ParametersConfig:
    """Uniform ranges of the quantities drawn for every sample (docs/data-model.md)."""

    # Rate constant of binding E + S -> ES (> 0; min <= max).
    k1_min: float = 0.01
    k1_max: float = 0.05
    # Rate constant of unbinding ES -> E + S (> 0).
    k2_min: float = 0.01
    k2_max: float = 0.05
    # Rate constant of catalysis ES -> E + P (> 0).
    k3_min: float = 0.01
    k3_max: float = 0.05
    # Initial enzyme concentration (> 0).
    E0_min: float = 0.1
    E0_max: float = 0.3
    # Initial substrate concentration (> 0).
    S0_min: float = 0.1
    S0_max: float = 0.3
    # Entries of each species' spectral vector, before it is normalised to unit length.
    spectra_min: float = -1.0
    spectra_max: float = 1.0
    # Amplitude of each species in the absorbance matrix (> 0).
    amplitude_min: float = 0.2
    amplitude_max: float = 0.8


@dataclass
class ShapeConfig:
    """Size, splits and feeding of a dataset (`[name.shape]` in data.toml)."""

    # The data's seed: sample i is a pure function of it, the stream and i.
    seed: int = 42
    # Total samples, split into train, validation and test.
    n_samples: int = 5000
    # Contiguous shards of the training split, interleaved one sample at a time in the training order.
    n_shards: int = 1
    # Global batch, split evenly across replicas (at most the smallest split).
    batch_size: int = 64
    # Shuffle buffer of the training order (1 = no shuffling).
    shuffle_buffer_size: int = 1000
    # Train, validation and test fractions, each >= 0, summing to 1.
    splits: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    # False: a fixed training set (sample j is index j in every epoch).
    # True: epoch e trains on fresh samples drawn from stream e (the older code's unlimited data).
    fresh_train_each_epoch: bool = False


@dataclass
class SimulationConfig:
    """How a sample is simulated and observed (docs/data-model.md)."""

    # The reaction integrated.
    mechanism: Mechanism = Mechanism.textbook
    # Uniform time grid: n_times points from t_start to t_stop (t_stop > t_start, n_times >= 2).
    t_start: float = 0.0
    t_stop: float = 500.0
    n_times: int = 501
    # Length of each spectral vector (columns of the absorbance matrix).
    n_wavelengths: int = 4
    # SVD components kept: 1 to min(n_wavelengths, 3) (the concentrations have rank 3).
    n_components: int = 3
    # Sign rule of each singular vector; feature column j and label row j flip together.
    svd_sign: SignRule = SignRule.first_positive


class Label(enum.StrEnum):
    """What the 12 label numbers are.

    seed: C^T U_k, the seed project's label (absolute concentrations; not determined by
    the features, ceiling about 0.93). relative: C^T U_k / (E0 + S0), the same with the
    concentrations relative to the total initial concentration, which the features
    determine (absolute = relative * (E0 + S0), both initial concentrations being known).
    """

    seed = "seed"
    relative = "relative"


@dataclass
class DatasetConfig:
    """The data: parameter ranges, size and splits, simulation (a file of conf/dataset/)."""

    # The dataset's name (bionn-import writes the TOML table's name).
    name: str = "dataset"
    parameters: ParametersConfig = field(default_factory=ParametersConfig)
    shape: ShapeConfig = field(default_factory=ShapeConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    # The label: seed (default: imported seed datasets stay comparable) or relative.
    label: Label = Label.seed


RANGE_KEYS = ("k1", "k2", "k3", "E0", "S0", "spectra", "amplitude")
POSITIVE_RANGES = ("k1", "k2", "k3", "E0", "S0")
# (key of shape, its least value, what is allowed), checked in this order.
SHAPE_MINIMUMS = (
    ("seed", 0, "must be >= 0"),
    ("n_samples", 1, "must be >= 1"),
    ("n_shards", 1, "must be >= 1"),
    ("batch_size", 1, "must be >= 1"),
    ("shuffle_buffer_size", 1, "must be >= 1 (1 = no shuffle)"),
)


def split_sizes(n_samples: int, splits: list[float]) -> tuple[int, int, int]:
    """Sample counts of train, val, test: the first two rounded, test takes the rest."""
    n_train = round(n_samples * splits[0])
    n_val = round(n_samples * splits[1])
    return n_train, n_val, n_samples - n_train - n_val


def check_dataset(cfg: Any, source: str | Callable[[str], str] = "dataset config") -> None:
    """Raise ConfigError naming the source, the key and the value for any unusable setting; `source`
    is a file, or a function of the key within the dataset ("parameters.k1_min") that says where it
    was set."""

    def problem(key: str, value: Any, allowed: str) -> ConfigError:
        where = source(key) if callable(source) else source
        return ConfigError(f"{where}: dataset.{key} = {value!r} is invalid: {allowed}")

    def fail(key: str, value: Any, allowed: str) -> None:
        raise problem(key, value, allowed)

    p, shape, sim = cfg.parameters, cfg.shape, cfg.simulation
    for name in RANGE_KEYS:
        lo, hi = getattr(p, f"{name}_min"), getattr(p, f"{name}_max")
        if lo > hi:
            fail(f"parameters.{name}_min", lo, f"must be <= parameters.{name}_max = {hi!r}")
        if name in POSITIVE_RANGES and lo <= 0:
            fail(f"parameters.{name}_min", lo, "rates and concentrations must be > 0")
    if p.spectra_min == p.spectra_max == 0:
        fail("parameters.spectra_max", p.spectra_max, "spectra ranges must allow non-zero entries")
    if p.amplitude_min <= 0:
        fail("parameters.amplitude_min", p.amplitude_min, "amplitudes must be > 0")
    if sim.n_times < 2:
        fail("simulation.n_times", sim.n_times, "need at least 2 time points")
    if not sim.t_stop > sim.t_start:
        fail("simulation.t_stop", sim.t_stop, f"must be > simulation.t_start = {sim.t_start!r}")
    if sim.n_wavelengths < 1:
        fail("simulation.n_wavelengths", sim.n_wavelengths, "must be >= 1")
    # C = [E, S, ES, P] has rank 3 (two conservation laws), so D has at most min(n_w, 3) components.
    max_k = min(sim.n_wavelengths, N_SPECIES - 1)
    if not 1 <= sim.n_components <= max_k:
        fail("simulation.n_components", sim.n_components, f"allowed: 1..{max_k} (rank of D)")
    for key, least, allowed in SHAPE_MINIMUMS:
        if getattr(shape, key) < least:
            fail(f"shape.{key}", getattr(shape, key), allowed)
    splits = list(shape.splits)
    if len(splits) != 3 or any(f < 0 for f in splits) or abs(sum(splits) - 1.0) > 1e-9:
        fail("shape.splits", splits, "three fractions (train, val, test), each >= 0, summing to 1")
    sizes = split_sizes(shape.n_samples, splits)
    for split, size in zip(SPLIT_NAMES, sizes, strict=False):
        if size < 1:
            fail("shape.splits", splits, f"the {split} split of {shape.n_samples} samples is empty")
    check_batch_split(
        shape.batch_size,
        lambda allowed: problem("shape.batch_size", shape.batch_size, allowed),
        splits=dict(zip(SPLIT_NAMES, sizes, strict=False)),
    )
    if shape.n_shards > sizes[0]:
        fail("shape.n_shards", shape.n_shards, f"must be <= the train split ({sizes[0]} samples)")


def check_batch_split(
    batch_size: int,
    refusal: Callable[[str], Exception],
    workers: int = 1,
    splits: Mapping[str, int] | None = None,
) -> None:
    """The one check that a global batch of `batch_size` samples can be trained: it fits in every split
    of `splits` (name -> samples, in order) and `workers` (workers or replicas, each training an equal
    slice of every batch) share it evenly. Otherwise raises refusal(allowed), where allowed says what
    the batch size must be ("must be <= the smallest split (val: 10 samples)", "must be a multiple of
    4"): the caller words the refusal for the place it checks."""
    for split, size in (splits or {}).items():
        if batch_size > size:
            raise refusal(f"must be <= the smallest split ({split}: {size} samples)")
    if workers > 1 and batch_size % workers:
        raise refusal(f"must be a multiple of {workers}")


def load_dataset_config(path: Path) -> DictConfig:
    """Load a dataset YAML file through the schema and check it (errors name the file)."""
    try:
        raw = OmegaConf.load(path)
        cfg = OmegaConf.merge(OmegaConf.structured(DatasetConfig), raw)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: {describe_omegaconf_error(err, 'dataset.')}") from None
    check_dataset(cfg, source=str(path))
    return cfg


def find_config_dir(explicit: str | None = None) -> Path:
    """The conf/ folder: explicit, $BIONN_CONFIG_DIR, ./conf, or the one beside the package."""
    for candidate in (explicit, os.environ.get("BIONN_CONFIG_DIR"), "conf"):
        if candidate and Path(candidate, "dataset").is_dir():
            return Path(candidate)
    return Path(__file__).resolve().parents[2] / "conf"


def resolve_dataset(name_or_path: str, config_dir: str | None = None) -> DictConfig:
    """A dataset config from a YAML path or a name in conf/dataset/."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"dataset file {path} does not exist")
        return load_dataset_config(path)
    folder = find_config_dir(config_dir) / "dataset"
    path = folder / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"unknown dataset {name_or_path!r}: allowed {', '.join(known)} (in {folder})")
    return load_dataset_config(path)
