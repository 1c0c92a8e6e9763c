#!/usr/bin/env bash
# Host speed of functional runs (issue 6): prints a markdown section on stdout. The physical limit is the
# host's streaming-read bandwidth, measured here with the same threads the kernels use.
# Usage: bench/host.sh [BUILD_DIR]   (default build; takes a few minutes, writes models to a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(realpath "${1:-build}")
lpurt=$build/jobs/lpurt
kernels=$build/bench/bench_kernels
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1

field() { grep -o "\"$1\": *[^,}]*" | head -1 | sed 's/^"[^"]*": *//; s/"//g'; }
gbps() {  # gbps FILTER [env...]: bytes_per_second of a Google Benchmark case, in GB/s (best of 3 repetitions)
  local filter=$1; shift
  env "$@" "$kernels" --benchmark_filter="$filter" --benchmark_repetitions=3 --benchmark_min_time=0.5 \
    --benchmark_format=csv 2> /dev/null | grep -v '_mean\|_median\|_stddev\|_cv' | grep '^"BM' |
    awk -F, '{ if ($6 > best) best = $6 } END { printf "%.1f", best / 1e9 }'
}

# This machine's memory bandwidth drifts by tens of percent over minutes (other tenants of the host), and a
# single reading can be far off. Each round measures the streaming read and the GEMV together; the table
# gives the round with the median ratio of 5.
paired() {  # paired GEMV_FILTER KERNELS -> "stream_gbps gemv_gbps ratio_percent lowest_ratio highest_ratio" (median round)
  for round in 1 2 3 4 5; do
    env LPURT_KERNELS="$2" "$kernels" --benchmark_filter="BM_StreamRead|$1" --benchmark_min_time=0.5 \
      --benchmark_format=csv 2> /dev/null | grep '^"BM' | awk -F, '/StreamRead/ {s = $6} !/StreamRead/ {g = $6}
        END { printf "%.2f %.2f %.1f\n", s / 1e9, g / 1e9, 100 * g / s }'
  done | sort -t' ' -k3 -n | awk '{ line[NR] = $0; r[NR] = $3 } END { print line[3], r[1], r[5] }'
}

read -r stream _ _ <<< "$(paired 'BM_GemvInt8/16384/8192/' auto)"
echo "## Host speed of functional runs"
echo
echo "The physical limit of a decode step is the host's memory bandwidth: every weight byte is read once"
echo "per token. Streaming read over 512 MB with the kernels' TBB threads and 32-byte loads: about"
echo "**$stream GB/s**. It drifts by tens of percent over minutes on this shared VM, so every ratio below pairs"
echo "measurements taken together, over several rounds, and reports the round with the median ratio."
echo
echo "### int8 GEMV (Google Benchmark, \`bench_kernels\`)"
echo
echo "L3 cache: $(lscpu | awk -F: '/L3 cache/ {gsub(/^ +/, "", $2); print $2}'); a 64 MB matrix partly stays in it between repetitions."
echo
echo "| matrix | kernels | GB/s of weights | streaming read, same round (GB/s) | ratio | ratio, range over the 5 rounds |"
echo "|---|---|---|---|---|---|"
for shape in 8192/8192:64 16384/8192:128 32768/8192:256; do
  for k in portable avx2; do
    read -r s g r lo hi <<< "$(paired "BM_GemvInt8/${shape%%:*}/" "$([ $k = portable ] && echo portable || echo auto)")"
    echo "| ${shape##*:} MB | $k | $g | $s | $r% | $lo% .. $hi% |"
  done
done
echo
echo "### Decode on one rank"
echo
echo "Decode tokens/s from the median host time of a decode step (64 steps after a 16-token prompt: the median"
echo "resists the stalls other tenants of this VM add to a few steps); bytes per token = every weight except"
echo "the embedding table (one row of it); bound = streaming read / bytes per token, with the streaming read"
echo "measured just before and just after the run (their mean). 5 rounds; the table gives the round with the"
echo "median ratio, and the range of the ratio over the rounds. Chip state: the weights, KV cache and buffers the rank's chips hold. The process baseline"
echo "is the peak RSS of a run of the tiny preset (2 MB of chip state): the binary, HDF5 and TBB (a run"
echo "started without mpirun needs no MPI)."
echo
"$lpurt" gen-model --preset tiny --out "$work/tiny.h5" > /dev/null
/usr/bin/time -f "%M" -o "$work/rss" "$lpurt" run --model "$work/tiny.h5" --tokens 2 > /dev/null
baseline_kb=$(cat "$work/rss")
echo "| model | chips | kernels | decode tokens/s | weight MB per token | streaming read (GB/s) | bound tokens/s | ratio | ratio, range over the rounds | HDF5 load s/GB | chip state (MB) | peak RSS (MB) | peak / chip state | peak / (chip state + baseline) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
"$lpurt" gen-model --preset small --out "$work/small.h5" > /dev/null
"$lpurt" gen-model --preset tinyllama-1.1b --out "$work/tinyllama.h5" > /dev/null
for spec in small:1 tinyllama:8; do
  model=${spec%%:*} chips=${spec##*:}
  for k in portable avx2; do
    stream() { "$kernels" --benchmark_filter=BM_StreamRead --benchmark_min_time=0.5 --benchmark_format=csv 2> /dev/null |
               grep '^"BM' | awk -F, '{printf "%.2f", $6 / 1e9}'; }
    for round in 1 2 3 4 5; do
      before=$(stream)
      env LPURT_KERNELS=$([ $k = portable ] && echo portable || echo auto) /usr/bin/time -f "%M" -o "$work/rss" \
        "$lpurt" run --model "$work/$model.h5" --chips "$chips" --prompt-len 16 --tokens 65 --context 128 \
        --out "$work/out.h5" --force --json > "$work/j"
      after=$(stream)
      j=$(cat "$work/j")
      awk -v bw="$(awk -v a="$before" -v b="$after" 'BEGIN { print (a + b) / 2 }')" \
          -v step="$(echo "$j" | field host_decode_step_median_s)" -v bytes="$(echo "$j" | field weight_bytes_per_decode_token)" \
          -v setup="$(echo "$j" | field host_setup_s)" -v read="$(echo "$j" | field weight_bytes_read_rank0)" \
          -v rss="$(cat "$work/rss")" -v state="$(echo "$j" | field chip_state_bytes_rank0)" -v base="$baseline_kb" \
          -v m="$model" -v c="$chips" -v k="$k" 'BEGIN {
        tps = 1 / step; bound = bw * 1e9 / bytes;
        printf "%.6f | %s | %s | %s | %.1f | %.1f | %.1f | %.1f | %.0f%% | RANGE | %.2f | %.1f | %.1f | %.2f | %.2f |\n", tps / bound,
               m, c, k, tps, bytes / 1e6, bw, bound, 100 * tps / bound, setup / (read / 1e9), state / 1e6,
               rss * 1024 / 1e6, rss * 1024 / state, rss / (state / 1024 + base) }'
    done | sort -n | awk '{ line[NR] = $0; r[NR] = $1 }
      END { sub(/RANGE/, sprintf("%.0f%% .. %.0f%%", 100 * r[1], 100 * r[NR]), line[3]); print line[3] }' | cut -d' ' -f2-
  done
done
echo
echo "Process baseline: $(awk -v b="$baseline_kb" 'BEGIN { printf "%.1f", b * 1024 / 1e6 }') MB. The logits are written to the"
echo "result file row by row, so peak memory does not grow with the tokens generated."
echo
cores=$(nproc)
echo "### One rank against two (same chips, ranks free to use every core)"
echo
echo "Launched as \`mpirun -np R --bind-to none\` ($cores cores). A rank waiting for a tensor-parallel peer polls"
echo "for 300 us, one waiting for another pipeline stage or in a collective (the logits gather) counts itself"
echo "idle at once (in a counter the host's ranks share) and polls 20 us; then it sleeps, counted idle, on a"
echo "futex in memory the host's ranks share (its doorbell), with its TBB workers parked, until the rank it"
echo "waits for rings it (after posting a message to it or taking one from it; in a collective, when a rank"
echo "joins or completes it) or 200 us pass, and polls 50 us again; each group of compute ops runs on"
echo "cores / (ranks of the host working at that moment) threads (runtime/engine.hpp). Two"
echo "layouts: the stage's tp chips split over the two ranks (tp across ranks: both ranks work at once, one"
echo "thread each; every tensor-parallel collective crosses ranks, one MPI message each way per round of"
echo "transfers), and the pipeline stages split over the two ranks (pp across ranks: at batch 1 one stage works"
echo "at a time, on every core, while the other sleeps). Each of 9 rounds runs the 1-rank and the 2-rank case"
echo "one after the other; the table gives the medians over the rounds of the median decode step and of each"
echo "round's ratio, and the range of those ratios (the drift of this VM within a round). MPI wait: each"
echo "rank's time blocked on messages over the run, per generated token. Cores busy: every rank's CPU time"
echo "over the decode (all threads, user and system, waiting included) over its wall time; at most $cores, the"
echo "host's cores, when the ranks neither oversubscribe them nor spin while they wait."
echo
echo "| model | layout | chips | ranks | ms per decode token | MPI wait per token, rank 0 (ms) | most-waiting rank (ms) | cores busy, all ranks | vs 1 rank (median) | vs 1 rank (range over rounds) | messages alone: timing-only ms per token |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for spec in small:2:2:1:tp small:4:2:2:pp tinyllama:8:8:1:tp tinyllama:8:4:2:pp; do
  IFS=: read -r model chips tp pp across <<< "$spec"
  for round in 1 2 3 4 5 6 7 8 9; do
    for ranks in 1 2; do
      args=(--model "$work/$model.h5" --chips "$chips" --tp "$tp" --pp "$pp" --prompt-len 16 --tokens 129 --context 256 --json)
      launch=(mpirun -np "$ranks" --bind-to none)
      j=$("${launch[@]}" "$lpurt" run "${args[@]}")
      t=$("${launch[@]}" "$lpurt" run "${args[@]}" --timing-only)
      echo "$round $ranks $(echo "$j" | field host_decode_step_median_s) $(echo "$j" | field host_mpi_wait_s_rank0)" \
           "$(echo "$j" | field host_mpi_wait_s_max) $(echo "$t" | field host_decode_step_median_s)" \
           "$(echo "$j" | field host_decode_cpu_s) $(echo "$j" | field host_decode_s)"
    done
  done > "$work/pairs"
  for ranks in 1 2; do
    awk -v r="$ranks" -v m="$model" -v c="$chips" -v layout="tp $tp x pp $pp ($across across ranks)" '
      { step[$1, $2] = $3 * 1000; wait[$1, $2] = $4 / 129 * 1000; most[$1, $2] = $5 / 129 * 1000; walk[$1, $2] = $6 * 1000
        busy[$1, $2] = $7 / $8; n = $1 }
      function median(a, k,   i, j, t) {  # of a[1..k], sorting it
        for (i = 2; i <= k; ++i) for (j = i; j > 1 && a[j - 1] > a[j]; --j) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
      END {
        for (i = 1; i <= n; ++i) {
          s[i] = step[i, r]; w[i] = wait[i, r]; x[i] = most[i, r]; t[i] = walk[i, r]; u[i] = busy[i, r]
          q[i] = 100 * (step[i, r] / step[i, 1] - 1)
        }
        mq = median(q, n)  # q is sorted now
        printf "| %s | %s | %s | %s | %.2f | %.2f | %.2f | %.2f | %+.0f%% | %+.0f%% .. %+.0f%% | %.3f |\n", m, layout, c, r,
               median(s, n), median(w, n), median(x, n), median(u, n), mq, q[1], q[n], median(t, n) }' "$work/pairs"
  done
done
echo
echo "Each core's streaming read, single-threaded, alone and with the other core streaming at the same time"
echo "(\`taskset\`; two ranks of one stage wait for the slower one at every round, where one process's TBB"
echo "threads split each matrix between them):"
echo
echo "| core | alone (GB/s) | both cores at once (GB/s) |"
echo "|---|---|---|"
stream1() { taskset -c "$1" "$kernels" --benchmark_filter=BM_StreamRead --benchmark_min_time="$2" --benchmark_format=csv \
              2> /dev/null | grep '^"BM' | awk -F, '{printf "%.1f", $6 / 1e9}'; }
a0=$(stream1 0 0.5) a1=$(stream1 1 0.5)
stream1 0 2 > "$work/both0" & stream1 1 2 > "$work/both1"; wait
echo "| 0 | $a0 | $(cat "$work/both0") |"
echo "| 1 | $a1 | $(cat "$work/both1") |"
