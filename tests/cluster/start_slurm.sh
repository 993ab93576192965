#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine, for tests/test_cluster.py and by hand:
#   tests/cluster/start_slurm.sh [STATE_DIR]      (default /tmp/recurstudy-slurm)
#   export PATH=STATE_DIR/bin:$PATH              (SLURM's commands, pointed at this cluster)
#   tests/cluster/stop_slurm.sh [STATE_DIR]
#
# Debian's slurm-wlm and munge are installed when missing (root with apt-get). Everything lives
# in STATE_DIR: a fresh munge key and its own munged socket (so a munged already running on the
# machine is left alone), slurm.conf for one node with this machine's CPUs and memory, non-default
# ports, the daemons' pid files and logs. No accounting database: AccountingStorageType=none, so
# sacct has nothing to say; job status comes from squeue, and MinJobAge=600 keeps a finished job
# (COMPLETED, FAILED, ...) visible to `squeue --states=all` for ten minutes. stop_slurm.sh stops
# only the daemons whose pid files are in STATE_DIR.
set -euo pipefail
DIR="$(realpath -m "${1:-/tmp/recurstudy-slurm}")"
PORT_BASE="${RECURSTUDY_SLURM_PORT:-16817}"
export PATH="$PATH:/usr/sbin:/sbin"  # slurmctld, slurmd and munged live there

if [ "$(id -u)" != 0 ]; then
  echo "start_slurm: slurmd must run as root (this is $(id -un))" >&2
  exit 3
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "start_slurm: installing slurm-wlm and munge (apt-get)" >&2
    for attempt in 1 2 3 4 5 6; do  # another apt-get may hold the dpkg lock for a while
      if (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
          slurm-wlm munge) >"${TMPDIR:-/tmp}/recurstudy-slurm-apt.log" 2>&1; then break; fi
      [ "$attempt" = 6 ] && { echo "start_slurm: apt-get failed" >&2; exit 3; }
      sleep 20
    done
  else
    echo "start_slurm: slurm-wlm and munge are missing (apt-get install slurm-wlm munge as root)" >&2
    exit 3
  fi
fi
if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
  echo "start_slurm: already running in $DIR" >&2
  exit 0
fi

mkdir -p "$DIR"/{munge,spool,state,log}
chmod 700 "$DIR/munge"
# munged: a key of our own and its own socket, pid and seed files.
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge/munge.key"
munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
  --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" \
  --seed-file="$DIR/munge/munged.seed"

HOST="$(hostname -s)"
CPUS="$(nproc)"
# Leave 2 GB (or a quarter, whichever is smaller) to the system; SLURM schedules on the rest.
MEM_MB="$(awk '/MemTotal/ {m = int($2 / 1024); r = m / 4; if (r > 2048) r = 2048; print int(m - r)}' /proc/meminfo)"
USER_NAME="$(id -un)"
cat >"$DIR/slurm.conf" <<CONF
# Written by tests/cluster/start_slurm.sh: one node, this machine, no accounting.
ClusterName=recurstudy
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=${PORT_BASE}
SlurmdPort=$((PORT_BASE + 1))
SlurmUser=${USER_NAME}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${DIR}/munge/munge.socket
StateSaveLocation=${DIR}/state
SlurmdSpoolDir=${DIR}/spool
SlurmctldPidFile=${DIR}/slurmctld.pid
SlurmdPidFile=${DIR}/slurmd.pid
SlurmctldLogFile=${DIR}/log/slurmctld.log
SlurmdLogFile=${DIR}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
ReturnToService=2
InactiveLimit=0
KillWait=10
Waittime=0
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=main Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$DIR/slurm.conf"
# Client commands that find this cluster without SLURM_CONF: the executor plugin's job step
# (snakemake-executor-plugin-slurm-jobstep) drops every SLURM_* variable before it calls srun
# inside a job, but keeps PATH. `export PATH=STATE_DIR/bin:$PATH` is all a caller needs.
mkdir -p "$DIR/bin"
for cmd in sbatch srun squeue scancel sinfo scontrol sacct; do
  real="$(command -v "$cmd")"
  printf '#!/bin/sh\nSLURM_CONF=%s exec %s "$@"\n' "$SLURM_CONF" "$real" >"$DIR/bin/$cmd"
  chmod +x "$DIR/bin/$cmd"
done
slurmctld -c -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"

for _ in $(seq 1 60); do
  state="$(sinfo -h -o %T 2>/dev/null || true)"
  case "$state" in idle*|mixed*|allocated*) echo "start_slurm: node $HOST $state, SLURM_CONF=$SLURM_CONF"; exit 0 ;; esac
  sleep 1
done
echo "start_slurm: the node did not come up (state: ${state:-none}); logs in $DIR/log" >&2
exit 1
