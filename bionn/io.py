"""Atomic file writes (bytes, JSON, NumPy archives, Matplotlib figures): a reader sees the old file or
the new one, never a torn one.

A written file gets the mode a plain `open(path, "w")` would give it (0666 less the umask), so that
the members of a lab's group can read each other's run folders when their umask lets them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name beside `path`, ending in the same name (for writers such as Keras that
    check suffixes); once the block succeeds the file is fsynced and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{path.name}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp made it 0600
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """This process's umask, read without changing it (Linux shows it in /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (briefly process-wide)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file beside `path`, fsynced and renamed over it on success."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` atomically to `path`; returns the path."""
    with atomic_open(path) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON (NumPy values and paths as plain ones) atomically; returns the path."""
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    return atomic_write_bytes(path, text.encode())


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write `arrays` as an .npz archive atomically; returns the path."""
    with atomic_open(path) as handle:
        np.savez(handle, **arrays)
    return Path(path)


def figure(**subplots_options: Any) -> tuple[Any, Any]:
    """A new Matplotlib figure and its axes, `plt.subplots(**subplots_options)`, on the Agg backend
    (files only, no display); write it with write_figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(**subplots_options)


def write_figure(fig: Any, path: str | os.PathLike, **savefig_options: Any) -> Path:
    """Write the Matplotlib figure `fig` atomically to `path` (a PNG at 100 dpi unless savefig_options,
    passed to fig.savefig, say otherwise) and close it, written or not. Returns the path."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, **{"format": "png", "dpi": 100, **savefig_options})
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
