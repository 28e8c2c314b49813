"""The one validator of layer specs (`{type: <keras.layers class>, <its arguments>}`).

Used by bionn-import before it writes a model file, by check_run before a run
starts, and by the model builder (bionn.nn.model) before it constructs a layer.
It knows every class of `keras.layers` and its keyword arguments without importing
Keras (which would start TensorFlow, 5 s): it reads the installed Keras' public
`keras/layers/__init__.py` and each class's `__init__` from source. That layout
belongs to the Keras release line pyproject.toml pins (bionn.pins guards it);
tests/test_model.py checks this reading against the imported classes.
Whether a value is acceptable (e.g. `units: -1`) only Keras can tell, when the
builder constructs the layer.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError

from bionn.config.errors import ConfigError

# Keyword arguments every Keras layer accepts through its base class.
BASE_LAYER_KWARGS = ("name", "dtype", "trainable", "autocast")
# The block bionn adds to keras.layers (bionn.nn.blocks): y = x + f(x), f = its own list of layer specs;
# `repeat: n` stands for n such blocks in a row, each with its own weights (a depth a search can vary).
RESIDUAL = "Residual"
RESIDUAL_ARGUMENTS = ("layers", "repeat", "name")
# bionn.nn.blocks' time pooling over `bins` log-spaced bins (fast early kinetics keep their resolution).
LOG_TIME_POOLING = "LogTimePooling"
# Every layer bionn adds to keras.layers, with its arguments.
BIONN_LAYERS = {RESIDUAL: RESIDUAL_ARGUMENTS, LOG_TIME_POOLING: ("bins", "name")}


@functools.cache
def keras_layers() -> dict[str, tuple[str, ...]]:
    """Every class exported by keras.layers with the keyword arguments its __init__ names."""
    spec = importlib.util.find_spec("keras")
    if spec is None or spec.origin is None:
        raise ConfigError("Keras is not installed: cannot check layer specs")
    root = Path(spec.origin).parent
    exports = ast.parse((root / "layers" / "__init__.py").read_text(encoding="utf-8"))
    found: dict[str, tuple[str, ...]] = {}
    for node in exports.body:
        if not isinstance(node, ast.ImportFrom) or node.module is None:
            continue
        for alias in node.names:
            args = _init_arguments(root.parent / (node.module.replace(".", "/") + ".py"), alias.name)
            if args is not None:
                found[alias.asname or alias.name] = args
    return found


def _init_arguments(source: Path, class_name: str) -> tuple[str, ...] | None:
    """Keyword arguments of class_name.__init__ in source (None: no such class there)."""
    if not source.is_file():
        return None
    classes = [n for n in ast.parse(source.read_text(encoding="utf-8")).body if isinstance(n, ast.ClassDef)]
    cls = next((c for c in classes if c.name == class_name), None)
    if cls is None:
        return None
    init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
    named: list[str] = []
    if init is not None:  # without one (e.g. Add), the base's __init__(**kwargs) applies
        args = init.args
        named = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs) if a.arg != "self"]
    return (*named, *(k for k in BASE_LAYER_KWARGS if k not in named))


def check_layer_spec(spec: Any, where: str) -> dict[str, Any]:
    """A layer spec as a plain dict, checked: a mapping whose `type` is a keras.layers class
    and whose other keys are arguments of that class. ConfigError names `where` otherwise."""
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ConfigError(f"{where}: a layer is a mapping with a 'type' string, got {spec!r}")
    known = {**keras_layers(), **BIONN_LAYERS}
    type_name = spec["type"]
    if type_name not in known:
        close = difflib.get_close_matches(type_name, sorted(known), n=3)
        hint = (
            f"; did you mean {', '.join(close)}?"
            if close
            else f" (any class in keras.layers, or {', '.join(BIONN_LAYERS)})"
        )
        raise ConfigError(f"{where}: unknown layer type {type_name!r}{hint}")
    for key in spec:
        if key != "type" and key not in known[type_name]:
            raise ConfigError(
                f"{where} ({type_name}): unknown argument {key!r}; valid: {', '.join(known[type_name])}"
            )
    if type_name == RESIDUAL:
        spec["layers"] = check_layers(spec.get("layers"), f"{where}.layers")
        repeat = spec.get("repeat", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ConfigError(f"{where} ({RESIDUAL}): repeat = {repeat!r} must be a whole number >= 1")
    if type_name == LOG_TIME_POOLING:
        check_time_bins(spec.get("bins", 64), f"{where} ({LOG_TIME_POOLING})")
    return spec


def check_time_bins(bins: Any, where: str) -> None:
    """LogTimePooling's bins: a whole number >= 2 (at most the input's time points, known when built)."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ConfigError(
            f"{where}: bins = {bins!r} is invalid: the number of log-spaced time bins must be a whole "
            "number from 2 to the input's time points (501 on the default grid), e.g. 64"
        )


def check_layers(layers: Any, where: str) -> list[dict[str, Any]]:
    """A non-empty list of layer specs, each checked (`where` names the file and key); a Residual
    block with `repeat: n` becomes n blocks (named <name>_1 ... <name>_n when it has a name)."""
    if not isinstance(layers, list | ListConfig) or not layers:
        raise ConfigError(f"{where} must be a non-empty list of layers ({{type: Dense, units: 12}}, ...)")
    checked = []
    for i in range(len(layers)):
        spec = check_layer_spec(_resolved(layers, i, f"{where}[{i}]"), f"{where}[{i}]")
        repeat = spec.pop("repeat", 1) if spec["type"] == RESIDUAL else 1
        for n in range(1, repeat + 1):
            copy = dict(spec)
            if repeat > 1 and "name" in copy:
                copy["name"] = f"{copy['name']}_{n}"
            checked.append(copy)
    return checked


def _resolved(layers: Any, i: int, where: str) -> Any:
    """layers[i] with its ${...} references resolved; a reference to a missing key names the keys
    that exist there (a model family picks a layer by name: ${model.vars.fronts.${model.vars.front}})."""
    try:
        return layers[i]
    except InterpolationKeyError as err:
        missing = re.search(r"'([^']+)'", str(err))
        key = missing.group(1) if missing else "?"
        parent = key.rpartition(".")[0]
        node = OmegaConf.select(layers._get_root(), parent, default=None) if parent else None
        if not isinstance(node, DictConfig):
            raise ConfigError(f"{where}: refers to {key}, which does not exist") from None
        allowed = ", ".join(map(str, node))
        raise ConfigError(
            f"{where}: refers to {key}, which does not exist (allowed at {parent}: {allowed})"
        ) from None


def layer_arguments(spec: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of a checked spec (lists become tuples, as Keras expects shapes)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "type"}
