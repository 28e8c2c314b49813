#!/usr/bin/env bash
# scripts/local_slurm/start.sh - install (apt) and start a Slurm cluster of N nodes on this host,
# without systemd: munged + [MariaDB + slurmdbd] + slurmctld + one slurmd per node, partition "debug".
# Node 1 is this host; every further node k runs its slurmd in its own network and UTS namespace
# bionn-node<k> (hostname bionn-node<k>, address 127.0.2.<k>), joined to this host by a veth pair on the
# bridge bionn-br0 (127.0.2.1): nothing is routed beyond those links (docs/slurm.md, "The local test cluster").
# Idempotent: packages already installed and daemons already running are left alone.
# Tested on Debian 12 (Slurm 22.05.8, munge 0.5.15, MariaDB 10.11). Must run as root.
#
# Env knobs:
#   SLURM_LOCAL_NODES=1       nodes of the cluster (the test suite uses 2); 1 needs no namespaces.
#   SLURM_LOCAL_EXTRA_NODE_CPUS=1  CPUs each further node advertises: this host's cores are shared by
#                             all nodes, so the extra nodes add few job slots (node 1 keeps them all).
#   SLURM_LOCAL_ACCOUNTING=1  also install/start MariaDB + slurmdbd so `sacct` works.
#                             submitit polls `sacct` for job state; without it a job that
#                             dies without writing a result (scancel, OOM, node failure)
#                             leaves job.result() waiting forever. Set 0 to skip (~200 MB less).
#   SLURM_LOCAL_FAKE_GPUS=2   N>0: advertise N fake GPUs (GRES gpu, device files are symlinks to
#                             /dev/null) so --gpus-per-node=K jobs schedule and get CUDA_VISIBLE_DEVICES
#                             (bionn's hydra/launcher=slurm asks for 1 GPU per job by default); 0 = none.
#   SLURM_LOCAL_MAX_ARRAY_SIZE=3  jobs per array (MaxArraySize); small, so that a test sweep of 5 jobs
#                             is split into several arrays (tests/test_sweeps.py).
#   SLURM_LOCAL_PARTITION=debug   SLURM_LOCAL_CLUSTER=localcluster
#   SLURM_LOCAL_TIMEOUT=60        seconds to wait for the node to become idle
set -euo pipefail

ACCOUNTING=${SLURM_LOCAL_ACCOUNTING:-1}
PARTITION=${SLURM_LOCAL_PARTITION:-debug}
CLUSTER=${SLURM_LOCAL_CLUSTER:-localcluster}
WAIT=${SLURM_LOCAL_TIMEOUT:-60}
FAKE_GPUS=${SLURM_LOCAL_FAKE_GPUS:-2}
MAX_ARRAY=${SLURM_LOCAL_MAX_ARRAY_SIZE:-3}
NODES=${SLURM_LOCAL_NODES:-1}
EXTRA_CPUS=${SLURM_LOCAL_EXTRA_NODE_CPUS:-1}
STATE=/var/lib/slurm/slurmctld      # Debian's default dirs (created by the packages)
SPOOL=/var/lib/slurm/slurmd
LOGDIR=/var/log/slurm
RUNDIR=/run/slurm                   # pid files + record of what this script started
source "$(dirname "$0")/nodes.sh"    # the namespaces, links and names of the extra nodes
DB_PASS=slurmdbpass                 # local-only MariaDB user, CI use only

log() { echo "[local_slurm/start] $*"; }
die() { echo "[local_slurm/start] ERROR: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
running() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" | cut -c1)" != Z ]; }  # zombies count as dead
alive() { [ -s "$1" ] && running "$(cat "$1")"; }   # alive PIDFILE
[ "$(id -u)" = 0 ] || die "must run as root"
[[ "$NODES" =~ ^[1-9][0-9]?$ ]] && [ "$NODES" -le 200 ] || die "SLURM_LOCAL_NODES = '$NODES' is invalid: allowed 1 to 200"
[[ "$EXTRA_CPUS" =~ ^[1-9][0-9]*$ ]] || die "SLURM_LOCAL_EXTRA_NODE_CPUS = '$EXTRA_CPUS' is invalid: allowed a whole number >= 1"
T_ALL=$(now)

# ---- 1. packages -----------------------------------------------------------------
pkgs=(munge slurmctld slurmd slurm-client)
[ "$ACCOUNTING" = 1 ] && pkgs+=(slurmdbd mariadb-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  T=$(now); log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
  log "apt install took $(since "$T") s"
fi

T_D=$(now)
# ---- 2. dirs, hostname -------------------------------------------------------------
HOST=$(hostname -s)
NAMES=("$HOST")
for k in $(seq 2 "$NODES"); do NAMES+=("$(extra_node_name "$k")"); done
# One node: everything on 127.0.0.1. Several: node 1 and the controller on the bridge's address, which
# the other nodes reach; each node's own name resolves to its address in every namespace.
if [ "$NODES" = 1 ]; then CTLD_ADDR=127.0.0.1; else CTLD_ADDR=$BRIDGE_ADDR; fi
install -d -o slurm -g slurm -m 0755 "$STATE" "$SPOOL" "$LOGDIR" "$RUNDIR"
for name in "${NAMES[@]}"; do install -d -m 0755 "$SPOOL/$name"; done   # SlurmdSpoolDir=$SPOOL/%n
install -d -o munge -g munge -m 0755 /run/munge      # normally made by systemd; munged fails without it
# Daemons talk over 127.0.0.1 (NodeAddr / SlurmctldHost below), but slurmd still looks its own name up.
getent hosts "$HOST" >/dev/null || { echo "127.0.0.1 $HOST" >> /etc/hosts; log "added $HOST to /etc/hosts"; }

# ---- 3. munge -------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
  else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
fi
chown munge:munge /etc/munge /etc/munge/munge.key; chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged                  # daemonizes; pid in /run/munge/munged.pid
  echo munged >> "$RUNDIR/started"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || die "munged did not come up"
  log "munged started"
fi

# ---- 4. slurm.conf (rewritten only when it changes) ----------------------------------
read -r CPUS SOCKETS CORES THREADS MEM < <(slurmd -C | head -1 | tr ' ' '\n' | awk -F= '
  {v[$1]=$2} END {print v["CPUs"], v["SocketsPerBoard"]*v["Boards"], v["CoresPerSocket"], v["ThreadsPerCore"], int(v["RealMemory"]*0.9)}')
if [ "$ACCOUNTING" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost"
else
  ACCT="AccountingStorageType=accounting_storage/none"
fi
install -d -m 0755 /etc/slurm
GRES_NODE=""; GRES_TYPES=""
if [ "$FAKE_GPUS" -gt 0 ]; then
  install -d -m 0755 "$RUNDIR/fakegpu"
  for i in $(seq 0 $((FAKE_GPUS - 1))); do ln -sfn /dev/null "$RUNDIR/fakegpu/gpu$i"; done
  GRES_NODE=" Gres=gpu:$FAKE_GPUS"; GRES_TYPES="GresTypes=gpu"
  for name in "${NAMES[@]}"; do
    echo "NodeName=$name Name=gpu File=$RUNDIR/fakegpu/gpu[0-$((FAKE_GPUS - 1))]"
  done > /etc/slurm/gres.conf.new
else
  : > /etc/slurm/gres.conf.new
fi
if ! cmp -s /etc/slurm/gres.conf.new /etc/slurm/gres.conf 2>/dev/null; then GRES_CHANGED=1; else GRES_CHANGED=0; fi
NODE_LINES="NodeName=$HOST NodeAddr=$CTLD_ADDR CPUs=$CPUS Sockets=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM$GRES_NODE Weight=1 State=UNKNOWN"
for k in $(seq 2 "$NODES"); do  # a higher Weight: jobs fill node 1 first, as on a one-node cluster
  NODE_LINES+="
NodeName=${NAMES[k - 1]} NodeAddr=$(extra_node_addr "$k") NodeHostname=${NAMES[k - 1]} CPUs=$EXTRA_CPUS Sockets=1 CoresPerSocket=$EXTRA_CPUS ThreadsPerCore=1 RealMemory=$MEM$GRES_NODE Weight=2 State=UNKNOWN"
done
NEWCONF=$(cat <<EOF
# generated by bionn scripts/local_slurm/start.sh
ClusterName=$CLUSTER
SlurmctldHost=$HOST($CTLD_ADDR)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
# schedule batch jobs / requeued jobs within ~1-2 s instead of 3-60 s
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
$GRES_TYPES
ReturnToService=2
StateSaveLocation=$STATE
# %n: the node's name, so that the nodes' slurmd processes share this filesystem
SlurmdSpoolDir=$SPOOL/%n
SlurmctldPidFile=$RUNDIR/slurmctld.pid
SlurmdPidFile=$RUNDIR/slurmd-%n.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
$ACCT
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
MinJobAge=300
KillWait=5
# a node whose slurmd stops answering is down (and its batch jobs requeued) within ~20 s, not 5 min
SlurmdTimeout=15
InactiveLimit=0
MaxArraySize=$MAX_ARRAY
# refuse at submission a job the partition can never run (more nodes than it has), as many sites do;
# without it such a job waits forever with reason PartitionNodeLimit
EnforcePartLimits=ALL
$NODE_LINES
PartitionName=$PARTITION Nodes=$(IFS=,; echo "${NAMES[*]}") Default=YES MaxTime=INFINITE State=UP
EOF
)
CONF_CHANGED=$GRES_CHANGED
mv /etc/slurm/gres.conf.new /etc/slurm/gres.conf; chmod 0644 /etc/slurm/gres.conf
if [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$NEWCONF" ]; then
  install -d -m 0755 /etc/slurm
  printf '%s\n' "$NEWCONF" > /etc/slurm/slurm.conf; chmod 0644 /etc/slurm/slurm.conf
  CONF_CHANGED=1; log "wrote /etc/slurm/slurm.conf (nodes ${NAMES[*]}, CPUs $CPUS + $EXTRA_CPUS per extra node, RealMemory=$MEM, fake GPUs=$FAKE_GPUS)"
fi
# slurmctld refuses to start if StateSaveLocation belongs to another ClusterName
if [ -f "$STATE/clustername" ] && [ "$(cat "$STATE/clustername")" != "$CLUSTER" ]; then
  rm -f "$STATE/clustername"; log "removed stale $STATE/clustername"
fi

# ---- 5. accounting: MariaDB + slurmdbd -------------------------------------------------
if [ "$ACCOUNTING" = 1 ]; then
  if ! mysqladmin ping >/dev/null 2>&1; then
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    /etc/init.d/mariadb start >/dev/null                  # no systemd here; init script runs mysqld_safe
    echo mariadb >> "$RUNDIR/started"
    for _ in $(seq 100); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.2; done
    mysqladmin ping >/dev/null 2>&1 || die "MariaDB did not come up"
    log "MariaDB started"
  fi
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > /etc/slurm/slurmdbd.conf.new <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
LogFile=$LOGDIR/slurmdbd.log
PidFile=$RUNDIR/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  mv /etc/slurm/slurmdbd.conf.new /etc/slurm/slurmdbd.conf
  chown slurm:slurm /etc/slurm/slurmdbd.conf; chmod 0600 /etc/slurm/slurmdbd.conf   # slurmdbd insists
  if ! alive "$RUNDIR/slurmdbd.pid"; then
    slurmdbd
    for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/6819) 2>/dev/null && break; sleep 0.2; done
    log "slurmdbd started"
  fi
fi

# ---- 6. slurmctld + slurmd -------------------------------------------------------
if [ "$CONF_CHANGED" = 1 ]; then   # running daemons must re-read the new config: restart them
  for pf in "$RUNDIR"/slurmd-*.pid "$RUNDIR/slurmd.pid" "$RUNDIR/slurmctld.pid"; do   # slurmd.pid: before %n
    if alive "$pf"; then
      p=$(cat "$pf"); kill "$p"
      for _ in $(seq 100); do running "$p" || break; sleep 0.2; done
      log "stopped $(basename "$pf" .pid) (config changed)"
    fi
    rm -f "$pf"
  done
fi
remove_extra_nodes_from "$((NODES + 1))"   # namespaces of a larger cluster started before
hosts_lines "$NODES"
[ "$NODES" = 1 ] || bridge_up
alive "$RUNDIR/slurmctld.pid" || { slurmctld; log "slurmctld started"; }
alive "$RUNDIR/slurmd-$HOST.pid" || { slurmd -N "$HOST"; log "slurmd started (node $HOST)"; }
for k in $(seq 2 "$NODES"); do
  alive "$RUNDIR/slurmd-${NAMES[k - 1]}.pid" || { extra_node_up "$k"; log "slurmd started (node ${NAMES[k - 1]} at $(extra_node_addr "$k"))"; }
done

# ---- 7. wait for the nodes to be idle (and sacct to answer) --------------------------------
for name in "${NAMES[@]}"; do
  state=""
  for i in $(seq $((WAIT * 5))); do
    state=$(sinfo -h -n "$name" -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    case "$state" in down*|drain*|inval*) scontrol update nodename="$name" state=resume 2>/dev/null || true;; esac
    sleep 0.2
  done
  [ "$state" = idle ] || die "node $name is '$state' after ${WAIT}s; see $LOGDIR/slurmctld.log and $LOGDIR/slurmd-$name.log"
done
if [ "$ACCOUNTING" = 1 ]; then
  for _ in $(seq $((WAIT * 5))); do
    sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER" && sacct -n >/dev/null 2>&1 && break
    sleep 0.2
  done
  sacct -n >/dev/null || die "sacct does not work; see $LOGDIR/slurmdbd.log"
fi
log "daemons up in $(since "$T_D") s (script total $(since "$T_ALL") s)"
sinfo
cat <<EOF
[local_slurm/start] Slurm $(sinfo -V | awk '{print $2}') is running: nodes ${NAMES[*]}, partition $PARTITION, accounting=$ACCOUNTING.
[local_slurm/start] Logs: $LOGDIR/{slurmctld,slurmd-<node>,slurmdbd}.log   Try: srun -N $NODES hostname; sbatch --wrap hostname
[local_slurm/start] To stop: bash $(cd "$(dirname "$0")" && pwd)/stop.sh
EOF
