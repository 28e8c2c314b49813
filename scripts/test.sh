#!/usr/bin/env bash
# The test suite, as CI runs it: set up, lint and format check, start the local Slurm cluster,
# pytest, stop the cluster. `--full` (first argument) adds the full tier: the tests marked `full`,
# run after everything CI runs (docs/testing.md lists them, each with why it is not per commit).
# Other extra arguments go to pytest. As root with apt, the two-node Slurm of scripts/local_slurm/ is
# installed and started, and stopped again on exit (also when a test fails); the Slurm tests then
# must run (BIONN_REQUIRE_SLURM=1: a missing cluster fails them instead of skipping them).
# BIONN_SLURM_TESTS=0 leaves Slurm alone (its tests skip with the reason).
set -euo pipefail
cd "$(dirname "$0")/.."
full=0
if [ "${1:-}" = --full ]; then
  full=1
  shift
fi
started=$(date +%s)
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
# -rs: the output names every skipped test and why (CI expects none). Each pytest run appends its
# tests' seconds to .test-durations/durations.tsv; the 30 slowest are printed at the end.
durations=.test-durations/durations.tsv
mkdir -p .test-durations
: >"$durations"
if [ $# != 0 ]; then
  .venv/bin/python -m pytest -q -rs --durations-file="$durations" "$@"
  exit
fi
# The fast tier on two workers (pytest-xdist: its tests are independent and CPU-bound); the slow tier as
# two pytest processes at once: the tests of the Slurm cluster and the container image (marker `cluster`,
# set by tests/conftest.py) in order in one, because they share the cluster and some hold, lose or stop
# its nodes, and every other slow test in the other; then the fast tier once more in reverse order
# (tests/conftest.py: --reverse-order), so that a test that passes only after another one fails there;
# with --full, the full tier last, split the same way. Each part runs whatever the one before gave; the
# exit code is 1 if any failed.
status=0
part() {  # part NAME DURATIONS-FILE PYTEST-ARGS...: one pytest run, timed
  local name=$1 file=$2 t0
  shift 2
  t0=$(date +%s)
  .venv/bin/python -m pytest -q -rs --durations-file="$file" "$@" || status=1
  echo "test.sh: $name took $(($(date +%s) - t0)) s (since the start: $(($(date +%s) - started)) s)"
}
side_by_side() {  # side_by_side NAME MARKERS: its cluster tests and the others, two pytest processes at once
  local name=$1 markers=$2 t0 dir cluster
  t0=$(date +%s)
  dir=$(mktemp -d)
  .venv/bin/python -m pytest -q -rs -p no:cacheprovider -m "($markers) and cluster" --basetemp="$dir/cluster" \
    --durations-file="$dir/cluster.tsv" >"$dir/cluster.log" 2>&1 &
  cluster=$!
  .venv/bin/python -m pytest -q -rs -p no:cacheprovider -m "($markers) and not cluster" --basetemp="$dir/other" \
    --durations-file="$dir/other.tsv" >"$dir/other.log" 2>&1 || status=1
  wait "$cluster" || status=1
  echo "test.sh: $name, the tests of the cluster and the container image:"
  cat "$dir/cluster.log"
  echo "test.sh: $name, the others:"
  cat "$dir/other.log"
  cat "$dir/cluster.tsv" "$dir/other.tsv" >>"$durations" 2>/dev/null || true
  rm -rf "$dir"
  echo "test.sh: $name took $(($(date +%s) - t0)) s (since the start: $(($(date +%s) - started)) s)"
}
part "the fast tier" "$durations" -m "not slow" -n 2
side_by_side "the slow tier" "slow and not full"
part "the reverse fast pass" /dev/null -m "not slow" -n 2 -p no:cacheprovider --reverse-order
if [ $full = 1 ]; then
  side_by_side "the full tier" "full"
fi
echo "test.sh: the 30 slowest tests of this run (seconds: setup + call + teardown; all in $durations):"
sort -rn "$durations" | awk 'NR <= 30'  # awk reads it all: no SIGPIPE for pipefail
exit $status
