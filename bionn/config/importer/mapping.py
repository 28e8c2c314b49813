"""Mapping: TOML tables to checked config data (nothing is written here).

TOML values stay data: `${` is escaped so OmegaConf never interpolates it, keys
starting with `_` are refused, and every value goes through the schema and the
same checks a run makes (`check_dataset`, `check_run`, the layer validator).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bionn.config.checks import check_run
from bionn.config.dataset import DatasetConfig, check_dataset, load_dataset_config
from bionn.config.errors import ConfigError, describe_omegaconf_error
from bionn.config.importer.reading import CONFIG_SECTIONS, DATASET_SECTIONS, TomlFile
from bionn.config.layers import check_layers
from bionn.config.schema import CompileConfig, RunConfig, TrainingConfig

# [X.dataset] keys: `training` names the dataset, `use_stats_of` goes to training/X.yaml.
DATASET_REF_KEYS = ("training", "use_stats_of")
TRAINING_KEYS = tuple(f.name for f in dataclasses.fields(TrainingConfig) if f.name not in ("name", "compile"))
COMPILE_KEYS = tuple(f.name for f in dataclasses.fields(CompileConfig))
# A name becomes a file name and a Hydra override value (experiment=<name>).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass
class ImportedDataset:
    name: str
    src: TomlFile
    cfg: Any  # the checked DatasetConfig
    given: dict[str, list[str]]  # section -> the keys the TOML sets, in its order


@dataclass
class ImportedConfiguration:
    name: str
    src: TomlFile
    layers: list[Any]
    training: Any  # the checked TrainingConfig
    compile_keys: list[str]  # the [X.compile] keys given
    training_keys: list[tuple[str, str]]  # (key, TOML section) of training/X.yaml's top level
    dataset: str | None  # [X.dataset] training = "D"


# ---- values ------------------------------------------------------------------------------


def check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"{where}: name {name!r} is not a valid config name: use letters, digits, '_' and '-', "
            "starting with a letter or digit, at most 64 characters (it becomes a file name)"
        )
    return name


def escape_interpolations(text: str) -> str:
    """OmegaConf escaping of `${`: n backslashes before it become 2n+1, so the string stays literal."""
    return re.sub(r"(\\*)\$\{", lambda m: "\\" * (2 * len(m.group(1)) + 1) + "${", text)


def inert(value: Any, where: str) -> Any:
    """A TOML value as OmegaConf data that never resolves, instantiates or reads anything."""
    if isinstance(value, dict):
        for key in value:
            if key.startswith("_"):
                raise ConfigError(
                    f"{where}: key {key!r} starts with '_': such keys are reserved by Hydra/OmegaConf "
                    "(e.g. _target_) and are not imported"
                )
        return {key: inert(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [inert(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, str):
        if value == "???":
            raise ConfigError(f"{where}: the string '???' means 'missing' to OmegaConf; use another value")
        return escape_interpolations(value)
    if isinstance(value, bool | int | float):
        return value
    raise ConfigError(f"{where}: {type(value).__name__} values ({value!r}) are not supported")


def check_keys(table: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed: {', '.join(allowed)}")


def section(table: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} = {value!r} must be a table (a [name.{key}] section)")
    return value


def merged(schema: type, data: dict[str, Any], where: str, prefix: str) -> Any:
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), data)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: {describe_omegaconf_error(err, prefix)}") from None


# ---- tables ------------------------------------------------------------------------------


def map_dataset(name: str, table: dict[str, Any], src: TomlFile) -> ImportedDataset:
    where = f"{src.path} [{name}]"
    check_keys(table, DATASET_SECTIONS, where)
    data: dict[str, Any] = {"name": name}
    for sec in DATASET_SECTIONS:
        values = section(table, sec, where)
        allowed = tuple(f.name for f in dataclasses.fields(type(getattr(DatasetConfig(), sec))))
        check_keys(values, allowed, f"{src.path} [{name}.{sec}]")
        data[sec] = inert(values, f"{src.path} [{name}.{sec}]")
    cfg = merged(DatasetConfig, data, where, "dataset.")
    check_dataset(cfg, source=where)
    return ImportedDataset(name, src, cfg, {sec: list(data[sec]) for sec in DATASET_SECTIONS})


def map_configuration(
    name: str, table: dict[str, Any], src: TomlFile, datasets: dict[str, Any], out_dir: Path
) -> ImportedConfiguration:
    """[X] to model, training and experiment data, checked as the run that composes them."""
    where = f"{src.path} [{name}]"
    check_keys(table, CONFIG_SECTIONS, where)
    layers = _layers(name, table, src)
    training, compile_keys, training_keys = _training(name, table, src)
    dataset_name, dataset_cfg = _dataset_reference(name, table, src, datasets, out_dir)
    run = {"model": {"name": name, "layers": layers}, "dataset": dataset_cfg, "training": training}
    try:
        check_run(merged(RunConfig, run, where, ""))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return ImportedConfiguration(name, src, layers, training, compile_keys, training_keys, dataset_name)


def _layers(name: str, table: dict[str, Any], src: TomlFile) -> list[Any]:
    if "structure" not in table:
        raise ConfigError(f"{src.path} [{name}]: missing [{name}.structure] with the layers of the network")
    structure = section(table, "structure", f"{src.path} [{name}]")
    where = f"{src.path} [{name}.structure]"
    check_keys(structure, ("layers",), where)
    layers = inert(structure.get("layers"), f"{where} layers")
    check_layers(layers, f"{where} layers")
    return layers


def _training(
    name: str, table: dict[str, Any], src: TomlFile
) -> tuple[Any, list[str], list[tuple[str, str]]]:
    """training/X.yaml's data: compile, then [X.training], then [X.dataset] use_stats_of."""
    where = f"{src.path} [{name}]"
    compile_ = section(table, "compile", where)
    check_keys(compile_, COMPILE_KEYS, f"{src.path} [{name}.compile]")
    training = section(table, "training", where)
    check_keys(training, TRAINING_KEYS, f"{src.path} [{name}.training]")
    ref = section(table, "dataset", where)
    check_keys(ref, DATASET_REF_KEYS, f"{src.path} [{name}.dataset]")
    if "use_stats_of" in ref and "use_stats_of" in training:
        raise ConfigError(f"{where}: use_stats_of is set in both [{name}.dataset] and [{name}.training]")
    data: dict[str, Any] = {"name": name}
    if compile_:
        data["compile"] = inert(compile_, f"{src.path} [{name}.compile]")
    keys = [(key, "training") for key in training] + [(key, "dataset") for key in ref if key != "training"]
    for key, sec in keys:
        data[key] = inert(table[sec][key], f"{src.path} [{name}.{sec}] {key}")
    return merged(TrainingConfig, data, where, "training."), list(compile_), keys


def _dataset_reference(
    name: str, table: dict[str, Any], src: TomlFile, datasets: dict[str, Any], out_dir: Path
) -> tuple[str | None, Any]:
    """The dataset [X.dataset] training = "D" names: imported now, or already in out_dir/dataset/."""
    ref = section(table, "dataset", f"{src.path} [{name}]")
    if "training" not in ref:
        return None, OmegaConf.structured(DatasetConfig)
    where = f"{src.path} [{name}.dataset]"
    dataset_name = check_name(ref["training"], f"{where} training")
    existing = out_dir / "dataset" / f"{dataset_name}.yaml"
    if dataset_name in datasets:
        return dataset_name, datasets[dataset_name]
    if existing.is_file():
        return dataset_name, load_dataset_config(existing)
    known = sorted(set(datasets) | {p.stem for p in (out_dir / "dataset").glob("*.yaml")})
    raise ConfigError(
        f"{where}: training = {dataset_name!r} is neither a dataset of the imported TOML nor in "
        f"{out_dir / 'dataset'}; known: {', '.join(known) or 'none'}"
    )
