"""Compose the real conf/ with Hydra's compose API: what train.py would run, without running it.

For tests, scripts and notebooks: `compose_run("model=P", "debug=quick")` returns the
same config `python train.py model=P debug=quick` trains (the run schema registered,
train.yaml's defaults list, the overrides applied). `config_dir` (like `--config-dir`)
adds a folder to the search path; `with_hydra=True` keeps the `hydra` node, which
check_run and config_file use to name the files Hydra chose.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from bionn.config.dataset import find_config_dir
from bionn.config.schema import register_schemas


def compose_run(
    *overrides: str,
    config_dir: str | Path | None = None,
    with_hydra: bool = False,
    conf: str | Path | None = None,
) -> DictConfig:
    """The composed run config of train.yaml under `overrides`.

    conf: the primary config folder (default: the repository's conf/, see find_config_dir);
    config_dir: an extra folder searched like `--config-dir` does.
    """
    from hydra import compose, initialize_config_dir

    register_schemas()
    primary = Path(conf) if conf is not None else find_config_dir()
    extra = [f"hydra.searchpath=[file://{Path(config_dir).resolve()}]"] if config_dir else []
    with initialize_config_dir(config_dir=str(primary.resolve()), version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides, *extra], return_hydra_config=with_hydra)
