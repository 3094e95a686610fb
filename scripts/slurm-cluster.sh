#!/usr/bin/env bash
# A throwaway Slurm cluster on this one machine, for trainbench's tests: slurmctld and two slurmd
# "nodes" (node1, node2; 4 CPUs and 2 fake GPUs each) from Debian's packages, every file under DIR.
#
#   slurm-cluster.sh ensure-installed   install Debian's slurmctld slurmd slurm-client munge when missing
#                                       (needs root and apt-get); exit 1 when that is impossible
#   slurm-cluster.sh start DIR          write DIR/slurm.conf, start munged (unless one answers),
#                                       slurmctld and both slurmd; wait until both nodes are idle
#   slurm-cluster.sh stop DIR           cancel the cluster's jobs, stop every daemon started for DIR
#                                       (by its pid file), including munged if start launched it
#   slurm-cluster.sh env DIR            print the export line clients need (SLURM_CONF)
#
# Clients (sbatch, squeue, trainbench submit) find the cluster through SLURM_CONF=DIR/slurm.conf.
# Ports: slurmctld on $TB_SLURM_PORT (default 16817), the nodes on the next two.
# start adds "127.0.0.1 node1 node2" to /etc/hosts when the names do not resolve, so that a job's
# MASTER_ADDR (its first node's name) resolves for torch.distributed.
set -euo pipefail

NODES=(node1 node2)
PORT=${TB_SLURM_PORT:-16817}

die() {
    echo "slurm-cluster: $*" >&2
    exit 1
}

have_all() {
    local b
    for b in slurmctld slurmd sbatch srun squeue scontrol scancel munged munge; do
        command -v "$b" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$b" >/dev/null 2>&1 || return 1
    done
}

ensure_installed() {
    have_all && return 0
    [ "$(id -u)" = 0 ] || die "Slurm is not installed and installing it needs root"
    command -v apt-get >/dev/null 2>&1 || die "Slurm is not installed and there is no apt-get to install it"
    echo "slurm-cluster: installing slurmctld slurmd slurm-client munge from Debian" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2 ||
        die "apt-get install of Slurm failed"
    have_all || die "Slurm installed but its programs are not on PATH"
}

abs_dir() {
    [ -n "${1:-}" ] || die "missing DIR"
    mkdir -p "$1"
    (cd "$1" && pwd -P)
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    local dir=$1
    munge_works && return 0
    mkdir -p /run/munge
    chown munge:munge /run/munge
    runuser -u munge -- munged || die "munged did not start"
    local i
    for i in $(seq 50); do
        munge_works && break
        sleep 0.1
    done
    munge_works || die "munged started but does not answer"
    cp /run/munge/munged.pid "$dir/run/munged.pid" # ours to stop
}

write_conf() {
    local dir=$1 host=$2 gres=$3
    local first=$((PORT + 1)) last=$((PORT + ${#NODES[@]}))
    local node_gres=""
    [ "$gres" = yes ] && node_gres="Gres=gpu:2"
    cat >"$dir/slurm.conf" <<EOF
# Written by trainbench's scripts/slurm-cluster.sh: a test cluster, all state under $dir
ClusterName=trainbench
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
EnforcePartLimits=ALL
SlurmdParameters=config_overrides
MinJobAge=3600
KillWait=2
InactiveLimit=0
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
StateSaveLocation=$dir/state
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmdSpoolDir=$dir/spool/%n
SlurmdLogFile=$dir/log/slurmd-%n.log
NodeName=node[1-${#NODES[@]}] NodeHostname=$host NodeAddr=127.0.0.1 Port=[$first-$last] CPUs=4 RealMemory=4000 $node_gres State=UNKNOWN
PartitionName=debug Nodes=node[1-${#NODES[@]}] Default=YES MaxTime=INFINITE State=UP
EOF
    : >"$dir/gres.conf"
    [ "$gres" = yes ] && echo "Name=gpu File=$dir/dev/nvidia[0-1]" >"$dir/gres.conf"
    return 0
}

add_hosts() {
    local missing="" n
    for n in "${NODES[@]}"; do
        getent hosts "$n" >/dev/null 2>&1 || missing="$missing $n"
    done
    [ -z "$missing" ] && return 0
    [ -w /etc/hosts ] || die "node names$missing do not resolve and /etc/hosts is not writable"
    echo "127.0.0.1$missing # trainbench test Slurm cluster" >>/etc/hosts
}

wait_until() { # seconds, then a command; true once the command succeeds
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

nodes_idle() { [ "$(sinfo -h -t idle -o %D 2>/dev/null)" = "${#NODES[@]}" ]; }

start() {
    ensure_installed >/dev/null || die "Slurm is not installed"
    local dir host gres=yes
    dir=$(abs_dir "${1:-}")
    [ ! -e "$dir/run/slurmctld.pid" ] || die "a cluster already runs in $dir (stop it first)"
    mkdir -p "$dir"/{state,spool,log,run,dev}
    host=$(hostname -s)
    # Fake GPUs: gres needs character devices; without them the nodes simply have no GPUs.
    mknod "$dir/dev/nvidia0" c 1 3 2>/dev/null && mknod "$dir/dev/nvidia1" c 1 3 2>/dev/null || gres=no
    write_conf "$dir" "$host" "$gres"
    add_hosts
    start_munge "$dir"
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -i -f "$SLURM_CONF" || die "slurmctld did not start (see $dir/log/slurmctld.log)"
    wait_until 20 scontrol ping >/dev/null 2>&1 || die "slurmctld does not answer (see $dir/log/slurmctld.log)"
    local n
    for n in "${NODES[@]}"; do
        slurmd -N "$n" -f "$SLURM_CONF" || die "slurmd $n did not start (see $dir/log/slurmd-$n.log)"
    done
    wait_until 30 nodes_idle || die "nodes not idle after 30 s: $(sinfo 2>&1) (logs in $dir/log)"
    echo "export SLURM_CONF=$SLURM_CONF"
}

stop_pid_files() { # TERM every daemon at once (each takes ~2 s to exit), KILL what is left after 10 s
    local f pid pids=() i
    for f in "$@"; do
        [ -f "$f" ] || continue
        pid=$(cat "$f" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        rm -f "$f"
    done
    for i in $(seq 100); do
        alive=()
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
        [ ${#alive[@]} -eq 0 ] && return 0
        pids=("${alive[@]}")
        sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
}

stop() {
    local dir n
    dir=$(abs_dir "${1:-}")
    if [ -f "$dir/run/slurmctld.pid" ]; then
        export SLURM_CONF=$dir/slurm.conf
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            wait_until 10 bash -c '[ -z "$(squeue -h -o %i 2>/dev/null)" ]' || true
        fi
    fi
    local files=("$dir/run/slurmctld.pid" "$dir/run/munged.pid")
    for n in "${NODES[@]}"; do files+=("$dir/run/slurmd-$n.pid"); done
    stop_pid_files "${files[@]}"
}

case "${1:-}" in
ensure-installed) ensure_installed ;;
start) start "${2:-}" ;;
stop) stop "${2:-}" ;;
env) echo "export SLURM_CONF=$(abs_dir "${2:-}")/slurm.conf" ;;
*) die "usage: $0 ensure-installed | start DIR | stop DIR | env DIR" ;;
esac
