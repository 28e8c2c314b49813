"""Where a run's result came from: bionn's version, the data engine's version, the code commit, libraries.

Written into info.json and into every attempt record (bionn.run_folder), so a model found on disk says
which code and which data made it, and on which backend (runtime.backend: bionn.backend.select).
Reads package metadata and git only: no TensorFlow, JAX or Numba import.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from bionn.engine_version import ENGINE_VERSION

# The libraries whose versions decide a result (distribution names), and those of each backend.
LIBRARIES = ("keras", "numpy", "numba", "scipy", "hydra-core", "omegaconf", "submitit")
BACKEND_LIBRARIES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib")}


def bionn_version() -> str:
    return metadata.version("bionn")


def provenance() -> dict:
    """{"bionn", "engine_version", "git": {"commit", "dirty"} or None, "python", "backend",
    "libraries": {...}}: the backend's own libraries beside the common ones."""
    backend = keras_backend()
    libraries = (*BACKEND_LIBRARIES.get(backend, ()), *LIBRARIES)
    return {**_code(), "backend": backend, "libraries": {name: _version(name) for name in libraries}}


def keras_backend() -> str:
    """The backend Keras runs on in this process, or will once imported: KERAS_BACKEND, which
    bionn.backend.select sets (Keras' default, tensorflow, without it)."""
    keras = sys.modules.get("keras")
    if keras is not None:
        return keras.backend.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


@functools.cache
def _code() -> dict:
    return {
        "bionn": bionn_version(),
        "engine_version": ENGINE_VERSION,
        "git": git_state(Path(__file__).resolve().parent.parent),
        "python": platform.python_version(),
    }


def git_state(folder: Path) -> dict | None:
    """The commit checked out at `folder` and whether tracked files differ from it; None outside a
    checkout (an installed wheel) or without git."""
    try:
        commit = _git(folder, "rev-parse", "HEAD")
        changed = _git(folder, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "dirty": bool(changed)}


def _git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.strip()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
