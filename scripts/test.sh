#!/usr/bin/env bash
# The whole test suite, as CI runs it: set up, lint and format check, start the local Slurm cluster,
# pytest, stop the cluster.
# Extra arguments go to pytest. As root with apt, the two-node Slurm of scripts/local_slurm/ is
# installed and started, and stopped again on exit (also when a test fails); the Slurm tests then
# must run (BIONN_REQUIRE_SLURM=1: a missing cluster fails them instead of skipping them).
# BIONN_SLURM_TESTS=0 leaves Slurm alone (its tests skip with the reason).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
if [ "${BIONN_SLURM_TESTS:-1}" != 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  trap 'bash scripts/local_slurm/stop.sh' EXIT
  SLURM_LOCAL_NODES=${SLURM_LOCAL_NODES:-2} bash scripts/local_slurm/start.sh   # two hosts: tests/test_multinode.py
  export BIONN_REQUIRE_SLURM=1
else
  echo "test.sh: Slurm tests will skip (needs root and apt-get to start scripts/local_slurm/start.sh)" >&2
fi
# Container tests (tests/test_containers.py): as root with apt, install buildah and debootstrap; they
# then must run (BIONN_REQUIRE_CONTAINER=1). Leave them out with: scripts/test.sh -m "not container".
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  bash scripts/container/setup.sh
  export BIONN_REQUIRE_CONTAINER=1
fi
# -rs: the output names every skipped test and why (CI expects none); --durations: the slowest tests,
# so that a run's log says where the suite's time went.
.venv/bin/python -m pytest -q -rs --durations=25 "$@"
# The fast tier once more in reverse order (tests/conftest.py: --reverse-order), so a test that passes only
# after another one fails here. Only for the whole suite (no extra arguments); about as long as the fast tier.
if [ $# = 0 ]; then
  .venv/bin/python -m pytest -q -rs -m "not slow" -p no:cacheprovider --reverse-order
fi
