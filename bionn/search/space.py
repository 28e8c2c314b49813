"""A search's definition: its space (Hydra's sweep syntax), objective, sampler and pruner, checked.

    params:   {<config key>: interval(a, b) | range(a, b[, step]) | choice(x, y, ...), ...}
              tag(log, interval(a, b)) samples on a log scale; int bounds sample integers.
              A key may also be a config group (model, dataset, ...): choice(...) of its options.
    objective {metric: <a logged metric, e.g. val_r2_mean>, direction: maximize | minimize | null}

`SearchSpec.from_config` turns the sweeper's config node (keys and defaults:
bionn.search.schema) into a SearchSpec; every
problem is a SearchError naming the search's file, the key and the value, and what
is allowed. Nothing here imports Optuna's samplers or TensorFlow: the distributions
are built on demand (`distributions()`).
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Any

from bionn.config.errors import ConfigError
from bionn.search.schema import ObjectiveConf, PrunerConf, SamplerConf, SearchConf

# A metric of a run's history.csv and final evaluation ("val_" prefix: the validation split).
MAXIMISED = ("r2_mean", "r_squared")
SPLIT_PREFIX = {"val_": "validation", "": "train"}


class SearchError(ConfigError):
    """A search definition, record or study that cannot be used; names the file, key and value."""


class Direction(enum.StrEnum):
    maximize = "maximize"
    minimize = "minimize"


class SamplerName(enum.StrEnum):
    tpe = "tpe"  # Tree-structured Parzen Estimator, with constant liar for parallel workers
    random = "random"


class PrunerName(enum.StrEnum):
    median = "median"  # stop a trial whose epoch value is worse than the median of earlier trials' there
    percentile = "percentile"  # the same with another percentile (pruner.percentile)
    threshold = "threshold"  # stop a trial whose value leaves [lower, upper]
    successive_halving = "successive_halving"
    none = "none"


@dataclass(frozen=True)
class Param:
    """One searched key: kind is float, int or choice."""

    key: str
    text: str  # as written, e.g. "tag(log, interval(1e-4, 1e-2))"
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    group: bool = False  # a config group's option (written as group=option, an override in best.yaml)

    def extremes(self) -> list[Any]:
        """The values every trial's config must accept: both bounds, or every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def contains(self, value: Any) -> bool:
        """True when `value` is one this key can take (an enqueued trial's value, say)."""
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return self.low <= value <= self.high and (self.kind == "float" or float(value).is_integer())

    def distribution(self) -> Any:
        """Optuna's distribution of this key (Optuna imported here, on demand)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(self.choices)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def override(self, value: Any) -> str:
        """The trial's override of this key, e.g. training.compile.learning_rate=0.0031."""
        return f"{self.key}={format_value(value)}"


@dataclass
class SearchSpec:
    """What a search is, checked: a node of bionn.search.schema's SearchConf (its keys and defaults) with its
    params parsed and its direction resolved. Compared with the sweep folder's record before anything runs."""

    source: str  # the file the search was composed from (for messages)
    params: dict[str, Param]
    metric: str
    direction: Direction
    n_trials: int
    n_workers: int
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    enqueue: list[dict[str, Any]]
    heartbeat_s: float
    dead_after_s: float

    @classmethod
    def from_config(cls, node: dict, source: str, groups: frozenset[str] = frozenset()) -> SearchSpec:
        """node: the sweeper's config as a dict (a key left out: its default in bionn.search.schema);
        source: the file it was composed from; groups: the config groups (keys that choose an option)."""
        params_node = node.get("params") or {}
        if not isinstance(params_node, dict) or not params_node:
            raise SearchError(
                f"{source}: hydra.sweeper.params is empty: give at least one <config key>: interval(a, b) | "
                "range(a, b) | choice(x, y, ...) (docs/search.md)"
            )
        params = {str(k): parse_param(str(k), v, source, str(k) in groups) for k, v in params_node.items()}
        objective = node.get("objective") or {}
        metric = str(objective.get("metric") or ObjectiveConf.metric)
        direction = _direction(metric, objective.get("direction"), source)
        n_trials = _positive(node, "n_trials", source)
        n_workers = _positive(node, "n_workers", source)
        sampler = dict(node.get("sampler") or {})
        pruner = dict(node.get("pruner") or {})
        _choice(sampler.get("name", SamplerConf.name), SamplerName, "hydra.sweeper.sampler.name", source)
        _choice(pruner.get("name", PrunerConf.name), PrunerName, "hydra.sweeper.pruner.name", source)
        _check_pruner(pruner, direction, source)
        spec = cls(
            source=source,
            params=params,
            metric=metric,
            direction=direction,
            n_trials=n_trials,
            n_workers=n_workers,
            sampler=sampler,
            pruner=pruner,
            enqueue=[dict(e) for e in node.get("enqueue") or []],
            heartbeat_s=float(node.get("heartbeat_s", SearchConf.heartbeat_s)),
            dead_after_s=float(node.get("dead_after_s", SearchConf.dead_after_s)),
        )
        spec.check_enqueued()
        if spec.dead_after_s <= 2 * spec.heartbeat_s:
            raise SearchError(
                f"{source}: hydra.sweeper.dead_after_s = {spec.dead_after_s} must exceed twice "
                f"hydra.sweeper.heartbeat_s = {spec.heartbeat_s} (a live worker would be taken for dead)"
            )
        return spec

    def check_enqueued(self) -> None:
        """SearchError naming the enqueued trial with an unsearched key or a value outside its range."""
        for number, trial in enumerate(self.enqueue):
            where = f"{self.source}: hydra.sweeper.enqueue[{number}]"
            unknown = sorted(set(trial) - set(self.params))
            if unknown:
                raise SearchError(
                    f"{where}: {', '.join(unknown)} is not a searched key "
                    f"(searched: {', '.join(self.params)})"
                )
            for key, value in trial.items():
                if not self.params[key].contains(value):
                    raise SearchError(f"{where}: {key} = {value!r} is outside {self.params[key].text}")

    def record(self) -> dict:
        """What decides the study (sweep folder's search.json compares it on every launch)."""
        return {
            "params": {k: p.text for k, p in self.params.items()},
            "objective": {"metric": self.metric, "direction": self.direction.value},
            "sampler": self.sampler,
            "pruner": self.pruner,
            "enqueue": self.enqueue,
        }

    def distributions(self) -> dict[str, Any]:
        """{searched key: Optuna distribution}."""
        return {k: p.distribution() for k, p in self.params.items()}

    def split_and_metric(self) -> tuple[str, str]:
        """("validation", "r2_mean") for val_r2_mean: where final_results.json's evaluation holds it."""
        for prefix, split in SPLIT_PREFIX.items():
            if prefix and self.metric.startswith(prefix):
                return split, self.metric[len(prefix) :]
        return "train", self.metric


def parse_param(key: str, value: Any, source: str, group: bool = False) -> Param:
    """One `key: <sweep>` of the search space; SearchError naming the file, key and value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

    where = f"{source}: hydra.sweeper.params.{key} = {value!r}"
    if key.startswith("hydra.") or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
        raise SearchError(f"{where}: the key must be a config key such as training.compile.learning_rate")
    try:
        override = OverridesParser.create().parse_override(f"{key}={value}")
    except (HydraException, ValueError) as err:
        raise SearchError(f"{where}: not Hydra's sweep syntax ({err}); {_SYNTAX}") from None
    sweep = override.value()
    if isinstance(sweep, ChoiceSweep):
        choices = tuple(sweep.list)  # Hydra's parser refuses an empty choice()
        if any(isinstance(c, list | dict) or c is None for c in choices):
            raise SearchError(f"{where}: choices must be numbers, strings or booleans")
        return Param(key, str(value), "choice", choices=choices, group=group)
    if group:
        raise SearchError(f"{where}: {key} is a config group: search its options with choice(a, b, ...)")
    log = "log" in getattr(sweep, "tags", set())
    if isinstance(sweep, IntervalSweep):
        low, high = sweep.start, sweep.end
        if not low < high:
            raise SearchError(f"{where}: an empty or inverted interval (need low < high)")
        kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
        param = Param(key, str(value), kind, low=low, high=high, log=log)
    elif isinstance(sweep, RangeSweep):
        start, stop, step = sweep.start, sweep.stop, sweep.step
        if step <= 0 or not start < stop:
            raise SearchError(f"{where}: an empty or inverted range (need start < stop and step > 0)")
        last = start + step * math.floor((stop - start - 1e-12) / step)
        ints = all(isinstance(v, int) for v in (start, stop, step))
        if last <= start:
            raise SearchError(f"{where}: a range of one value; put fixed values in the overrides instead")
        param = Param(key, str(value), "int" if ints else "float", low=start, high=last, step=step, log=log)
        if log and param.step not in (None, 1):
            raise SearchError(f"{where}: a log scale takes no step")
    else:
        raise SearchError(f"{where}: a fixed value is no search range; {_SYNTAX}")
    if log and param.low <= 0:
        raise SearchError(f"{where}: a log scale needs a positive lower bound")
    return param


_SYNTAX = (
    "allowed: interval(low, high), range(start, stop[, step]), choice(a, b, ...), "
    "tag(log, interval(low, high))"
)


def format_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and not re.fullmatch(r"[\w.\-/+]+", value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def metric_direction(metric: str) -> Direction | None:
    """The direction a metric improves in, None if bionn does not know it."""
    base = metric.removeprefix("val_")
    if base in MAXIMISED:
        return Direction.maximize
    if base == "loss" or base.endswith("error"):
        return Direction.minimize
    return None


def logged_metrics(compile_metrics: list[Any]) -> list[str]:
    """The names a run logs in history.csv (Keras' snake case of compile.metrics, r2_mean, loss)."""
    names = ["loss", "r2_mean"]
    for metric in compile_metrics:
        name = str(metric)
        snake = re.sub(r"(?<!^)(?<!_)(?=[A-Z][a-z])", "_", name).lower()
        names.append(snake)
    names = list(dict.fromkeys(names))
    return names + [f"val_{n}" for n in names]


def _direction(metric: str, given: Any, source: str) -> Direction:
    natural = metric_direction(metric)
    if given in (None, ""):
        if natural is None:
            raise SearchError(
                f"{source}: hydra.sweeper.objective.direction is needed for {metric!r} "
                f"(allowed: {', '.join(d.value for d in Direction)})"
            )
        return natural
    direction = _choice(given, Direction, "hydra.sweeper.objective.direction", source)
    if natural is not None and direction != natural:
        raise SearchError(
            f"{source}: hydra.sweeper.objective.direction = {given} does not match "
            f"objective.metric = {metric} ({metric} is {natural.value}d: set direction: {natural.value}, "
            "or leave it out)"
        )
    return direction


def _choice(value: Any, kind: type[enum.Enum], key: str, source: str) -> Any:
    try:
        return kind(str(value))
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise SearchError(f"{source}: {key} = {value!r} is not allowed (allowed: {allowed})") from None


def _positive(node: dict, key: str, source: str) -> int:
    value = node.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SearchError(f"{source}: hydra.sweeper.{key} = {value!r} must be a whole number >= 1")
    return value


def _check_pruner(pruner: dict, direction: Direction, source: str) -> None:
    name = PrunerName(str(pruner.get("name", PrunerConf.name)))
    if name == PrunerName.threshold and pruner.get("lower") is None and pruner.get("upper") is None:
        raise SearchError(f"{source}: hydra.sweeper.pruner: the threshold pruner needs lower or upper")
    if name == PrunerName.percentile and not 0 < float(pruner.get("percentile", PrunerConf.percentile)) < 100:
        raise SearchError(
            f"{source}: hydra.sweeper.pruner.percentile = {pruner.get('percentile')} must lie in (0, 100)"
        )
    for key in ("n_startup_trials", "n_warmup_steps"):
        if key in pruner and (not isinstance(pruner[key], int) or pruner[key] < 0):
            raise SearchError(
                f"{source}: hydra.sweeper.pruner.{key} = {pruner[key]!r} must be an integer >= 0"
            )


def make_sampler(sampler: dict, seed_offset: int) -> Any:
    """The study's sampler, seeded by sampler.seed + seed_offset (each ask seeds by the trial count, so
    parallel workers do not draw the same start-up trials)."""
    import optuna

    name = SamplerName(str(sampler.get("name", SamplerConf.name)))
    seed = int(sampler.get("seed", SamplerConf.seed)) + seed_offset
    if name == SamplerName.random:
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=int(sampler.get("n_startup_trials", SamplerConf.n_startup_trials)),
        constant_liar=True,
    )


def make_pruner(pruner: dict) -> Any:
    """The study's pruner from the search's pruner node (a key left out: its default in PrunerConf)."""
    import optuna

    name = PrunerName(str(pruner.get("name", PrunerConf.name)))
    startup = int(pruner.get("n_startup_trials", PrunerConf.n_startup_trials))
    warmup = int(pruner.get("n_warmup_steps", PrunerConf.n_warmup_steps))
    if name == PrunerName.median:
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if name == PrunerName.percentile:
        return optuna.pruners.PercentilePruner(
            float(pruner.get("percentile", PrunerConf.percentile)),
            n_startup_trials=startup,
            n_warmup_steps=warmup,
        )
    if name == PrunerName.threshold:
        return optuna.pruners.ThresholdPruner(
            lower=pruner.get("lower"), upper=pruner.get("upper"), n_warmup_steps=warmup
        )
    if name == PrunerName.successive_halving:
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()
