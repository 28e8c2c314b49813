#!/usr/bin/env bash
# scripts/local_slurm/node.sh - lose or restore one extra node of the local cluster (start.sh,
# SLURM_LOCAL_NODES >= 2), as a host that crashes and comes back:
#   node.sh lose bionn-node2      SIGKILL to every process on it (slurmd, slurmstepd, the jobs' tasks),
#                                 its namespaces and link gone; Slurm marks it down after SlurmdTimeout
#                                 and requeues the batch jobs it ran.
#   node.sh restore bionn-node2   the node again (fresh namespaces, its slurmd); waits until it is idle.
set -euo pipefail
source "$(dirname "$0")/nodes.sh"
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
action=${1:-}; name=${2:-}
k=${name#"$NODE_PREFIX"}
[[ "$name" == "$NODE_PREFIX"* && "$k" =~ ^[0-9]+$ && "$k" -ge 2 ]] \
  || { echo "usage: $0 lose|restore ${NODE_PREFIX}<k> (k >= 2: node 1 is this host); got '$*'" >&2; exit 2; }
grep -qE "^NodeName=$name " /etc/slurm/slurm.conf \
  || { echo "$name is no node of /etc/slurm/slurm.conf (nodes: $(sinfo -h -N -o %N | sort -u | tr '\n' ' '))" >&2; exit 2; }
case "$action" in
  lose) remove_extra_node "$name" ;;
  restore)
    ip netns list | grep -qw "^$name" && { echo "$name is up already" >&2; exit 0; }
    extra_node_up "$k"
    for _ in $(seq 300); do
      state=$(sinfo -h -n "$name" -o %T 2>/dev/null || true)
      [ "$state" = idle ] && exit 0
      case "$state" in down*|drain*) scontrol update nodename="$name" state=resume 2>/dev/null || true;; esac
      sleep 0.2
    done
    echo "$name is '$state' after 60 s; see /var/log/slurm/slurmd-$name.log" >&2; exit 1 ;;
  *) echo "usage: $0 lose|restore ${NODE_PREFIX}<k>" >&2; exit 2 ;;
esac
