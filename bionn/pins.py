"""Libraries whose private code bionn patches or copies, and the release line it was tested with.

A new release may change exactly what bionn patches or copies, and break multi-worker
training or the sweep launcher without an error. So pyproject.toml pins each of them to
one release line (tests/test_pins.py checks the pins and the installed versions against
TESTED_LINES), and the code that relies on them calls `require_tested` first, which
refuses another release with a message saying what to do. To move to a new release,
see docs/testing.md ("Updating a pinned library").
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

# distribution -> (tested release line "major.minor", what of it bionn relies on)
TESTED_LINES = {
    "keras": (
        "3.15",
        "bionn/backend/tensorflow.py patches two private functions of keras.src's TensorFlow trainer, "
        "bionn/backend/jax.py and jax_loop.py call Keras' private _symbolic_build and mark TensorFlow "
        "absent in keras.src.utils.module_utils, and bionn/config/layers.py reads keras.layers from its "
        "source files",
    ),
    "tensorflow": (
        "2.21",
        "bionn/backend/tensorflow.py uses the private tensorflow.python...slurm_cluster_resolver module",
    ),
    "hydra-submitit-launcher": (
        "1.2",
        "hydra_plugins/bionn_launcher/launcher.py copies part of BaseSubmititLauncher.launch()",
    ),
}
# Set to 1 to run with another release anyway (when testing an upgrade).
ALLOW_ENV = "BIONN_ALLOW_UNTESTED_VERSIONS"


class UntestedVersionError(RuntimeError):
    """An installed library is not the release line bionn's patched or copied code was tested with."""


def on_line(installed: str, line: str) -> bool:
    return installed == line or installed.startswith(f"{line}.")


def untested_message(distribution: str, installed: str) -> str:
    line, why = TESTED_LINES[distribution]
    return (
        f"{distribution} {installed} is installed, but bionn is tested with {distribution} {line}.* "
        f"({why}). Install the tested versions with `bash scripts/setup.sh` (requirements.lock), "
        f"or set {ALLOW_ENV}=1 to try this one anyway."
    )


def require_tested(distribution: str, installed: str | None = None) -> None:
    """Raise UntestedVersionError unless `distribution` is on its tested release line."""
    if installed is None:
        try:
            installed = version(distribution)
        except PackageNotFoundError:
            return  # not installed: the import that needs it fails on its own
    if not on_line(installed, TESTED_LINES[distribution][0]) and os.environ.get(ALLOW_ENV) != "1":
        raise UntestedVersionError(untested_message(distribution, installed))
