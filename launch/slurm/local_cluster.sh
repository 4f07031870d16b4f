#!/usr/bin/env bash
# A one-node SLURM on this machine (munged + slurmctld + slurmd), for the test suite (.ci/run and the
# SLURM tests start it) and for trying launch/submit.py locally. Run as root on Debian/Ubuntu:
#
#   bash launch/slurm/local_cluster.sh start    # install slurm-wlm + munge if missing, configure, start
#   bash launch/slurm/local_cluster.sh stop     # stop the daemons that `start` started (nothing else)
#   bash launch/slurm/local_cluster.sh status
#
# `start` does nothing when a SLURM controller already answers (your own cluster, or an earlier start).
# It writes /etc/slurm/slurm.conf only if there is none or it is one this script wrote. The config is
# a test cluster's: proctrack/linuxproc and task/none (no cgroups needed, works in containers),
# JobRequeue=1, and short scheduler delays so a requeued job starts again within seconds:
#   AuthInfo=cred_expire=10   a requeued job waits cred_expire before it may start again (default 120 s)
#   sched_interval=2          the main scheduler looks at pending jobs every 2 s (default 60 s)
#   KillWait=30               SLURM's default: seconds between SIGTERM and SIGKILL when a job ends
# Logs: /var/log/slurm/{slurmctld,slurmd}.log; finished and requeued jobs: /var/log/slurm/jobcomp.log.
set -euo pipefail

STATE=${DISTGEN_SLURM_STATE:-/var/lib/distgen-slurm}   # pids of the daemons we started
CONF=/etc/slurm/slurm.conf
MARK="# written by distgen launch/slurm/local_cluster.sh"
HOST=$(hostname -s)

say() { echo "local_cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }
answers() { command -v scontrol >/dev/null && timeout 10 scontrol ping 2>/dev/null | grep -q "is UP"; }
node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1; }

write_conf() {
    mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
    cat > "$CONF" <<EOF
$MARK (one node: $HOST)
ClusterName=distgen-local
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobRequeue=1
ReturnToService=2
KillWait=30
MinJobAge=600
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
NodeName=$HOST CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

started() { mkdir -p "$STATE"; echo "$2" > "$STATE/$1.pid"; }

start() {
    if answers; then
        say "a SLURM controller already answers; nothing started"
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons)"
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        say "installing slurm-wlm and munge (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null; } \
            || die "apt-get install slurm-wlm munge failed"
    fi
    if [ -e "$CONF" ] && ! grep -q "^$MARK" "$CONF"; then
        say "using the existing $CONF (not written by this script)"
    else
        write_conf
    fi

    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        [ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        chown munge:munge /run/munge /var/log/munge /var/lib/munge
        runuser -u munge -- /usr/sbin/munged
        started munged "$(cat /run/munge/munged.pid)"
    fi
    slurmctld
    started slurmctld "$(cat /run/slurmctld.pid)"
    for _ in $(seq 60); do answers && break; sleep 0.5; done
    answers || die "slurmctld did not come up: see /var/log/slurm/slurmctld.log"
    slurmd
    started slurmd "$(cat /run/slurmd.pid)"
    for _ in $(seq 60); do
        case "$(node_state)" in
            idle*|mixed*|alloc*) say "up: node $HOST $(node_state), partition local"; return 0 ;;
            down*|drain*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    die "node $HOST never became idle (state: $(node_state)): see /var/log/slurm/slurmd.log"
}

stop() {
    for name in slurmd slurmctld munged; do
        file="$STATE/$name.pid"
        [ -f "$file" ] || continue
        pid=$(cat "$file")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            say "stopped $name ($pid)"
        fi
        rm -f "$file"
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) if answers; then sinfo; else say "no SLURM controller answers"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
