"""Which config file Hydra actually used for a group, so that error messages can name it.

A path built from the `name` key (`conf/dataset/<name>.yaml`) is wrong as soon as
the file was renamed, copied under another option name, or found through
`--config-dir` / `hydra.searchpath`. Hydra records the option it chose for every
group (`hydra.runtime.choices`) and the folders it searched, in search order
(`hydra.runtime.config_sources`): the first of those holding `<group>/<option>.yaml`
is the file it loaded.
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


def _package_file(package: str, relative: str) -> str | None:
    from importlib.resources import files

    try:
        path = files(package.replace("/", ".")).joinpath(relative)
    except (ModuleNotFoundError, TypeError):
        return None
    return str(path) if path.is_file() else None


def _searched(hydra_cfg: Any) -> str:
    return ", ".join(f"{s.schema}://{s.path}" for s in hydra_cfg.runtime.config_sources)
