"""The error every config check raises."""


class ConfigError(ValueError):
    """A config value that bionn cannot use; the message names file, key, value and what is allowed."""
