#!/usr/bin/env bash
# scripts/local_slurm/stop.sh - stop the cluster started by start.sh (same folder), whatever its size.
# Order matters: cancel jobs and let them finish, then the slurmds, then slurmctld, then slurmdbd.
# The extra nodes' namespaces (with any process left in them), their links, the bridge and their
# /etc/hosts lines are removed, also when a test run was killed and left them behind.
# (If slurmctld dies first, slurmstepd keeps retrying its "step complete" message and
#  slurmd's SIGTERM hangs until a slurmctld is back.)
# munged / MariaDB are stopped only if start.sh started them (see /run/slurm/started).
# Keeps packages, config, state and the accounting DB; start.sh starts it again.
# SLURM_LOCAL_PURGE=1 also deletes job state, spool and logs (not the packages or the DB).
set -uo pipefail
RUNDIR=/run/slurm
source "$(dirname "$0")/nodes.sh"
log() { echo "[local_slurm/stop] $*"; }
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }

running() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" | cut -c1)" != Z ]; }  # zombies count as dead
stop_pid() {  # stop_pid NAME PIDFILE : SIGTERM, wait up to 30 s, then SIGKILL (that PID only)
  local name=$1 pf=$2 p
  [ -s "$pf" ] || { log "$name: no pid file"; return 0; }
  p=$(cat "$pf")
  running "$p" || { log "$name: not running"; rm -f "$pf"; return 0; }
  kill "$p"
  for _ in $(seq 150); do running "$p" || break; sleep 0.2; done
  if running "$p"; then log "$name ($p) ignored SIGTERM for 30 s; SIGKILL"; kill -9 "$p"; fi
  rm -f "$pf"; log "$name ($p) stopped"
}

# 1. cancel every job and wait (max 30 s) until the queue is empty
if [ -s "$RUNDIR/slurmctld.pid" ] && running "$(cat "$RUNDIR/slurmctld.pid")"; then
  squeue -h -o %A | xargs -r scancel 2>/dev/null || true
  for _ in $(seq 150); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
  [ -z "$(squeue -h 2>/dev/null)" ] || log "warning: jobs still listed: $(squeue -h -o '%A %T' | tr '\n' ' ')"
fi

# 2. daemons, compute side first
for pf in "$RUNDIR"/slurmd-*.pid "$RUNDIR/slurmd.pid"; do   # one per node (slurmd.pid: before %n)
  [ -e "$pf" ] && stop_pid "$(basename "$pf" .pid)" "$pf"
done
remove_extra_nodes_from 2
hosts_lines 1
stop_pid slurmctld "$RUNDIR/slurmctld.pid"
stop_pid slurmdbd  "$RUNDIR/slurmdbd.pid"
if grep -qx mariadb "$RUNDIR/started" 2>/dev/null; then
  /etc/init.d/mariadb stop >/dev/null && log "MariaDB stopped"
fi
if grep -qx munged "$RUNDIR/started" 2>/dev/null; then
  stop_pid munged /run/munge/munged.pid
fi
rm -f "$RUNDIR/started"

if [ "${SLURM_LOCAL_PURGE:-0}" = 1 ]; then
  rm -rf /var/lib/slurm/slurmctld/* /var/lib/slurm/slurmd/* /var/log/slurm/*.log
  log "purged job state, spool and logs"
fi
left=$(pgrep -x slurmstepd || true)
[ -z "$left" ] || log "warning: slurmstepd processes still present: $left"
log "done. Start again with: bash $(cd "$(dirname "$0")" && pwd)/start.sh"
