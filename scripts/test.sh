#!/usr/bin/env bash
# The whole test suite, as CI runs it: set up, then pytest (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest -q "$@"
