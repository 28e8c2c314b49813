"""Structured-config schema of the dataset group and its semantic checks.

The dataclasses give Hydra/OmegaConf the types and the documented defaults
(a wrong type or an unknown key fails at composition); `check_dataset` adds the
checks a type cannot express and names the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from bionn.config.errors import ConfigError
from bionn.config.layers import check_layers
from bionn.config.sources import source_of

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


def split_sizes(n_samples: int, splits: list[float]) -> tuple[int, int, int]:
    """Sample counts of train, val, test: the first two rounded, test takes the rest."""
    n_train = round(n_samples * splits[0])
    n_val = round(n_samples * splits[1])
    return n_train, n_val, n_samples - n_train - n_val


def check_dataset(cfg: Any, source: str | Callable[[str], str] = "dataset config") -> None:
    """Raise ConfigError naming the source, the key and the value for any unusable setting; `source`
    is a file, or a function of the key within the dataset ("parameters.k1_min") that says where it
    was set."""

    def fail(key: str, value: Any, allowed: str) -> None:
        where = source(key) if callable(source) else source
        raise ConfigError(f"{where}: dataset.{key} = {value!r} is invalid: {allowed}")

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
    if shape.seed < 0:
        fail("shape.seed", shape.seed, "must be >= 0")
    if shape.n_samples < 1:
        fail("shape.n_samples", shape.n_samples, "must be >= 1")
    if shape.n_shards < 1:
        fail("shape.n_shards", shape.n_shards, "must be >= 1")
    if shape.batch_size < 1:
        fail("shape.batch_size", shape.batch_size, "must be >= 1")
    if shape.shuffle_buffer_size < 1:
        fail("shape.shuffle_buffer_size", shape.shuffle_buffer_size, "must be >= 1 (1 = no shuffle)")
    splits = list(shape.splits)
    if len(splits) != 3 or any(f < 0 for f in splits) or abs(sum(splits) - 1.0) > 1e-9:
        fail("shape.splits", splits, "three fractions (train, val, test), each >= 0, summing to 1")
    sizes = split_sizes(shape.n_samples, splits)
    for split, size in zip(SPLIT_NAMES, sizes, strict=False):
        if size < 1:
            fail("shape.splits", splits, f"the {split} split of {shape.n_samples} samples is empty")
    for split, size in zip(SPLIT_NAMES, sizes, strict=False):
        if shape.batch_size > size:
            fail(
                "shape.batch_size",
                shape.batch_size,
                f"must be <= the smallest split ({split}: {size} samples)",
            )
    if shape.n_shards > sizes[0]:
        fail("shape.n_shards", shape.n_shards, f"must be <= the train split ({sizes[0]} samples)")


def describe_omegaconf_error(err: OmegaConfBaseException, prefix: str = "") -> str:
    """One line naming the full key, the problem and, for an unknown key, the allowed ones."""
    key = f"{prefix}{err.full_key}" if getattr(err, "full_key", None) else prefix.rstrip(".")
    message = f"{key}: {str(getattr(err, 'msg', err)).splitlines()[0]}"
    owner = getattr(err, "object_type", None)
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and dataclasses.is_dataclass(owner):
        message += f" (allowed keys: {', '.join(f.name for f in dataclasses.fields(owner))})"
    return message


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


# ---- model, training and the composed run config ------------------------------------


@dataclass
class ModelConfig:
    """A network as a list of Keras layers: `{type: Conv2D, filters: 32, ...}` per layer."""

    # The model's name (its Keras name is model_<name>).
    name: str = "model"
    # Named values the layers refer to as ${model.vars.<name>} (e.g. width, blocks): one key a
    # hyperparameter search (hparams_search/) or an override varies for a whole model family.
    vars: dict[str, Any] = field(default_factory=dict)
    # One {type: <a keras.layers class>, <its arguments>} per layer; the input shape comes from the
    # data, and the last layer must give n_components x 4 outputs (12 by default).
    layers: list[Any] = field(default_factory=list)


class Schedule(enum.StrEnum):
    """How the learning rate moves over training (compile.learning_rate is the peak)."""

    constant = "constant"
    cosine = "cosine"
    exponential = "exponential"
    plateau = "plateau"


class Precision(enum.StrEnum):
    """Keras dtype policy of the layers; the output layer and the loss always stay float32."""

    float32 = "float32"
    mixed_float16 = "mixed_float16"
    mixed_bfloat16 = "mixed_bfloat16"


@dataclass
class ScheduleConfig:
    """training.schedule: the learning rate per step; epochs may be fractional."""

    name: Schedule = Schedule.constant
    # Linear warm-up from 0 to the peak over this many epochs (0 = none); then the schedule.
    warmup_epochs: float = 0.0
    # cosine: from the peak down to final_fraction * peak at the last step.
    final_fraction: float = 0.0
    # exponential: multiplied by decay_rate every decay_epochs epochs.
    decay_rate: float = 0.5
    decay_epochs: float = 1.0
    # plateau: multiplied by plateau_factor after plateau_patience epochs without a lower
    # val_loss, never below min_learning_rate.
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    min_learning_rate: float = 0.0


@dataclass
class CompileConfig:
    """Optimizer, loss and metrics of Keras' compile."""

    # Any keras.optimizers name (adam, sgd, rmsprop, adamw, ...).
    optimizer: str = "adam"
    # Learning rate of the optimizer (> 0).
    learning_rate: float = 0.001
    # Gradient values are clipped to [-clipvalue, clipvalue] (the older code used 1.0); null disables.
    clipvalue: float | None = 1.0
    # Any keras.losses name (mean_squared_error, mean_absolute_error, huber, ...).
    loss: str = "mean_squared_error"
    # Decoupled weight decay of the optimizer (adamw's is 0.004); null = the optimizer's default.
    weight_decay: float | None = None
    # Any keras.metrics name, plus R_squared (the older project's pooled R-squared); every
    # evaluation also reports r2_per_output and r2_mean.
    metrics: list[str] = field(
        default_factory=lambda: [
            "R_squared",
            "MeanSquaredError",
            "MeanAbsoluteError",
            "MeanAbsolutePercentageError",
            "RootMeanSquaredError",
        ]
    )


class Verbosity(enum.Enum):
    """What fit shows. Integers as in Keras are accepted: 0 silent, 1 bar, 2 epoch."""

    silent = 0  # only bionn's start and end lines
    bar = 1  # Keras' progress bar within each epoch, and a log line per epoch
    epoch = 2  # a log line per epoch, and one every minute within a long epoch (for batch-job logs)
    auto = "auto"  # bar on a terminal, epoch otherwise


class OnConfigChange(enum.Enum):
    """What a run does in a folder that holds a run of another config (see docs/results.md)."""

    refuse = "refuse"  # stop before any work, naming every key that differs
    move_aside = "move_aside"  # move the folder's contents into previous/<n>/ and start afresh


@dataclass
class TrainingConfig:
    """How the model is trained (a file of conf/training/)."""

    # The training's name.
    name: str = "default"
    compile: CompileConfig = field(default_factory=CompileConfig)
    # Upper bound of the epochs (early stopping may end sooner).
    epochs: int = 10
    # Model checkpoint plus an evaluation on all splits every this many epochs (0 = never).
    save_interval: int = 5
    # Normalisation statistics over the first this many training samples (capped at the split).
    use_stats_of: int = 300000
    # Epochs without val_loss improvement before stopping (best weights restored); 0 disables.
    early_stopping_patience: int = 10
    # What fit shows: auto (a progress bar on a terminal, log lines otherwise), bar, epoch, silent.
    verbose: Verbosity = Verbosity.auto
    # Train on labels standardised with the training statistics (label_mean, label_std);
    # the loss is then on that scale, every metric on the original scale (docs/accuracy.md).
    scale_labels: bool = True
    # Learning-rate schedule and speed options (docs/accuracy.md).
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # Layer precision: float32, mixed_float16 or mixed_bfloat16 (output layer and loss stay float32).
    precision: Precision = Precision.float32
    # XLA-compile the training step.
    jit_compile: bool = False
    # Training steps per call into the compiled graph (fewer Python round trips; callbacks see every N-th).
    steps_per_execution: int = 1


@dataclass
class RuntimeConfig:
    """Where and how a run executes (not part of the experiment's science)."""

    # Without GPUs, split the CPU into this many logical devices (MirroredStrategy replicas).
    cpu_replicas: int = 1
    # Seed of weight initialisation and dropout (the data has its own seed in dataset.shape).
    seed: int = 0
    # Deterministic TF kernels: resumed runs end bit-equal to uninterrupted ones.
    deterministic: bool = True
    # Folder of the normalisation-statistics cache; null = $BIONN_CACHE_DIR/stats or ~/.cache/bionn/stats.
    stats_cache_dir: str | None = None
    # A run into a folder holding another config's run: refuse (naming the keys that differ) or
    # move_aside (its contents go to previous/<n>/ in the folder, nothing is deleted).
    on_config_change: OnConfigChange = OnConfigChange.refuse


@dataclass
class TensorBoardLogger:
    """TensorBoard event files in the run folder's tensorboard/ (logger=tensorboard, the default)."""


@dataclass
class CsvLogger:
    """history.csv, one row per epoch: the run folder's own record, written with every logger (logger=csv
    adds nothing to it; the name is there for lightning-hydra-template's users)."""


@dataclass
class MlflowLogger:
    """One MLflow run per run folder, continued by every later attempt (docs/tracking.md)."""

    # Where to log: null = a SQLite store in the sweep folder (a single run: in its run folder);
    # http(s)://host:port = an MLflow server; sqlite:///path.db or file:///path = a store of your own.
    tracking_uri: str | None = None
    # MLflow experiment: null = the sweep folder's path for a sweep's or search's jobs, "bionn" otherwise.
    experiment_name: str | None = None
    # Also upload model.keras at the end (final_results.json and plots/ always are); it can be large.
    log_model: bool = False
    # true: a store that cannot be reached stops the run before any work;
    # false: a warning, training goes on, and bionn-report DIR --to-mlflow URI fills in later.
    required: bool = False
    # Seconds one call to the store may take before the tracker stops logging for this attempt (> 0).
    timeout_s: float = 10.0


@dataclass
class LoggerConfig:
    """Where metrics go besides the run folder: a file of conf/logger/, or several (logger=[a,b])."""

    tensorboard: TensorBoardLogger | None = None
    mlflow: MlflowLogger | None = None
    csv: CsvLogger | None = None


@dataclass
class RunConfig:
    """One run: what train.py composes from conf/train.yaml."""

    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    # Loggers (none of them decides a result: a re-run may change them).
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def register_schemas() -> None:
    """Put the run schema in Hydra's ConfigStore (train.yaml lists it first in its defaults)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="run_schema", node=RunConfig)


def unknown_keys(cfg: Any, schema: Any = RunConfig, prefix: str = "") -> list[str]:
    """Keys of cfg that the dataclass schema does not define (e.g. added with `+key=...`),
    each with the keys allowed at its place."""
    found = []
    names = {f.name: f for f in dataclasses.fields(schema)}
    for key in cfg.keys() if isinstance(cfg, DictConfig) else []:
        if key not in names:
            found.append(f"{prefix}{key} (allowed there: {', '.join(names)})")
            continue
        default = (
            names[key].default_factory if names[key].default_factory is not dataclasses.MISSING else None
        )
        sub = default() if default else None
        if dataclasses.is_dataclass(sub):
            found += unknown_keys(cfg[key], type(sub), f"{prefix}{key}.")
    return found


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

    if t.epochs < 1:
        fail("epochs", t.epochs, "must be >= 1")
    if t.save_interval < 0:
        fail("save_interval", t.save_interval, "must be >= 0 (0 = no periodic checkpoints)")
    if t.use_stats_of < 1:
        fail("use_stats_of", t.use_stats_of, "must be >= 1")
    if t.early_stopping_patience < 0:
        fail("early_stopping_patience", t.early_stopping_patience, "must be >= 0 (0 = off)")
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


# ---- checks of the schedule, weight decay and speed options ----------------------------


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
