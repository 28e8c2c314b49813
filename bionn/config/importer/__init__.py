"""bionn-import: configurations.toml and data.toml to the Hydra config groups of conf/.

`bionn-import configurations.toml data.toml --out conf` writes model/<X>.yaml,
training/<X>.yaml and experiment/<X>.yaml per configuration [X] and
dataset/<D>.yaml per dataset [D] (docs/toml-import.md). Three steps, one module
each: reading (values and comments of the TOML), mapping (tables to checked config
data) and writing (YAML text, atomic writes). Everything is checked before anything
is written, and a file someone edited is only replaced with --force. It starts no
TensorFlow: layer types and arguments are checked by bionn.config.layers.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

from bionn.config.errors import ConfigError
from bionn.config.importer.mapping import check_name, escape_interpolations, map_configuration, map_dataset
from bionn.config.importer.reading import read_toml
from bionn.config.importer.writing import (
    dataset_yaml,
    experiment_yaml,
    model_yaml,
    status,
    training_yaml,
    write_plan,
    yaml_value,
)

__all__ = ["escape_interpolations", "main", "plan_import", "yaml_value"]


def plan_import(paths: list[Path], out_dir: Path) -> dict[Path, str]:
    """The text of every file the import writes (nothing is written); ConfigError on bad input."""
    files = [read_toml(Path(p)) for p in paths]
    _check_names(files)
    plan: dict[Path, str] = {}
    datasets: dict[str, Any] = {}
    for src in (f for f in files if f.kind == "data"):
        for name, table in src.data.items():
            imported = map_dataset(name, table, src)
            datasets[name] = imported.cfg
            plan[out_dir / "dataset" / f"{name}.yaml"] = dataset_yaml(imported)
    for src in (f for f in files if f.kind == "configurations"):
        for name, table in src.data.items():
            imported = map_configuration(name, table, src, datasets, out_dir)
            plan[out_dir / "model" / f"{name}.yaml"] = model_yaml(imported)
            plan[out_dir / "training" / f"{name}.yaml"] = training_yaml(imported)
            plan[out_dir / "experiment" / f"{name}.yaml"] = experiment_yaml(imported)
    return dict(sorted(plan.items()))


def _check_names(files: list) -> None:
    """Every table name is a valid file name, and no dataset or configuration is defined twice."""
    seen: dict[tuple[str, str], Path] = {}
    for src in files:
        kind = "dataset" if src.kind == "data" else "configuration"
        for name in src.data:
            check_name(name, f"{src.path} [{name}]")
            if (kind, name) in seen:
                raise ConfigError(
                    f"{src.path} [{name}]: {kind} {name!r} is also defined in {seen[kind, name]}"
                )
            seen[kind, name] = src.path


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        plan = plan_import(args.toml, args.out)
    except ConfigError as err:
        print(f"bionn-import: error: {err}", file=sys.stderr)
        return 2
    states = {path: status(path, text) for path, text in plan.items()}
    if args.dry_run:
        _show_changes(plan, states)
        return 0
    differs = [path for path, state in states.items() if state == "differs"]
    if differs and not args.force:
        print(
            "bionn-import: error: these files differ from what the import would write (edited by hand?); "
            "nothing was written. See the changes with --dry-run, overwrite them with --force:\n  "
            + "\n  ".join(str(p) for p in differs),
            file=sys.stderr,
        )
        return 1
    write_plan({path: text for path, text in plan.items() if states[path] != "unchanged"})
    counts = {s: sum(1 for v in states.values() if v == s) for s in ("create", "differs", "unchanged")}
    print(
        f"bionn-import: {counts['create']} created, {counts['differs']} overwritten, "
        f"{counts['unchanged']} unchanged in {args.out}"
    )
    return 0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bionn-import",
        description="Write Hydra configs (model/, dataset/, training/, experiment/) from TOML files.",
    )
    parser.add_argument("toml", nargs="+", type=Path, help="configurations.toml and/or data.toml")
    parser.add_argument("--out", type=Path, required=True, help="config dir to write into, e.g. conf")
    parser.add_argument("--force", action="store_true", help="overwrite files that differ (hand edits)")
    parser.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    return parser.parse_args(argv)


def _show_changes(plan: dict[Path, str], states: dict[Path, str]) -> None:
    for path, state in states.items():
        print(f"{state:9} {path}")
        if state == "differs":
            old = path.read_text(encoding="utf-8").splitlines(keepends=True)
            new = plan[path].splitlines(keepends=True)
            sys.stdout.writelines(difflib.unified_diff(old, new, str(path), f"{path} (imported)"))
