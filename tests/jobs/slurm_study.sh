#!/usr/bin/env bash
# Against a real Slurm (munged, slurmctld and slurmd on localhost, started here and stopped at the end):
# the single-run batch script, then `lpurt sweep --slurm` (4 points; with MaxArraySize lowered to 3 they
# go in two job arrays, the second after the first, and a collect step depends on both). The Slurm run's tokens and logits equal a local run's, and the study's table and point
# results equal a local `lpurt sweep` of the same job file.
# Needs root and slurm-wlm + munge; without them it is skipped (exit 77), unless LPURT_REQUIRE_SLURM=1
# (CI) makes that a failure.
# Usage: slurm_study.sh LPURT WORKDIR SOURCE_DIR PYTHON MPIEXEC [MPIEXEC_FLAGS...]
set -euo pipefail
lpurt=$1 work=$2 src=$3 python=$4 mpiexec=$5
shift 5
skip() {
  if [ "${LPURT_REQUIRE_SLURM:-0}" = 1 ]; then echo "FAIL: $*" >&2; exit 1; fi
  echo "SKIP: $*"; exit 77
}
[ "$(id -u)" = 0 ] || skip "starting slurmctld/slurmd/munged needs root"
for tool in sbatch squeue scontrol slurmctld slurmd munged; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || skip "$tool is not installed (apt-get install slurm-wlm munge)"
done

t_start=$(date +%s.%N)
rm -rf "$work" && mkdir -p "$work" && cd "$work"
export SLURM_RUNDIR=$work/slurm-daemons LPURT_SLURM_MAX_ARRAY_SIZE=3
bash "$src/scripts/start-slurm.sh"
trap 'bash "$src/scripts/stop-slurm.sh"' EXIT

slurm_wait() {  # slurm_wait JOBID... : until none is queued; fails unless every one COMPLETED with 0:0
  local ids deadline=$((SECONDS + 240))
  ids=$(IFS=,; echo "$*")
  while [ -n "$(squeue -h -j "$ids" 2>/dev/null)" ]; do
    [ $SECONDS -lt $deadline ] || { echo "FAIL: jobs $ids still queued after 240 s" >&2; squeue >&2; return 1; }
    sleep 0.25
  done
  for id in "$@"; do scontrol -o show job "$id"; done | awk '
    { st=""; ec=""; id="";
      for (i=1;i<=NF;i++) { if ($i ~ /^JobId=/) id=$i; if ($i ~ /^JobState=/) st=$i; if ($i ~ /^ExitCode=/) ec=$i }
      printf "  %s %s %s\n", id, st, ec;
      if (st != "JobState=COMPLETED" || ec != "ExitCode=0:0") bad=1 }
    END { exit bad }'
}

# 1. The single-run script as users submit it: options to lpurt run follow the script.
"$lpurt" gen-model --preset tiny --out tiny.h5 --seed 3 > /dev/null
single=$(sbatch --parsable --ntasks=2 --output="$work/single-%j.out" --export=ALL,LPURT="$lpurt" \
  "$src/slurm/run.sbatch" --model "$work/tiny.h5" --chips 4 --tp 2 --pp 2 --prompt-len 6 --tokens 5 --out "$work/single.h5")
echo "single run: job $single"
slurm_wait "$single" || { cat "$work"/single-*.out >&2; exit 1; }
"$mpiexec" -n 2 "$@" "$lpurt" run --model tiny.h5 --chips 4 --tp 2 --pp 2 --prompt-len 6 --tokens 5 --out local.h5 > /dev/null
grep -q "2 rank(s)" "$work"/single-*.out || { echo "FAIL: the Slurm run did not use 2 ranks" >&2; cat "$work"/single-*.out >&2; exit 1; }

# 2. A 4-point study: the same job file, once through Slurm, once locally.
study() {  # study NAME: a job file whose output folder is NAME
  cat > "$1.toml" <<EOF
[study]
name = "$1"
output = "$work/$1"
mode = "functional"
ranks = 2
throttle = 2
[model]
file = "$work/tiny.h5"
[run]
prompt_len = 6
tokens = 5
tp = 2
[sweep]
chips = [2, 4]
link_bytes_per_s = [14e9, 28e9]
EOF
}
study on_slurm
study local
submitted=$("$lpurt" sweep on_slurm.toml --slurm --sbatch=--time=00:10:00)
echo "$submitted"
read -r first second extra <<< "$(sed -n 's/^submitted job array \([0-9]*\):.*/\1/p' <<< "$submitted" | tr '\n' ' ')"
collect=$(sed -n 's/^submitted collect job \([0-9]*\).*/\1/p' <<< "$submitted")
[ -n "$first" ] && [ -n "$second" ] && [ -z "$extra" ] && [ -n "$collect" ] ||
  { echo "FAIL: expected two job arrays (points 0-2, then 3) and a collect job from --slurm" >&2; exit 1; }
grep -q "points (3), 2 rank(s) each, at most 2 at once, array index + 3" <<< "$submitted" ||
  { echo "FAIL: the second array does not hold point 3 at array index 0" >&2; exit 1; }
for array in "$first" "$second"; do
  grep -q "ArrayTaskThrottle=2" <(scontrol -o show job "$array" | head -1) ||
    { echo "FAIL: array $array is not throttled to 2 (study.throttle)" >&2; scontrol -o show job "$array" | head -1 >&2; exit 1; }
done
grep -q "Dependency=afterany:${first}_\*" <(scontrol -o show job "$second" | head -1) ||
  { echo "FAIL: the second array does not wait for the first" >&2; scontrol -o show job "$second" | head -1 >&2; exit 1; }
grep -q "Dependency=afterok:${first}_\*.*afterok:${second}_\*" <(scontrol -o show job "$collect") ||
  { echo "FAIL: the collect job does not depend on both arrays with afterok" >&2; scontrol -o show job "$collect" >&2; exit 1; }
slurm_wait "$first" "$second" "$collect" || { tail -n 5 "$work"/on_slurm/slurm/*.out >&2; exit 1; }
"$mpiexec" -n 2 "$@" "$lpurt" sweep local.toml > /dev/null

# 3. Resubmitting a finished study runs no point: only the collect step.
again=$("$lpurt" sweep on_slurm.toml --slurm)
grep -q "every point was done" <<< "$again" || { echo "FAIL: a finished study was resubmitted: $again" >&2; exit 1; }
slurm_wait "$(sed -n 's/^submitted collect job \([0-9]*\).*/\1/p' <<< "$again")"

"$python" - "$work" <<'EOF'
import csv, os, sys
import h5py
work = sys.argv[1]
def rows(name):
    with open(os.path.join(work, name, "results.csv"), newline="") as f:
        return list(csv.DictReader(f))
a, b = rows("on_slurm"), rows("local")
assert len(a) == 4 and [r["point"] for r in a] == ["0", "1", "2", "3"], a
assert all(r["status"] == "ok" and r["ranks"] == "2" for r in a), a
for ra, rb in zip(a, b):
    for k in ra:
        if not k.startswith("host_") and k != "int8_kernels":  # host timings differ run to run
            assert ra[k] == rb[k], f"point {ra['point']}: {k} is {ra[k]} on Slurm, {rb[k]} locally"
    with h5py.File(os.path.join(work, "on_slurm", ra["point_file"])) as p, \
         h5py.File(os.path.join(work, "local", rb["point_file"])) as q:
        assert (p["tokens"][:] == q["tokens"][:]).all(), ra["point"]
        assert p["logits"][:].tobytes() == q["logits"][:].tobytes(), ra["point"]
with h5py.File(os.path.join(work, "single.h5")) as p, h5py.File(os.path.join(work, "local.h5")) as q:
    assert (p["tokens"][:] == q["tokens"][:]).all() and p["logits"][:].tobytes() == q["logits"][:].tobytes()
for plot in ("throughput", "latency", "sram", "time_per_token"):
    assert os.path.getsize(os.path.join(work, "on_slurm", "plots", plot + ".png")) > 1000, plot
print("slurm study: 4 points equal the local sweep (tables, tokens, logits); single run equals mpirun")
EOF
awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "slurm test: %.1f s (without stopping the daemons)\n", b - a }'
