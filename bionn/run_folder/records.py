"""Reading a run folder's JSON records: the error that names a bad record, the timestamp they carry,
and StateFolder, a folder whose state.json commits the files beside it (backup/, best/)."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from bionn.io import atomic_write_json
from bionn.run_folder.names import BACKUP_STATE


class RunFolderError(ValueError):
    """A record in a run folder that cannot be read or is not what bionn writes; names the file."""


class ConfigChanged(RunFolderError):
    """A run into a folder that holds another configuration's run."""


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def read_json(path: Path) -> Any:
    """The JSON value in `path`, None if it does not exist; RunFolderError if it cannot be parsed."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise RunFolderError(f"{path}: unreadable ({err})") from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise RunFolderError(f"{path}: not valid JSON ({err})") from None


def read_object(path: Path) -> dict | None:
    """The JSON object in `path`, None if it does not exist; RunFolderError for anything else."""
    value = read_json(path)
    if value is not None and not isinstance(value, dict):
        raise RunFolderError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


class StateFolder:
    """A folder of files and the state.json that commits them (backup/: the resume point; best/: the
    best validation epoch's weights). Its writers (bionn.nn's callbacks) name no run folder file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def state(self) -> dict | None:
        """The committed state, None before the first commit."""
        return read_object(self.path / BACKUP_STATE)

    def commit(self, state: dict) -> None:
        """Replace state.json atomically: the files it names are the folder's content from now on."""
        atomic_write_json(self.path / BACKUP_STATE, state)
