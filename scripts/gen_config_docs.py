"""Write docs/configuration.md from the config schema (bionn/config/schema.py and bionn/config/dataset.py).

    .venv/bin/python scripts/gen_config_docs.py           # rewrite docs/configuration.md
    .venv/bin/python scripts/gen_config_docs.py --check   # exit 1 if the committed file is stale

Every key of the run config with its type, default, allowed values and help. The help
of a field is the comment block directly above it in its dataclass; a field without
one shares the comment of the field above it (e.g. k1_max that of k1_min). Allowed values
of a choice key are its Enum's members, each with the comment above it. The options of
each config group are the files in conf/<group>/.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bionn.config import schema  # noqa: E402
from bionn.io import atomic_write_bytes  # noqa: E402

OUT = ROOT / "docs" / "configuration.md"
GROUPS = ("model", "dataset", "training", "logger", "experiment", "debug", "hparams_search", "hydra/launcher")
_FIELD = re.compile(r"^    (\w+)\s*:")
_MEMBER = re.compile(r"^    (\w+)\s*=")


def comments_above(cls: type, pattern: re.Pattern = _FIELD) -> dict[str, str]:
    """Name -> its comment in the class body: the block above it, else the one beside it, else the
    block of the name above (shared down a block without blank lines)."""
    found: dict[str, str] = {}
    block: list[str] = []
    last = ""
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
        elif not stripped:
            block, last = [], ""
        elif match := pattern.match(line):
            beside = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            last = " ".join(block) if block else beside or last
            found[match.group(1)] = last
            block = []
    return found


def type_name(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if inspect.isclass(annotation) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace(" | None", " or null")


def yaml_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):  # written by name in YAML and on the command line
        return value.name
    if isinstance(value, list):
        return "[" + ", ".join(yaml_text(v) for v in value) + "]"
    return str(value)


def default_of(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def allowed_values(annotation: Any) -> str:
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        notes = comments_above(annotation, _MEMBER)
        return "<br>".join(f"`{m.name}`: {cell(notes.get(m.name, ''))}".rstrip(": ") for m in annotation)
    if annotation is bool:
        return "`true`, `false`"
    return ""


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def section(cls: type, prefix: str, lines: list[str]) -> None:
    hints = typing.get_type_hints(cls)
    notes = comments_above(cls)
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        annotation = hints[f.name]
        if dataclasses.is_dataclass(annotation):
            nested.append((annotation, f"{prefix}{f.name}."))
            continue
        optional = [a for a in typing.get_args(annotation) if dataclasses.is_dataclass(a)]
        if optional:  # a part that is on when its option is chosen (a logger): its docstring says what
            rows.append(
                f"| `{prefix}{f.name}` | {optional[0].__name__} or null | `{yaml_text(default_of(f))}` | | "
                f"{cell(' '.join((inspect.getdoc(optional[0]) or '').split()))} |"
            )
            nested.append((optional[0], f"{prefix}{f.name}."))
            continue
        default = yaml_text(default_of(f))
        rows.append(
            f"| `{prefix}{f.name}` | {cell(type_name(annotation))} | `{cell(default)}` | "
            f"{allowed_values(annotation)} | {cell(notes.get(f.name, ''))} |"
        )
    if rows:
        lines += [f"### `{prefix.rstrip('.')}`", "", inspect.getdoc(cls) or "", ""]
        lines += ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|", *rows, ""]
    for sub, sub_prefix in nested:
        section(sub, sub_prefix, lines)


def group_options(conf: Path) -> list[str]:
    """The options of every group and the one conf/train.yaml's defaults list chooses."""
    from omegaconf import OmegaConf

    chosen = {}
    for entry in OmegaConf.to_container(OmegaConf.load(conf / "train.yaml"))["defaults"]:
        if isinstance(entry, dict):
            (key, value), *_ = entry.items()
            chosen[key.removeprefix("optional ")] = value
    lines = ["## Config groups and their options", ""]
    lines += ["| group | options (files in `conf/<group>/`) | chosen by `train.yaml` |", "|---|---|---|"]
    for group in GROUPS:
        names = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        default = chosen.get(group)
        default = "none (Hydra's basic launcher)" if group == "hydra/launcher" else default or "none"
        lines.append(f"| `{group}` | {', '.join(names)} | {default} |")
    return [*lines, ""]


def render(conf: Path = ROOT / "conf") -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by scripts/gen_config_docs.py from bionn/config/ (schema, dataset): do not edit;",
        "     change the schema (its dataclasses and the comments above their fields) and regenerate. -->",
        "",
        "Every key of the run config that `python train.py` composes from `conf/train.yaml`, with the",
        "schema's default. A YAML file or a command-line override sets what differs; a wrong type, an",
        "unknown key or a value outside `allowed` stops the run before any work, naming the file, the",
        "key, the value and what is allowed. Print a composed config with",
        "`python train.py --cfg job [overrides]`.",
        "",
        *group_options(conf),
        "## Keys",
        "",
    ]
    for f in dataclasses.fields(schema.RunConfig):
        section(typing.get_type_hints(schema.RunConfig)[f.name], f"{f.name}.", lines)
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run `.venv/bin/python scripts/gen_config_docs.py`", file=sys.stderr)
            return 1
        return 0
    atomic_write_bytes(OUT, text.encode("utf-8"))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
