"""The keys of a search (`hydra/sweeper=bionn_search`, set by an `hparams_search/` config) and their
defaults, stated once: the sweeper plugin registers this schema, bionn.search.space checks a node of it."""

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class ObjectiveConf:
    """What a trial is scored by: hydra.sweeper.objective."""

    # A metric every run logs in history.csv: val_<metric> is the validation split's (select on it),
    # <metric> the training split's; e.g. val_r2_mean, val_loss, val_mean_absolute_error.
    metric: str = "val_r2_mean"
    # maximize or minimize; null: the metric's own (r2 maximised, losses and errors minimised).
    direction: Optional[str] = None  # noqa: UP045 (OmegaConf 2.3 reads no X | None)


@dataclass
class SamplerConf:
    """How the next trial's values are drawn: hydra.sweeper.sampler."""

    # tpe (with constant liar, so parallel workers spread out) or random.
    name: str = "tpe"
    # The sampler draws trial n with seed + n: a search is reproducible in its parameters.
    seed: int = 0
    # TPE: random trials before the model of good and bad regions takes over.
    n_startup_trials: int = 4


@dataclass
class PrunerConf:
    """When a trial is stopped early: hydra.sweeper.pruner."""

    # median, percentile, threshold, successive_halving or none.
    name: str = "median"
    # median/percentile: trials that must end before any is pruned.
    n_startup_trials: int = 2
    # Epochs a trial always trains before it may be pruned (step = epoch index, from 0).
    n_warmup_steps: int = 1
    # percentile: prune below this percentile of earlier trials at the same epoch (for a maximised metric).
    percentile: float = 50.0
    # threshold: prune a trial whose epoch value is below lower or above upper.
    lower: Optional[float] = None  # noqa: UP045
    upper: Optional[float] = None  # noqa: UP045


@dataclass
class SearchConf:
    """hydra.sweeper of a search: the space, the objective, the study's size and its workers' heartbeat."""

    # {<config key or group>: <Hydra sweep>}: interval(a, b), range(a, b[, step]), choice(x, ...),
    # tag(log, interval(a, b)). Integer bounds draw integers.
    params: dict[str, Any] = field(default_factory=dict)
    objective: ObjectiveConf = field(default_factory=ObjectiveConf)
    # Trials of the study: running the command again continues it up to this number.
    n_trials: int = 20
    # Worker jobs launched (each trains one trial at a time; a new trial starts as soon as one ends).
    n_workers: int = 2
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    # Trials to run first, with given values of searched keys, e.g. [{training.compile.learning_rate: 0.002}].
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    # A worker writes workers/<i>/worker.json this often; one silent for dead_after_s (or whose process is
    # gone from this host) is dead, and its running trial is resumed by another worker.
    heartbeat_s: float = 30.0
    dead_after_s: float = 300.0
