"""The keys of a search (`hydra/sweeper=bionn_search`, set by an `hparams_search/` config) and their
defaults, stated once: the sweeper plugin registers this schema, bionn.search.space checks a node of it."""

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class ObjectiveConf:
    """What a trial is scored by: hydra.sweeper.objective.

    metric     a metric every run logs in history.csv: val_<metric> is the validation split's (select on
               it), <metric> the training split's; e.g. val_r2_mean, val_loss, val_mean_absolute_error
    direction  maximize or minimize; null: the metric's own (r2 maximised, losses and errors minimised)
    """

    metric: str = "val_r2_mean"
    direction: Optional[str] = None  # noqa: UP045 (OmegaConf 2.3 reads no X | None)


@dataclass
class SamplerConf:
    """How the next trial's values are drawn: hydra.sweeper.sampler.

    name              tpe (with constant liar, so parallel workers spread out) or random
    seed              the sampler draws trial n with seed + n: a search is reproducible in its parameters
    n_startup_trials  TPE: random trials before the model of good and bad regions takes over
    """

    name: str = "tpe"
    seed: int = 0
    n_startup_trials: int = 4


@dataclass
class PrunerConf:
    """When a trial is stopped early: hydra.sweeper.pruner.

    name              median, percentile, threshold, successive_halving or none
    n_startup_trials  median/percentile: trials that must end before any is pruned
    n_warmup_steps    epochs a trial always trains before it may be pruned (step = epoch index, from 0)
    percentile        percentile: prune below this percentile of earlier trials at the same epoch (for a
                      maximised metric)
    lower, upper      threshold: prune a trial whose epoch value is below lower or above upper
    """

    name: str = "median"
    n_startup_trials: int = 2
    n_warmup_steps: int = 1
    percentile: float = 50.0
    lower: Optional[float] = None  # noqa: UP045
    upper: Optional[float] = None  # noqa: UP045


@dataclass
class SearchConf:
    """hydra.sweeper of a search (docs/search.md).

    params        {<config key or group>: <Hydra sweep>}: interval(a, b), range(a, b[, step]),
                  choice(x, ...), tag(log, interval(a, b)); integer bounds draw integers
    n_trials      trials of the study: running the command again continues it up to this number
    n_workers     worker jobs launched (each trains one trial at a time; a new trial starts as soon as
                  one ends)
    enqueue       trials to run first, with given values of searched keys,
                  e.g. [{training.compile.learning_rate: 0.002}]
    heartbeat_s   a worker writes workers/<i>/worker.json this often; one silent for dead_after_s (or
    dead_after_s  whose process is gone from this host) is dead, and another worker resumes its trial
    """

    params: dict[str, Any] = field(default_factory=dict)
    objective: ObjectiveConf = field(default_factory=ObjectiveConf)
    n_trials: int = 20
    n_workers: int = 2
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    heartbeat_s: float = 30.0
    dead_after_s: float = 300.0
