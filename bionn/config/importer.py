"""bionn-import: configurations.toml and data.toml to the Hydra config groups of conf/.

`bionn-import configurations.toml data.toml --out conf` writes model/<X>.yaml,
training/<X>.yaml and experiment/<X>.yaml per configuration [X] and
dataset/<D>.yaml per dataset [D]. Everything is validated before anything is
written; TOML values stay data (`${` is escaped, keys starting with `_` are
refused), and a file someone edited is only replaced with --force.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bionn.config.schema import (
    CompileConfig,
    ConfigError,
    DatasetConfig,
    RunConfig,
    TrainingConfig,
    check_dataset,
    check_run,
    describe_omegaconf_error,
    load_dataset_config,
)
from bionn.io import atomic_write_bytes

CONFIG_SECTIONS = ("structure", "compile", "dataset", "training")
DATASET_SECTIONS = ("parameters", "shape", "simulation")
# [X.dataset] keys: `training` names the dataset, `use_stats_of` goes to training/X.yaml.
DATASET_REF_KEYS = ("training", "use_stats_of")
TRAINING_KEYS = tuple(f.name for f in dataclasses.fields(TrainingConfig) if f.name not in ("name", "compile"))
COMPILE_KEYS = tuple(f.name for f in dataclasses.fields(CompileConfig))
# A name becomes a file name and a Hydra override value (experiment=<name>).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
GROUPS = ("model", "dataset", "training", "experiment")

Path_ = tuple[Any, ...]


# ---- reading TOML and its comments ----------------------------------------------------


@dataclass
class Comments:
    """Comment lines above, and trailing comments beside, a table, a key or a list element."""

    above: dict[Path_, list[str]] = field(default_factory=dict)
    trailing: dict[Path_, list[str]] = field(default_factory=dict)

    def of(self, path: Path_) -> tuple[list[str], list[str]]:
        return self.above.get(path, []), self.trailing.get(path, [])


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in text.split("."))


def _scan(code: str, depth: int, elem: int, expecting: bool) -> tuple[int, int, bool, str | None]:
    """Walk one line of TOML code: bracket depth, index of the outer list element, and the comment."""
    quote = None
    i = 0
    while i < len(code):
        ch = code[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            if depth == 1 and expecting:
                elem, expecting = elem + 1, False
        elif ch == "#":
            return depth, elem, expecting, code[i + 1 :].strip()
        elif ch in "[{":
            if depth == 1 and expecting:
                elem, expecting = elem + 1, False
            depth += 1
            if depth == 1:
                expecting = ch == "["
        elif ch in "]}":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 1:
            expecting = True
        elif not ch.isspace() and depth == 1 and expecting:
            elem, expecting = elem + 1, False
        i += 1
    return depth, elem, expecting, None


def scan_comments(text: str) -> Comments:
    """Best-effort map of TOML comments to the tables, keys and list elements they describe."""
    comments = Comments()
    table: Path_ = ()
    pending: list[str] = []
    depth, elem, expecting = 0, -1, False
    key_path: Path_ = ()
    last_trailing: Path_ | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if depth > 0:  # inside a multi-line list
            if stripped.startswith("#"):
                comments.above.setdefault(key_path + (elem + 1,), []).append(stripped[1:].strip())
                continue
            depth, elem, expecting, comment = _scan(stripped, depth, elem, expecting)
            if comment is not None:
                target = key_path if depth == 0 or elem < 0 else key_path + (elem,)
                comments.trailing.setdefault(target, []).append(comment)
            continue
        if not stripped:
            pending, last_trailing = [], None
            continue
        if stripped.startswith("#"):
            if line[0].isspace() and last_trailing is not None:  # continues the comment beside a key
                comments.trailing[last_trailing].append(stripped[1:].strip())
            else:
                pending.append(stripped[1:].strip())
            continue
        if stripped.startswith("["):
            _, _, _, comment = _scan(stripped, 0, -1, False)
            header = stripped.split("#", 1)[0].strip().strip("[]")
            path = table = _split_key(header)
        else:
            key, _, value = stripped.partition("=")
            path = key_path = table + _split_key(key)
            depth, elem, expecting, comment = _scan(value, 0, -1, False)
        if pending:
            comments.above[path] = pending
        pending, last_trailing = [], None
        if comment is not None:
            comments.trailing[path] = [comment]
            last_trailing = path
    return comments


@dataclass
class TomlFile:
    path: Path
    data: dict[str, Any]
    comments: Comments
    kind: str  # "configurations", "data" or "empty"


def read_toml(path: Path) -> TomlFile:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    kinds = set()
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: top-level key {name!r} = {table!r} is not a table; "
                "write each configuration or dataset as [name]"
            )
        if set(table) & set(CONFIG_SECTIONS):
            kinds.add("configurations")
        elif set(table) & set(DATASET_SECTIONS):
            kinds.add("data")
    if len(kinds) > 1:
        raise ConfigError(
            f"{path}: mixes configurations ({', '.join(CONFIG_SECTIONS)}) and datasets "
            f"({', '.join(DATASET_SECTIONS)}); keep them in configurations.toml and data.toml"
        )
    kind = kinds.pop() if kinds else ("empty" if not data else "configurations")
    return TomlFile(path, data, scan_comments(text), kind)


# ---- values: TOML data to inert OmegaConf data ---------------------------------------------


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
        out = {}
        for key, item in value.items():
            if key.startswith("_"):
                raise ConfigError(
                    f"{where}: key {key!r} starts with '_': such keys are reserved by Hydra/OmegaConf "
                    "(e.g. _target_) and are not imported"
                )
            out[key] = inert(item, f"{where}.{key}")
        return out
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


# ---- YAML text -------------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}


def yaml_str(text: str) -> str:
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    if text.isprintable():
        return "'" + text.replace("'", "''") + "'"
    out = []
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def yaml_value(value: Any) -> str:
    """A value in YAML flow style (one line): exact, deterministic and readable."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, str):
        return yaml_str(value)
    if isinstance(value, enum.Enum):  # a choice key: its name, as a user writes it
        return yaml_str(value.name)
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_str(k)}: {yaml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no YAML form for {value!r}")


class YamlWriter:
    """Lines of a YAML file, with the TOML comments above and beside the entries."""

    def __init__(self, comments: Comments, header: list[str]):
        self.comments = comments
        self.lines = [f"# {c}".rstrip() for c in header]

    def note(self, path: Path_, indent: str = "", trailing: bool = True) -> None:
        above, beside = self.comments.of(path)
        self.lines += [f"{indent}# {c}".rstrip() for c in above]
        if trailing:
            self.lines += [f"{indent}# {c}".rstrip() for c in beside]

    def entry(self, line: str, path: Path_ | None = None, indent: str = "") -> None:
        above, beside = self.comments.of(path) if path else ([], [])
        self.lines += [f"{indent}# {c}".rstrip() for c in above]
        self.lines.append(line + (f"  # {beside[0]}".rstrip() if beside else ""))
        self.lines += [f"{indent}# {c}".rstrip() for c in beside[1:]]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def generated_by(source: Path, table: str) -> list[str]:
    return [f"Generated by bionn-import from {source.name} [{table}]: edit the TOML and re-import."]


# ---- the import --------------------------------------------------------------------------


def import_dataset(name: str, table: dict[str, Any], src: TomlFile) -> tuple[Any, str]:
    where = f"{src.path} [{name}]"
    check_keys(table, DATASET_SECTIONS, where)
    data: dict[str, Any] = {"name": name}
    for sec in DATASET_SECTIONS:
        values = section(table, sec, where)
        sub_schema = type(getattr(DatasetConfig(), sec))
        check_keys(
            values, tuple(f.name for f in dataclasses.fields(sub_schema)), f"{src.path} [{name}.{sec}]"
        )
        data[sec] = inert(values, f"{src.path} [{name}.{sec}]")
    cfg = merged(DatasetConfig, data, where, "dataset.")
    check_dataset(cfg, source=where)
    header = src.comments.of((name,))
    out = YamlWriter(src.comments, header[0] + header[1] + generated_by(src.path, name))
    out.entry(f"name: {yaml_str(name)}")
    for sec in DATASET_SECTIONS:
        if not data[sec]:
            continue
        out.entry(f"{sec}:", (name, sec))
        for key in data[sec]:
            value = OmegaConf.to_container(cfg[sec], resolve=False)[key]
            out.entry(f"  {key}: {yaml_value(value)}", (name, sec, key), indent="  ")
    return cfg, out.text()


def check_layers(layers: Any, where: str) -> None:
    """Every layer a keras.layers class with known arguments that accepts the values."""
    from bionn.nn.model import layer_class, layer_kwargs

    if not isinstance(layers, list) or not layers:
        raise ConfigError(f"{where}: layers must be a non-empty list of {{ type = ..., ... }} tables")
    for i, spec in enumerate(layers):
        at = f"{where} layers[{i}]"
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise ConfigError(f"{at}: a layer is a table with a 'type' string, got {spec!r}")
        inert(spec, at)  # refuses '_' keys anywhere before Keras sees them
        cls = layer_class(spec["type"], at)
        valid = layer_kwargs(cls)
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        for key in kwargs:
            if key not in valid:
                raise ConfigError(
                    f"{at} ({spec['type']}): unknown argument {key!r}; valid: {', '.join(valid)}"
                )
        try:
            cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{at} ({spec['type']}): {err}") from None


def import_configuration(
    name: str, table: dict[str, Any], src: TomlFile, datasets: dict[str, Any], out_dir: Path
) -> dict[str, str]:
    from bionn.nn.model import check_compile

    where = f"{src.path} [{name}]"
    check_keys(table, CONFIG_SECTIONS, where)
    if "structure" not in table:
        raise ConfigError(f"{where}: missing [{name}.structure] with the layers of the network")
    structure = section(table, "structure", where)
    check_keys(structure, ("layers",), f"{src.path} [{name}.structure]")
    check_layers(structure.get("layers"), f"{src.path} [{name}.structure]")
    layers = inert(structure["layers"], f"{src.path} [{name}.structure] layers")

    compile_ = section(table, "compile", where)
    check_keys(compile_, COMPILE_KEYS, f"{src.path} [{name}.compile]")
    training = section(table, "training", where)
    check_keys(training, TRAINING_KEYS, f"{src.path} [{name}.training]")
    ref = section(table, "dataset", where)
    check_keys(ref, DATASET_REF_KEYS, f"{src.path} [{name}.dataset]")
    if "use_stats_of" in ref and "use_stats_of" in training:
        raise ConfigError(f"{where}: use_stats_of is set in both [{name}.dataset] and [{name}.training]")

    # (section, key, value) in the order of training/X.yaml: compile, [X.training], [X.dataset].
    train_data: dict[str, Any] = {"name": name}
    if compile_:
        train_data["compile"] = inert(compile_, f"{src.path} [{name}.compile]")
    sources = [(key, "training") for key in training] + [(key, "dataset") for key in ref if key != "training"]
    for key, sec in sources:
        train_data[key] = inert(table[sec][key], f"{src.path} [{name}.{sec}] {key}")
    train_cfg = merged(TrainingConfig, train_data, where, "training.")
    try:
        check_compile(train_cfg.compile)
    except ConfigError as err:
        raise ConfigError(f"{src.path} [{name}.compile]: {err}") from None

    dataset_name = None
    if "training" in ref:
        dataset_name = check_name(ref["training"], f"{src.path} [{name}.dataset] training")
        if dataset_name in datasets:
            dataset_cfg = datasets[dataset_name]
        elif (out_dir / "dataset" / f"{dataset_name}.yaml").is_file():
            dataset_cfg = load_dataset_config(out_dir / "dataset" / f"{dataset_name}.yaml")
        else:
            known = sorted(set(datasets) | {p.stem for p in (out_dir / "dataset").glob("*.yaml")})
            raise ConfigError(
                f"{src.path} [{name}.dataset]: training = {dataset_name!r} is neither a dataset of the "
                f"imported TOML nor in {out_dir / 'dataset'}; known: {', '.join(known) or 'none'}"
            )
    else:
        dataset_cfg = OmegaConf.structured(DatasetConfig)
    run = {"model": {"name": name, "layers": layers}, "dataset": dataset_cfg, "training": train_cfg}
    try:
        check_run(merged(RunConfig, run, where, ""))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None

    header = src.comments.of((name,))
    top = header[0] + header[1] + generated_by(src.path, name)

    model = YamlWriter(src.comments, top)
    model.entry(f"name: {yaml_str(name)}")
    model.note((name, "structure"))
    model.entry("layers:", (name, "structure", "layers"))
    for i, layer in enumerate(layers):
        model.entry(f"- {yaml_value(layer)}", (name, "structure", "layers", i))

    train = YamlWriter(src.comments, top)
    train.entry(f"name: {yaml_str(name)}")
    values = OmegaConf.to_container(train_cfg, resolve=False)
    if compile_:
        train.entry("compile:", (name, "compile"))
        for key in compile_:
            train.entry(f"  {key}: {yaml_value(values['compile'][key])}", (name, "compile", key), "  ")
    for key, sec in sources:
        train.entry(f"{key}: {yaml_value(values[key])}", (name, sec, key))

    exp = YamlWriter(src.comments, ["@package _global_", *top])
    exp.note((name, "dataset"))
    exp.entry("defaults:")
    exp.entry(f"  - override /model: {yaml_str(name)}", None, "  ")
    if dataset_name is not None:
        exp.entry(f"  - override /dataset: {yaml_str(dataset_name)}", (name, "dataset", "training"), "  ")
    exp.entry(f"  - override /training: {yaml_str(name)}", None, "  ")
    return {"model": model.text(), "training": train.text(), "experiment": exp.text()}


def plan_import(paths: list[Path], out_dir: Path) -> dict[Path, str]:
    """The text of every file the import writes (nothing is written); ConfigError on bad input."""
    files = [read_toml(Path(p)) for p in paths]
    plan: dict[Path, str] = {}
    datasets: dict[str, Any] = {}
    seen: dict[tuple[str, str], Path] = {}
    for src in files:
        for name in src.data:
            kind = "dataset" if src.kind == "data" else "configuration"
            check_name(name, f"{src.path} [{name}]")
            if (kind, name) in seen:
                raise ConfigError(
                    f"{src.path} [{name}]: {kind} {name!r} is also defined in {seen[kind, name]}"
                )
            seen[kind, name] = src.path
    for src in (f for f in files if f.kind == "data"):
        for name, table in src.data.items():
            datasets[name], plan[out_dir / "dataset" / f"{name}.yaml"] = import_dataset(name, table, src)
    for src in (f for f in files if f.kind == "configurations"):
        for name, table in src.data.items():
            for group, text in import_configuration(name, table, src, datasets, out_dir).items():
                plan[out_dir / group / f"{name}.yaml"] = text
    return dict(sorted(plan.items()))


def status(path: Path, text: str) -> str:
    if not path.exists():
        return "create"
    return "unchanged" if path.read_text(encoding="utf-8") == text else "differs"


def write_plan(plan: dict[Path, str]) -> None:
    for path, text in plan.items():
        atomic_write_bytes(path, text.encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bionn-import",
        description="Write Hydra configs (model/, dataset/, training/, experiment/) from TOML files.",
    )
    parser.add_argument("toml", nargs="+", type=Path, help="configurations.toml and/or data.toml")
    parser.add_argument("--out", type=Path, required=True, help="config dir to write into, e.g. conf")
    parser.add_argument("--force", action="store_true", help="overwrite files that differ (hand edits)")
    parser.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up noise off
    try:
        plan = plan_import(args.toml, args.out)
    except ConfigError as err:
        print(f"bionn-import: error: {err}", file=sys.stderr)
        return 2
    states = {path: status(path, text) for path, text in plan.items()}
    differs = [path for path, state in states.items() if state == "differs"]
    if args.dry_run:
        for path, state in states.items():
            print(f"{state:9} {path}")
            if state == "differs":
                old = path.read_text(encoding="utf-8").splitlines(keepends=True)
                new = plan[path].splitlines(keepends=True)
                sys.stdout.writelines(difflib.unified_diff(old, new, str(path), f"{path} (imported)"))
        return 0
    if differs and not args.force:
        print(
            "bionn-import: error: these files differ from what the import would write (edited by hand?); "
            "nothing was written. See the changes with --dry-run, overwrite them with --force:\n  "
            + "\n  ".join(str(p) for p in differs),
            file=sys.stderr,
        )
        return 1
    changed = {path: text for path, text in plan.items() if states[path] != "unchanged"}
    write_plan(changed)
    counts = {s: sum(1 for v in states.values() if v == s) for s in ("create", "differs", "unchanged")}
    print(
        f"bionn-import: {counts['create']} created, {counts['differs']} overwritten, "
        f"{counts['unchanged']} unchanged in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
