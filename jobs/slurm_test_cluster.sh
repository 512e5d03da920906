#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests/test_jobs_slurm.py (root only).
#
#   bash jobs/slurm_test_cluster.sh start DIR [CPUS]   munged + slurmctld + slurmd
#   bash jobs/slurm_test_cluster.sh stop DIR           ends the daemons it started
#
# DIR holds slurm.conf, the state, logs and pid files; clients use it through
# SLURM_CONF=DIR/slurm.conf. Needs Debian's slurm-wlm and munge (jobs/install.sh --tests).
# The node is this host (`hostname -s`) at 127.0.0.1 with CPUS CPUs (default 2);
# processes are tracked by linuxproc (no cgroups needed), no accounting. A munged is
# started on a private socket in DIR, so a munged of the machine is left alone.
set -euo pipefail
action=${1:?usage: slurm_test_cluster.sh start|stop DIR [CPUS]}
dir=$(realpath -m "${2:?directory}")
cpus=${3:-2}
host=$(hostname -s)

stop_pid() {  # end the daemon whose pid file is $1, if it still runs
    [ -f "$1" ] || return 0
    local pid; pid=$(cat "$1")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

if [ "$action" = stop ]; then
    stop_pid "$dir/slurmd.pid"
    stop_pid "$dir/slurmctld.pid"
    stop_pid "$dir/munged.pid"
    exit 0
fi
[ "$action" = start ] || { echo "unknown action $action" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "slurm_test_cluster.sh: needs root" >&2; exit 2; }
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
socket="$dir/munge/munge.socket"
cat > "$dir/slurm.conf" <<EOF
ClusterName=mlscaletest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
# munged refuses a key others may read; a copy keeps the machine's key untouched
install -m 0400 /etc/munge/munge.key "$dir/munge/munge.key"
/usr/sbin/munged --force --socket="$socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/seed"
export SLURM_CONF="$dir/slurm.conf"
/usr/sbin/slurmctld -i
/usr/sbin/slurmd
for _ in $(seq 100); do  # the node is up when sinfo says idle
    state=$(sinfo -h -N -o %T 2>/dev/null || true)
    [ "$state" = idle ] && exit 0
    sleep 0.2
done
echo "slurm_test_cluster.sh: the node did not come up (state '${state:-}'); logs in $dir" >&2
exit 1
