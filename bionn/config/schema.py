"""The structured-config schema of a run: model, training, runtime and loggers beside the dataset
(bionn.config.dataset), composed as RunConfig and registered with Hydra.

The dataclasses give Hydra/OmegaConf the types and the documented defaults (a wrong type or an unknown
key fails at composition; scripts/gen_config_docs.py writes docs/configuration.md from them and the
comments above their fields); bionn.config.checks adds the checks a type cannot express.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from bionn.config.dataset import DatasetConfig


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
    # XLA-compile the training step (TensorFlow; on jax every step is compiled, docs/backends.md).
    jit_compile: bool = False
    # Training steps per call into the compiled graph (fewer Python round trips; callbacks see every N-th).
    # TensorFlow only: on jax a call steps through a whole chunk of batches (docs/backends.md).
    steps_per_execution: int = 1


class KerasBackend(enum.StrEnum):
    """The framework Keras computes with (docs/backends.md); one per process, set before Keras loads."""

    tensorflow = "tensorflow"  # tf.distribute: GPUs, CPU replicas, multi-host Slurm steps
    jax = "jax"  # one process on its local devices; imports no TensorFlow


@dataclass
class RuntimeConfig:
    """Where and how a run executes (not part of the experiment's science)."""

    # The framework under Keras: tensorflow or jax (one process, no multi-host; docs/backends.md).
    backend: KerasBackend = KerasBackend.tensorflow
    # Without GPUs, split the CPU into this many devices: TensorFlow's MirroredStrategy replicas, or with
    # jax XLA host devices (bionn.backend.select).
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
