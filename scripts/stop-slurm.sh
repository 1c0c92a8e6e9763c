#!/usr/bin/env bash
# Stops the Slurm that scripts/start-slurm.sh started (by pid file; munged only if it started it).
RUNDIR=${SLURM_RUNDIR:-/tmp/slurm-ci}
scancel --user=root 2>/dev/null || true
pids=("$RUNDIR/slurmd.pid" "$RUNDIR/slurmctld.pid")
[ -e "$RUNDIR/started-munged" ] && pids+=(/run/munge/munged.pid)
for f in "${pids[@]}"; do
  [ -s "$f" ] || continue
  pid=$(cat "$f"); kill "$pid" 2>/dev/null || continue
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
done
rm -f "$RUNDIR/started-munged"
true
