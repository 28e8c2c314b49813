"""Where bionn keeps what it can always recompute: $BIONN_CACHE_DIR, else $XDG_CACHE_HOME/bionn, else
~/.cache/bionn. Normalisation statistics and ridge baselines go in stats/ (bionn.data.stats), JAX's
compiled programs in jax/ (bionn.backend.select). Deleting the folder costs time, never a result."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("BIONN_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bionn"
