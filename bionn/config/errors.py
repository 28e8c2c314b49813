"""The error every config check raises, and OmegaConf's errors described the same way."""

from __future__ import annotations

import dataclasses

from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException


class ConfigError(ValueError):
    """A config value that bionn cannot use; the message names file, key, value and what is allowed."""


def describe_omegaconf_error(err: OmegaConfBaseException, prefix: str = "") -> str:
    """One line naming the full key, the problem and, for an unknown key, the allowed ones."""
    key = f"{prefix}{err.full_key}" if getattr(err, "full_key", None) else prefix.rstrip(".")
    message = f"{key}: {str(getattr(err, 'msg', err)).splitlines()[0]}"
    owner = getattr(err, "object_type", None)
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and dataclasses.is_dataclass(owner):
        message += f" (allowed keys: {', '.join(f.name for f in dataclasses.fields(owner))})"
    return message
