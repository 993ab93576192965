#!/usr/bin/env bash
# Stop the single-node SLURM cluster that start_slurm.sh started in STATE_DIR: only the daemons
# whose pid files are there (slurmd, slurmctld, munged), nothing else on the machine.
set -uo pipefail
DIR="$(realpath -m "${1:-/tmp/recurstudy-slurm}")"
for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$pidfile"
done
echo "stop_slurm: stopped the cluster in $DIR"
