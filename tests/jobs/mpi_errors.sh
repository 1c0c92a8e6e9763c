#!/usr/bin/env bash
# Setup errors under mpiexec: every rank detects (or is told about) the failure, the message is printed
# once, the job exits with the error's code, and no rank hangs.
# Usage: mpi_errors.sh LPURT WORKDIR MPIEXEC [MPIEXEC_FLAGS...]
set -uo pipefail
lpurt=$1 work=$2 mpiexec=$3; shift 3
findings=$(cd "$(dirname "$0")/../fuzz/findings" && pwd)
rm -rf "$work" && mkdir -p "$work" && cd "$work"
printf 'clock_hz = 1e9\nthis line is malformed\n' > bad_system.toml
passed=0 failed=0
expect() {  # expect CODE "message part" RANKS lpurt-args...
  local code=$1 text=$2 ranks=$3; shift 3
  timeout 60 "$mpiexec" -n "$ranks" "${flags[@]}" "$lpurt" run "$@" > out.txt 2> err.txt
  local rc=$? lines
  lines=$(grep -c "error:" err.txt)
  if [ "$rc" -eq "$code" ] && [ "$lines" -eq 1 ] && grep -q -- "$text" err.txt; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL run $*: exit $rc (want $code), $lines error lines (want 1), want \"$text\":"; cat err.txt
  fi
}
flags=("$@")
expect 5 'unknown system preset "nosuch"' 3 --chips 4 --system nosuch
expect 3 "bad_system.toml:2:6: Error while parsing key-value pair: expected '='" 3 --chips 4 --system bad_system.toml
expect 5 'topology must be "dragonfly" or "chain"' 2 --chips 4 --set topology=torus
expect 3 '/nonexistent.h5: cannot open' 3 --chips 3 --model /nonexistent.h5
expect 5 '3 MPI ranks for 1 chips in use (1 of the system.s 2 idle): every rank must host at least one chip' 3 --chips 2
expect 4 'needs at least' 2 --chips 2 --set sram_bytes=6000000
expect 3 'system file /dev/zero: not a regular file' 2 --chips 2 --system /dev/zero
# Rank 0 alone checks the result file; the others must not have entered the session's collective setup.
touch existing.h5
expect 6 'existing.h5: already exists; pass --force to replace it' 3 --chips 4 --out existing.h5
expect_serve() {  # expect_serve CODE "message part" lpurt-serve-args... (3 ranks)
  local code=$1 text=$2; shift 2
  timeout 60 "$mpiexec" -n 3 "${flags[@]}" "$lpurt" serve "$@" > out.txt 2> err.txt
  local rc=$?
  if [ "$rc" -eq "$code" ] && [ "$(grep -c 'error:' err.txt)" -eq 1 ] && grep -q -- "$text" err.txt; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); echo "FAIL serve $*: exit $rc (want $code, one error line with \"$text\"):"; cat err.txt
  fi
}
# Functional: the session's setup builds an Engine, collective over the ranks.
expect_serve 6 'existing.h5: already exists' --chips 4 --rate 1 --requests 2 --out existing.h5
expect_serve 6 'existing.h5: already exists' --chips 4 --rate 1 --requests 2 --csv existing.h5
expect_serve 6 'existing.h5: already exists' --chips 4 --rate 1 --requests 2 --trace existing.h5
expect_serve 2 'lpurt serve needs a workload' --chips 4 --timing-only
# A rank whose MPI call fails (a send of -1 bytes, MPI_ERR_COUNT): MPI returns the error instead of
# aborting, and the job ends with one line naming the call, the rank and MPI's reason, and exit code 8.
expect 8 '\[rank 1/2\] error: MPI_Send failed on rank 1: MPI_ERR_COUNT' 2 --chips 2 --tp 1 --pp 2 --inject-mpi-error 1
# A rank that stops participating: the job fails within 10 s, naming the waiting chip and the silent rank.
start=$(date +%s)
timeout 60 "$mpiexec" -n 2 "${flags[@]}" "$lpurt" run --chips 2 --tp 1 --pp 2 --step-timeout 2 --inject-stall-rank 1 \
  > out.txt 2> err.txt
rc=$? elapsed=$(( $(date +%s) - start ))
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$elapsed" -le 10 ] && grep -q "waited .* s for .*chip 1 on rank 1" err.txt &&
   [ "$(grep -c 'error:' err.txt)" -eq 1 ]; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL stalled rank: exit $rc after ${elapsed}s:"; cat err.txt
fi
# A rank that stalls while the other waits in a collective, not for a transfer: over TCP an eager send
# completes once the socket takes it (over shared memory only once the receiver takes the fragment), so rank 0
# sends stage 0's activations and reaches the logits gather. It must fail there too, naming the silent rank.
start=$(date +%s)
timeout 60 "$mpiexec" -n 2 --mca btl self,tcp "${flags[@]}" "$lpurt" run --chips 2 --tp 1 --pp 2 --prompt-len 1 \
  --step-timeout 2 --inject-stall-rank 1 > out.txt 2> err.txt
rc=$? elapsed=$(( $(date +%s) - start ))
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$elapsed" -le 10 ] &&
   grep -q "rank 0 waited .* s in the logits gather .* for rank 1: that rank is stuck" err.txt &&
   [ "$(grep -c 'error:' err.txt)" -eq 1 ]; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL rank stalled during a collective: exit $rc after ${elapsed}s:"; cat err.txt
fi
# A rank that dies: the job ends within 10 s and the launcher names the rank.
start=$(date +%s)
timeout 60 "$mpiexec" -n 3 "${flags[@]}" "$lpurt" run --chips 3 --tp 1 --pp 3 --inject-crash-rank 1 > out.txt 2> err.txt
rc=$? elapsed=$(( $(date +%s) - start ))
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$elapsed" -le 10 ] && grep -q "rank 1 .*signal 9" err.txt out.txt 2> /dev/null; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL dead rank: exit $rc after ${elapsed}s:"; cat err.txt out.txt
fi
# A model file on which HDF5 1.10.8 loops forever (tests/fuzz/findings): the check in a child process is
# time-limited, so the job ends with a clear error instead of hanging.
hang=$findings/hdf5-vlen-global-heap-hang.h5
start=$(date +%s)
LPURT_HDF5_TIMEOUT_S=2 timeout 60 "$mpiexec" -n 2 -x LPURT_HDF5_TIMEOUT_S "${flags[@]}" "$lpurt" run --chips 2 \
  --model "$hang" > out.txt 2> err.txt
rc=$? elapsed=$(( $(date +%s) - start ))
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$elapsed" -le 10 ] && grep -q "opening and validating it took more than 2 s" err.txt; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL hanging HDF5 file: exit $rc after ${elapsed}s:"; cat err.txt
fi
# A model file on which HDF5 1.10.8 crashes (a heap overflow in H5HG_read, tests/fuzz/findings): checked in a
# child process first, so the job gets one clear error instead of a segmentation fault.
expect 3 'the HDF5 library crashed reading it (signal' 2 --chips 2 --model "$findings/hdf5-vlen-global-heap-crash.h5"
# Ranks that wait for a stalled rank keep no core busy: with 4 ranks on this host they share its cores, and
# ranks 0-2 wait in the logits gather for rank 3 asleep on their doorbells. (Ringing each other on every
# test of the collective once kept two of them polling, about half a core each.)
timeout 60 "$mpiexec" -n 4 "${flags[@]}" "$lpurt" run --chips 4 --tp 1 --pp 4 --step-timeout 6 \
  --inject-stall-rank 3 > out.txt 2> err.txt &
job=$!
sleep 2.5
pids=$(pgrep -f -- "^$lpurt run --chips 4 --tp 1 --pp 4 --step-timeout 6")
declare -A ticks_before
for p in $pids; do ticks_before[$p]=$(awk '{print $14 + $15}' "/proc/$p/stat"); done
sleep 2
busiest=0
for p in $pids; do
  used=$(( $(awk '{print $14 + $15}' "/proc/$p/stat") - ticks_before[$p] ))  # clock ticks (1/100 s) in 2 s
  [ "$used" -gt "$busiest" ] && busiest=$used
done
wait "$job"
if [ "$(wc -w <<< "$pids")" -eq 4 ] && [ "$busiest" -le 40 ] && grep -q "stuck or dead" err.txt; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL idle ranks: $(wc -w <<< "$pids") ranks found (want 4), the busiest used $busiest% of a core (want <= 20%)"; cat err.txt
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
