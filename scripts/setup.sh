#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install bionn with its test tools and JAX for CPU, at the exact
# versions CI tested (requirements.lock; docs/testing.md says how to refresh it). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    # Debian ships venv separately; install it when we may.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      rm -rf .venv
      apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null
      "$PYTHON" -m venv .venv
    else
      echo "setup.sh: '$PYTHON -m venv' failed; install python3-venv" >&2
      exit 1
    fi
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.lock
.venv/bin/python -m pip install -q --no-deps -e .
# The lock and pyproject.toml's ranges must agree: fails when they drift apart.
.venv/bin/python -m pip check
# The data engine's Numba kernels, compiled once into their cache (bionn.data.dataset.compile_kernels).
.venv/bin/python -c 'from bionn.config.compose import compose_run
from bionn.data.dataset import compile_kernels
compile_kernels(compose_run().dataset)'
