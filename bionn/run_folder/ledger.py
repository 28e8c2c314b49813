"""The config ledger (ledger.json): the fingerprint of everything that decides a run's result, so that
a run folder never mixes two configurations' training."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bionn import engine_version
from bionn.run_folder.names import LEDGER, PREVIOUS
from bionn.run_folder.records import ConfigChanged, RunFolderError, now, read_object

# The data engine's version sits in the ledger beside the config: other samples, another run.
ENGINE_KEY = "engine_version"
# Config keys that cannot change a run's result; a re-run may change them freely (docs/results.md).
LEDGER_EXCLUDED = (
    "training.verbose",
    "training.save_interval",
    "runtime.stats_cache_dir",
    "runtime.on_config_change",
    "logger",  # with every key under it: where metrics go besides the run folder
)

# Keys added after ledgers were first written, with the value every run before them had: at that value
# a key leaves the fingerprint as it was, so the folders of an older bionn still resume.
LEDGER_DEFAULTS = {"runtime.backend": "tensorflow"}


def ledger_excluded(key: str) -> bool:
    """A flattened or an override's key that cannot change a result: in LEDGER_EXCLUDED or under it."""
    return any(key == e or key.startswith(f"{e}.") for e in LEDGER_EXCLUDED)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"training.compile.learning_rate": 0.001, "model.layers.0.filters": 32, ...}; empty dicts and
    lists stay as values, so two configs differ exactly where a flattened key differs."""
    if isinstance(value, dict | list) and value:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        flat: dict[str, Any] = {}
        for key, sub in items:
            flat.update(flatten(sub, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def result_config(config: dict) -> dict[str, Any]:
    """The flattened config less LEDGER_EXCLUDED (and LEDGER_DEFAULTS at their value): everything that
    decides the result."""
    return {
        k: v
        for k, v in flatten(config).items()
        if not ledger_excluded(k) and (k not in LEDGER_DEFAULTS or LEDGER_DEFAULTS[k] != v)
    }


def fingerprint(config: dict, engine: int | None | str = "current") -> str:
    """Hash of the result-deciding config and the data engine's version: this bionn's ("current",
    bionn.engine_version), or a ledger's (None: a ledger of a bionn that did not record it)."""
    if engine == "current":
        engine = engine_version.ENGINE_VERSION
    result = result_config(config)
    if engine is not None:
        result[ENGINE_KEY] = engine
    text = json.dumps(result, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def config_differences(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every result-deciding key that differs; a missing key is None."""
    a, b = result_config(old), result_config(new)
    shown = [
        (k, a.get(k, LEDGER_DEFAULTS.get(k)), b.get(k, LEDGER_DEFAULTS.get(k)))
        for k in sorted(set(a) | set(b))
    ]
    return [(k, x, y) for k, x, y in shown if x != y]


def read_ledger(folder: Path) -> dict | None:
    """The ledger of the run folder `folder`, None without one; RunFolderError if it is not whole."""
    path = folder / LEDGER
    ledger = read_object(path)
    if ledger is None:
        return None
    if not isinstance(ledger.get("config"), dict) or not isinstance(ledger.get("fingerprint"), str):
        raise RunFolderError(f"{path}: needs a 'fingerprint' string and a 'config' object (hand-edited?)")
    if fingerprint(ledger["config"], ledger.get(ENGINE_KEY)) != ledger["fingerprint"]:
        raise RunFolderError(
            f"{path}: its fingerprint does not match its config (hand-edited?); "
            "restore it or run into another folder"
        )
    return ledger


def check_ledger(folder: Path, config: dict) -> dict | None:
    """The ledger of `folder` if it holds exactly `config`'s result-deciding keys, None if there is
    none; ConfigChanged naming every differing key otherwise."""
    ledger = read_ledger(folder)
    if ledger is None or ledger["fingerprint"] == fingerprint(config):
        return ledger
    lines = [
        f"  {k}: {_show(old)} (in the folder) -> {_show(new)} (this run)"
        for k, old, new in config_differences(ledger["config"], config)
    ]
    current = engine_version.ENGINE_VERSION
    if ledger.get(ENGINE_KEY) != current:
        lines.append(
            f"  data engine version (bionn.engine_version.ENGINE_VERSION): {_show(ledger.get(ENGINE_KEY))} "
            f"(in the folder) -> {current} (this bionn): the same config now generates other samples"
        )
    raise ConfigChanged(
        f"{folder} holds a run of another config ({folder / LEDGER}); refusing to mix them:\n"
        + "\n".join(lines)
        + "\nEither run into another folder (hydra.run.dir=..., or hydra.sweep.dir=... for a sweep), or "
        f"add runtime.on_config_change=move_aside to move the folder's contents into "
        f"{folder / PREVIOUS}/<n>/ (nothing is deleted) and start afresh."
    )


def ledger_record(config: dict, superseded: dict | None = None) -> dict:
    """ledger.json's content for `config`. superseded: the ledger it replaces, kept inside the new one
    (a config whose attempts never committed an epoch, bionn.train.claim)."""
    record = {
        "fingerprint": fingerprint(config),
        ENGINE_KEY: engine_version.ENGINE_VERSION,
        "excluded_keys": list(LEDGER_EXCLUDED),
        "created": now(),
        "config": {k: v for k, v in config.items()},
    }
    if superseded is not None:
        earlier = superseded.get("superseded") or []
        record["superseded"] = [*earlier, {k: v for k, v in superseded.items() if k != "superseded"}]
    return record


def _show(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value)
