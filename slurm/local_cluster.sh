#!/usr/bin/env bash
# A throwaway two-node Slurm cluster on ONE machine, for smoldist's tests (root, Debian 12 packages).
#   slurm/local_cluster.sh start     # installs slurmctld/slurmd/munge if missing, starts n1 + n2, waits idle
#   slurm/local_cluster.sh stop      # cancels jobs, stops the daemons (state kept; `stop --purge` wipes it)
#   . $CLUSTER_DIR/env.sh            # then sbatch/squeue/scontrol talk to it (sets SLURM_CONF)
#
# Each slurmd runs in its own UTS + mount namespace with hostname n1 / n2 and a bind-mounted hosts
# file, so jobs see two distinct hosts (torch's rendezvous needs distinct hostnames); Debian's
# slurm is built with MULTIPLE_SLURMD, so both run on one machine (ports 17001/17002, addresses
# 127.0.1.1/127.0.1.2 on lo). The host's own /etc/hosts and hostname are never changed.
set -euo pipefail
C=${CLUSTER_DIR:-/tmp/smoldist-slurm}
NODES=(n1 n2)
CTLD_PORT=${CTLD_PORT:-16817}
WAIT_S=${WAIT_S:-30}
export SLURM_CONF=$C/etc/slurm.conf
log() { echo "[local_cluster $(date +%T)] $*"; }
die() { echo "[local_cluster] ERROR: $*" >&2; exit 1; }

alive() {  # alive PIDFILE COMM: the pid in PIDFILE is a live COMM process
  [ -s "$1" ] || return 1
  local pid; pid=$(cat "$1")
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && [ "$(awk '{print $3}' "/proc/$pid/stat")" != Z ]
}

stop_pidfile() {  # TERM, then KILL after 10 s
  local f=$1 comm=$2 pid
  alive "$f" "$comm" || { rm -f "$f"; return 0; }
  pid=$(cat "$f"); kill -TERM "$pid"
  for _ in $(seq 100); do alive "$f" "$comm" || break; sleep 0.1; done
  alive "$f" "$comm" && kill -KILL "$pid"
  rm -f "$f"; log "stopped $comm ($pid)"
}

install_packages() {
  local need=()
  for p in slurmctld slurmd slurm-client munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  ((${#need[@]})) || return 0
  log "installing ${need[*]}"
  local tmp_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then  # keep the packages from starting their own services
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; tmp_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
  [ "$tmp_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

write_config() {
  local ctl_name ncpu mem
  ctl_name=$(hostname -s)  # slurmctld only runs where SlurmctldHost == `hostname -s`
  ncpu=$(nproc)
  mem=$(( $(awk '/^MemTotal/{print int($2/1024)}' /proc/meminfo) * 45 / 100 ))
  printf '127.0.0.1 localhost\n127.0.0.1 %s\n127.0.1.1 n1\n127.0.1.2 n2\n' "$ctl_name" > "$C/etc/hosts"
  cat > "$C/etc/slurm.conf" <<EOF
# written by smoldist slurm/local_cluster.sh
ClusterName=smoldist-local
SlurmctldHost=$ctl_name(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$C/munge-run/munge.socket
StateSaveLocation=$C/spool/ctld
SlurmdSpoolDir=$C/spool/d/%n
SlurmctldPidFile=$C/run/slurmctld.pid
SlurmdPidFile=$C/run/slurmd-%n.pid
SlurmctldLogFile=$C/log/slurmctld.log
SlurmdLogFile=$C/log/slurmd-%n.log
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
# short MinJobAge keeps 'sbatch --wait' polling every 2 s
MinJobAge=5
Waittime=0
NodeName=n1 NodeHostname=n1 NodeAddr=127.0.1.1 Port=17001 CPUs=$ncpu RealMemory=$mem State=UNKNOWN
NodeName=n2 NodeHostname=n2 NodeAddr=127.0.1.2 Port=17002 CPUs=$ncpu RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  # slurmctld binds where `hostname -s` resolves; only safe when that is 127.0.0.1
  if [ "$(getent hosts "$ctl_name" | awk '{print $1; exit}')" = 127.0.0.1 ]; then
    echo "CommunicationParameters=NoCtldInAddrAny" >> "$C/etc/slurm.conf"
  fi
  echo "export SLURM_CONF=$C/etc/slurm.conf" > "$C/env.sh"
}

start() {
  [ "$(id -u)" = 0 ] || die "must run as root"
  install_packages
  mkdir -p "$C"/{etc,spool/ctld,log,run,munge,munge-run} "$C"/spool/d/{n1,n2}
  chmod 700 "$C/munge"; chmod 755 "$C/munge-run"  # key private; socket directory traversable
  if [ ! -s "$C/munge/munge.key" ]; then
    mungekey --create --keyfile="$C/munge/munge.key"; chmod 400 "$C/munge/munge.key"
  fi
  if ! alive "$C/munge-run/munged.pid" munged; then
    rm -f "$C/munge-run/munge.socket" "$C/munge-run/munge.socket.lock"
    munged --socket="$C/munge-run/munge.socket" --key-file="$C/munge/munge.key" --pid-file="$C/munge-run/munged.pid" \
           --log-file="$C/munge/munged.log" --seed-file="$C/munge/munged.seed"
  fi
  write_config
  if ! alive "$C/run/slurmctld.pid" slurmctld; then
    slurmctld -i
    for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
    scontrol ping >/dev/null 2>&1 || { tail -n 20 "$C/log/slurmctld.log" >&2; die "slurmctld did not come up"; }
  fi
  for n in "${NODES[@]}"; do
    alive "$C/run/slurmd-$n.pid" slurmd && continue
    unshare --uts --mount --propagation private -- sh -c "mount --bind $C/etc/hosts /etc/hosts && hostname $n && exec slurmd -N $n"
    for _ in $(seq 50); do alive "$C/run/slurmd-$n.pid" slurmd && break; sleep 0.1; done
    alive "$C/run/slurmd-$n.pid" slurmd || { tail -n 20 "$C/log/slurmd-$n.log" >&2; die "slurmd $n did not come up"; }
  done
  local states=""
  for _ in $(seq $((WAIT_S * 10))); do
    states=$(sinfo -h -N -o '%T' 2>/dev/null | sort -u | tr '\n' ' ')
    [ "$states" = "idle " ] && { log "cluster up: nodes n1 n2 idle; . $C/env.sh"; return 0; }
    sleep 0.1
  done
  die "nodes not idle after ${WAIT_S}s (states: $states)"
}

stop() {
  if alive "$C/run/slurmctld.pid" slurmctld; then
    local jobs; jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 150); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.1; done
    fi
  fi
  for n in "${NODES[@]}"; do stop_pidfile "$C/run/slurmd-$n.pid" slurmd; done
  stop_pidfile "$C/run/slurmctld.pid" slurmctld
  stop_pidfile "$C/munge-run/munged.pid" munged
  if [ "${1:-}" = --purge ]; then rm -rf "$C"; log "purged $C"; fi
}

case ${1:-} in
  start) start ;;
  stop) shift; stop "$@" ;;
  *) sed -n '2,5p' "$0"; exit 2 ;;
esac
