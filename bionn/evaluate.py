"""bionn-evaluate RUN_DIR [overrides]: a finished run's network on the test split of another dataset.

The overrides change the run's own dataset config (`dataset.parameters.k1_max=0.1`,
`dataset.shape.seed=7`), or replace it (`dataset=dsmall`, then more `dataset.` keys). The model
takes only datasets of its own feature shape and label: another number of time points or components,
another label or SVD sign rule is refused. Writes evaluation_<name>.json into the run folder (pooled
and per-output R-squared, beside the ridge baseline and the label's ceiling for that dataset) and
nothing else there; the ridge baseline is fitted once per dataset into the statistics cache.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bionn.backend import add_option, current, select
from bionn.config.dataset import RANGE_KEYS, DatasetConfig, check_dataset, resolve_dataset
from bionn.config.errors import ConfigError, describe_omegaconf_error
from bionn.run_folder import EVALUATION_PREFIX, RunFolder, RunFolderError, now

# What a model's input and output depend on: a dataset differing here is refused.
MODEL_KEYS = ("simulation.n_times", "simulation.n_components", "simulation.svd_sign", "label")
_CHUNK = 4096


def evaluation_file(name: str) -> str:
    return f"{EVALUATION_PREFIX}{name}.json"


def other_dataset(trained_on: Any, overrides: list[str], config_dir: str | None = None) -> Any:
    """The run's dataset config with `overrides` applied (`dataset=<name>` first replaces it), checked."""
    base = OmegaConf.merge(OmegaConf.structured(DatasetConfig), trained_on)
    keys = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(
                f"override {item!r} is invalid: expected dataset=<name> or dataset.<key>=<value>"
            )
        if key == "dataset":
            base = resolve_dataset(value, config_dir)
        elif key.startswith("dataset."):
            keys.append(f"{key.removeprefix('dataset.')}={value}")
        else:
            raise ConfigError(f"override {item!r} is invalid: only dataset or dataset.<key> can change")
    try:
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(keys))
    except OmegaConfBaseException as err:
        raise ConfigError(
            f"overrides {' '.join(overrides)}: {describe_omegaconf_error(err, 'dataset.')}"
        ) from None
    check_dataset(cfg, source="bionn-evaluate overrides")
    return cfg


def check_fits(trained_on: Any, cfg: Any, run_dir: Path) -> None:
    """ConfigError naming each key whose value the model cannot take."""
    problems = []
    for key in MODEL_KEYS:
        model_value, given = OmegaConf.select(trained_on, key), OmegaConf.select(cfg, key)
        if str(getattr(model_value, "value", model_value)) != str(getattr(given, "value", given)):
            problems.append(f"dataset.{key} = {given} (the model of {run_dir} takes {model_value})")
    if problems:
        raise ConfigError("the model cannot take this dataset: " + "; ".join(problems))


def beyond_training(trained_on: Any, cfg: Any) -> list[str]:
    """Each parameter range of `cfg` that reaches outside the one the run trained on, as "k1 0.01-0.2
    (trained on 0.01-0.05)": there the network's figures are extrapolation (docs/accuracy.md)."""
    found = []
    for name in RANGE_KEYS:
        lo, hi = (OmegaConf.select(cfg, f"parameters.{name}_{end}") for end in ("min", "max"))
        was_lo, was_hi = (OmegaConf.select(trained_on, f"parameters.{name}_{end}") for end in ("min", "max"))
        if None not in (was_lo, was_hi) and (lo < was_lo or hi > was_hi):
            found.append(f"{name} {lo:g}-{hi:g} (trained on {was_lo:g}-{was_hi:g})")
    return found


def evaluate(
    run_dir: Path, overrides: list[str], which: str, name: str | None, config_dir=None
) -> tuple[str, dict]:
    """(file name, evaluation); nothing is written."""
    from bionn.baseline import cached_baseline, reference_scores
    from bionn.data.dataset import KineticsDataset
    from bionn.predict import output_names, run_dataset
    from bionn.rsquared import RSquaredSums
    from bionn.trained import check_usable, load_model

    folder = RunFolder(run_dir)
    info = check_usable(folder, which)
    trained_on = run_dataset(folder)
    cfg = other_dataset(trained_on, overrides, config_dir)
    check_fits(trained_on, cfg, run_dir)
    name = name or _name(overrides)
    if not re.fullmatch(r"[A-Za-z0-9_.=,+-]+", name):
        raise ConfigError(f"--name {name!r} is invalid: letters, digits and _ . = , + - only")
    ds = KineticsDataset(cfg, source="bionn-evaluate overrides")
    model = load_model(run_dir, which)
    sums = RSquaredSums(ds.n_labels)
    lo, hi = ds.splits["test"]
    for start in range(lo, hi, _CHUNK):
        batch = ds.generate(np.arange(start, min(hi, start + _CHUNK)), concentrations=False)
        sums.update(batch.labels, model.predict(batch.features[..., None], batch_size=256, verbose=0))
    cache = (info["config"].get("runtime") or {}).get("stats_cache_dir")
    cached_baseline(ds, cache, compute=True)  # fitted once per dataset, into the cache
    return evaluation_file(name), {
        "name": name,
        "overrides": overrides,
        "which": which,
        "split": "test",
        "samples": hi - lo,
        **sums.summary(),
        "outputs": output_names(ds.n_components),
        "reference": reference_scores(ds, cache),
        "beyond_training_ranges": beyond_training(trained_on, cfg),
        "dataset": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "created": now(),
    }


def _name(overrides: list[str]) -> str:
    parts = [
        o.removeprefix("dataset.").removeprefix("parameters.").removeprefix("simulation.") for o in overrides
    ]
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", ",".join(parts)) or "same"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bionn-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run folder")
    parser.add_argument("overrides", nargs="*", help="dataset=<name> and/or dataset.<key>=<value>")
    parser.add_argument(
        "--which", choices=("best", "last"), default="best", help="the weights (default best)"
    )
    parser.add_argument("--name", help="evaluation_<name>.json (default: from the overrides)")
    parser.add_argument("--config-dir", default=None, help="conf/ folder holding dataset/")
    # options anywhere: `RUN --config-dir DIR dataset=NAME` as well as `--config-dir DIR RUN dataset=NAME`
    add_option(parser)
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    from bionn.console import quiet_tensorflow

    args = parse_args(argv)
    quiet_tensorflow()  # before TensorFlow is imported
    try:
        select(args.backend)  # before Keras is imported
        current()  # the backend's own setup (under jax: Keras keeps TensorFlow out)
    except ConfigError as err:
        print(f"bionn-evaluate: error: {err}", file=sys.stderr)
        return 2
    from bionn.trained import ModelUnavailable

    try:
        file, result = evaluate(args.run_dir, args.overrides, args.which, args.name, args.config_dir)
    except (ModelUnavailable, RunFolderError, ConfigError, ValueError) as err:
        print(f"bionn-evaluate: error: {err} (nothing was written)", file=sys.stderr)
        return 2
    RunFolder(args.run_dir).write_json(file, result)
    ridge = result["reference"]["ridge_r2_mean"]
    print(
        f"wrote {args.run_dir / file}: test r2_mean {result['r2_mean']:.4f}, pooled {result['r_squared']:.4f}"
        f" (ridge r2_mean {ridge:.4f}) on {result['samples']} samples, {args.which} weights"
    )
    if result["beyond_training_ranges"]:
        print(
            "note: these ranges reach beyond those the network was trained on, so its figures there are "
            f"extrapolation: {'; '.join(result['beyond_training_ranges'])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
