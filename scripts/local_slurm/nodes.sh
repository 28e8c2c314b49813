# scripts/local_slurm/nodes.sh - the extra nodes of the local cluster (sourced by start.sh and stop.sh).
# Node k >= 2 is the network + UTS namespace bionn-node<k>: hostname bionn-node<k>, address 127.0.2.<k> on
# the namespace's end of a veth pair whose other end is on the bridge bionn-br0 (127.0.2.1, node 1's and the
# controller's address). Addresses in 127.0.0.0/8 (with route_localnet on these links) exist nowhere else
# and nothing forwards them: the nodes reach one another and no other host.
# Names resolve the same in every namespace: /etc/hosts lists the extra nodes (lines marked below), and
# inside a node /etc/netns/<node>/hosts is mounted over /etc/hosts, where this host's own name must mean
# the bridge address, not the node's loopback.

NODE_PREFIX=bionn-node
BRIDGE=bionn-br0
NET=127.0.2                  # /24: the bridge is .1, node k is .k
BRIDGE_ADDR=$NET.1
HOSTS_MARK="# bionn local_slurm node"

extra_node_name() { echo "$NODE_PREFIX$1"; }
extra_node_addr() { echo "$NET.$1"; }

localnet() {  # localnet [NETNS] IFACE : accept 127.0.0.0/8 addresses on this link; no IPv6 on it at all
  local in=()
  [ $# = 2 ] && in=(ip netns exec "$1") && shift
  "${in[@]}" sysctl -qw "net.ipv4.conf.$1.route_localnet=1" "net.ipv6.conf.$1.disable_ipv6=1"
}

bridge_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$BRIDGE_ADDR/24" dev "$BRIDGE"
  fi
  localnet "$BRIDGE"
  ip link set "$BRIDGE" up
}

hosts_lines() {  # hosts_lines N : /etc/hosts lists extra nodes 2..N (none for N = 1); rewritten in place,
  local rest k   # since /etc/hosts may be a bind mount
  rest=$(grep -vF "$HOSTS_MARK" /etc/hosts || true)
  { printf '%s\n' "$rest"
    for k in $(seq 2 "$1"); do echo "$(extra_node_addr "$k") $(extra_node_name "$k") $HOSTS_MARK"; done
  } > /etc/hosts.bionn.new
  cat /etc/hosts.bionn.new > /etc/hosts && rm -f /etc/hosts.bionn.new
}

extra_node_up() {  # extra_node_up K : a fresh namespace for node K and its slurmd in it (after hosts_lines)
  local k=$1 name addr
  name=$(extra_node_name "$k"); addr=$(extra_node_addr "$k")
  remove_extra_node "$name"
  ip netns add "$name"
  ip link add "bionn-v$k" type veth peer name eth0 netns "$name"
  localnet "bionn-v$k"
  ip link set "bionn-v$k" master "$BRIDGE" up
  ip netns exec "$name" ip link set lo up
  ip netns exec "$name" ip addr add "$addr/24" dev eth0
  localnet "$name" eth0
  ip netns exec "$name" ip link set eth0 up
  install -d -m 0755 "/etc/netns/$name"
  { echo "127.0.0.1 localhost"; echo "$BRIDGE_ADDR $(hostname -s) $(hostname)"
    grep -F "$HOSTS_MARK" /etc/hosts; } > "/etc/netns/$name/hosts"
  # Its slurmd (which forks into the background) in the node's network namespace, its own UTS namespace
  # (hostname) and a mount namespace that shows it the node's hosts file. Not `ip netns exec`: that
  # remounts /sys, which hides the cgroup filesystem slurmd needs.
  nsenter --net="/run/netns/$name" unshare --uts --mount --propagation slave sh -c \
    "mount --bind /etc/netns/$name/hosts /etc/hosts && hostname $name && exec slurmd -N $name"
}

remove_extra_node() {  # remove_extra_node NAME : every process in its namespace killed, then the namespace
  local name=$1 pids
  if ip netns list | grep -qw "^$name"; then
    pids=$(ip netns pids "$name" || true)
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    for _ in $(seq 50); do [ -z "$(ip netns pids "$name" 2>/dev/null)" ] && break; sleep 0.1; done
    ip netns del "$name"   # takes the veth pair with it
  fi
  rm -rf "/etc/netns/$name"
  rm -f "/run/slurm/slurmd-$name.pid"
}

remove_extra_nodes_from() {  # remove_extra_nodes_from K : nodes K, K+1, ... (all extra nodes: 2)
  local name k
  for name in $(ip netns list | awk '{print $1}' | grep -E "^$NODE_PREFIX[0-9]+$" || true); do
    k=${name#"$NODE_PREFIX"}
    [ "$k" -ge "$1" ] || continue
    remove_extra_node "$name"
  done
  if [ "$1" -le 2 ] && ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
}
