"""Which config file Hydra actually used for a group, so that error messages can name it.

A path built from the `name` key (`conf/dataset/<name>.yaml`) is wrong as soon as
the file was renamed, copied under another option name, or found through
`--config-dir` / `hydra.searchpath`. Hydra records the option it chose for every
group (`hydra.runtime.choices`) and the folders it searched, in search order
(`hydra.runtime.config_sources`): the first of those holding `<group>/<option>.yaml`
is the file it loaded. `source_of(key)` narrows that to one value: the command-line
override that set it, or the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _hydra_config(hydra_cfg: Any | None) -> Any | None:
    if hydra_cfg is not None:
        return hydra_cfg
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get()
    except (ImportError, ValueError):  # not inside a Hydra run (tests, scripts, bionn-import)
        return None


def config_file(group: str, hydra_cfg: Any | None = None) -> str:
    """The file Hydra composed `group` from (e.g. "/home/me/conf/dataset/dbig.yaml").

    hydra_cfg: a composed config's `hydra` node (compose(..., return_hydra_config=True).hydra);
    by default the running job's. Outside Hydra, or for a group composed from no file
    (a ConfigStore node), a description such as "the composed dataset config" instead.
    """
    hydra_cfg = _hydra_config(hydra_cfg)
    if hydra_cfg is None:
        return f"the composed {group} config"
    choice = hydra_cfg.runtime.choices.get(group)
    if choice is None:
        return f"the composed {group} config (no {group} option chosen)"
    for source in hydra_cfg.runtime.config_sources:
        if source.schema == "file":
            path = Path(source.path) / group / f"{choice}.yaml"
            if path.is_file():
                return str(path)
        elif source.schema == "pkg":
            path = _package_file(str(source.path), f"{group}/{choice}.yaml")
            if path is not None:
                return path
    return f"{group}={choice} (not a file in {_searched(hydra_cfg)})"


def source_of(key: str, hydra_cfg: Any | None = None) -> str:
    """Where the value at the dotted `key` (e.g. "dataset.parameters.k1_min", "model.layers.0") came
    from, for error messages: "the command-line override <override>" when an override of the running
    job set it (or a key above or within it), else "<file>:<line>" of the experiment file or the group's file
    that sets it, else the group's file (config_file). hydra_cfg: as for config_file."""
    hydra_cfg = _hydra_config(hydra_cfg)
    group, _, inner = key.partition(".")
    if hydra_cfg is None:
        return config_file(group)
    choices = hydra_cfg.runtime.choices
    for override in hydra_cfg.overrides.task:
        name = str(override).split("=", 1)[0].lstrip("+~")
        if name in choices or "/" in name:  # a config group's option: its file holds the values
            continue
        if key == name or key.startswith(f"{name}.") or name.startswith(f"{key}."):
            return f"the command-line override {override}"
    # An experiment (# @package _global_) is merged after the group's own file: it wins where it sets the key.
    candidates = [(config_file("experiment", hydra_cfg), key)] if choices.get("experiment") else []
    candidates.append((config_file(group, hydra_cfg), inner))
    for path, within in candidates:
        line = _line_of(path, within)
        if line is not None:
            return f"{path}:{line}"
    return config_file(group, hydra_cfg)


def _line_of(path: str, key: str) -> int | None:
    """The line (from 1) of the dotted `key` in the YAML file `path`; None if the file does not set it."""
    import yaml

    try:
        node = yaml.compose(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for part in key.split(".") if key else []:
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part]
            if not found:
                return None
            key_node, node = found[-1]
            line = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            return None
    return line


def _package_file(package: str, relative: str) -> str | None:
    from importlib.resources import files

    try:
        path = files(package.replace("/", ".")).joinpath(relative)
    except (ModuleNotFoundError, TypeError):
        return None
    return str(path) if path.is_file() else None


def _searched(hydra_cfg: Any) -> str:
    return ", ".join(f"{s.schema}://{s.path}" for s in hydra_cfg.runtime.config_sources)
