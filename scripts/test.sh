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
# so that a run's log says where the suite's time went. Extra arguments: one pytest run with them.
if [ $# != 0 ]; then
  .venv/bin/python -m pytest -q -rs "$@"
  exit
fi
# The fast tier on two workers (pytest-xdist: its tests are independent and CPU-bound), the slow tier
# in one process (its tests share the Slurm cluster, and some hold or stop its nodes); then the fast
# tier once more in reverse order (tests/conftest.py: --reverse-order), so that a test that passes only
# after another one fails there. Each part runs whatever the one before gave; the exit code is 1 if any
# failed.
status=0
.venv/bin/python -m pytest -q -rs -m "not slow" -n 2 --durations=10 || status=1
.venv/bin/python -m pytest -q -rs -m slow --durations=25 || status=1
.venv/bin/python -m pytest -q -rs -m "not slow" -n 2 -p no:cacheprovider --reverse-order || status=1
exit $status
