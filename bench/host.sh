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

field() { grep -o "\"$1\": [^,}]*" | head -1 | sed 's/.*: //; s/"//g'; }
gbps() {  # gbps FILTER [env...]: bytes_per_second of a Google Benchmark case, in GB/s (best of 3 repetitions)
  local filter=$1; shift
  env "$@" "$kernels" --benchmark_filter="$filter" --benchmark_repetitions=3 --benchmark_min_time=0.5 \
    --benchmark_format=csv 2> /dev/null | grep -v '_mean\|_median\|_stddev\|_cv' | grep '^"BM' |
    awk -F, '{ if ($6 > best) best = $6 } END { printf "%.1f", best / 1e9 }'
}

# This machine's memory bandwidth drifts by tens of percent over minutes (other tenants of the host), so
# every GEMV figure is paired with a streaming-read measurement taken in the same invocation, and the
# ratio is the median over 5 such rounds.
paired() {  # paired GEMV_FILTER KERNELS -> "stream_gbps gemv_gbps ratio_percent" (medians)
  for round in 1 2 3 4 5; do
    env LPURT_KERNELS="$2" "$kernels" --benchmark_filter="BM_StreamRead|$1" --benchmark_min_time=0.5 \
      --benchmark_format=csv 2> /dev/null | grep '^"BM' | awk -F, '/StreamRead/ {s = $6} !/StreamRead/ {g = $6}
        END { printf "%.2f %.2f %.1f\n", s / 1e9, g / 1e9, 100 * g / s }'
  done | sort -t' ' -k3 -n | sed -n 3p
}

read -r stream _ _ <<< "$(paired 'BM_GemvInt8/16384/8192/' auto)"
echo "## Host speed of functional runs"
echo
echo "The physical limit of a decode step is the host's memory bandwidth: every weight byte is read once"
echo "per token. Streaming read over 512 MB with the kernels' TBB threads and 32-byte loads: about"
echo "**$stream GB/s** (it drifts between runs on this shared VM, so each ratio below pairs measurements taken"
echo "together and reports the median of 5 rounds)."
echo
echo "### int8 GEMV (Google Benchmark, \`bench_kernels\`)"
echo
echo "L3 cache: $(lscpu | awk -F: '/L3 cache/ {gsub(/^ +/, "", $2); print $2}'); a 64 MB matrix partly stays in it between repetitions."
echo
echo "| matrix | kernels | GB/s of weights | streaming read, same round (GB/s) | ratio |"
echo "|---|---|---|---|---|"
for shape in 8192/8192:64 16384/8192:128 32768/8192:256; do
  for k in portable avx2; do
    read -r s g r <<< "$(paired "BM_GemvInt8/${shape%%:*}/" "$([ $k = portable ] && echo portable || echo auto)")"
    echo "| ${shape##*:} MB | $k | $g | $s | $r% |"
  done
done
echo
echo "### Decode on one rank"
echo
echo "Decode tokens/s from the host time of the decode steps (64 tokens after a 16-token prompt); bytes per"
echo "token = every weight except the embedding table (one row of it); bound = the streaming read measured"
echo "just before the run / bytes per token. Peak RSS / chip state: the process's peak resident memory over"
echo "the weights, KV cache and buffers its chips hold (MPI, HDF5, TBB and the binary add a fixed ~35 MB)."
echo
echo "| model | chips | kernels | decode tokens/s | weight MB per token | streaming read (GB/s) | bound tokens/s | ratio | HDF5 load s/GB | peak RSS / chip state |"
echo "|---|---|---|---|---|---|---|---|---|---|"
"$lpurt" gen-model --preset small --out "$work/small.h5" > /dev/null
"$lpurt" gen-model --preset tinyllama-1.1b --out "$work/tinyllama.h5" > /dev/null
for spec in small:1 tinyllama:8; do
  model=${spec%%:*} chips=${spec##*:}
  for k in portable avx2; do
    bw=$("$kernels" --benchmark_filter=BM_StreamRead --benchmark_min_time=0.5 --benchmark_format=csv 2> /dev/null |
         grep '^"BM' | awk -F, '{printf "%.2f", $6 / 1e9}')
    env LPURT_KERNELS=$([ $k = portable ] && echo portable || echo auto) /usr/bin/time -f "%M" -o "$work/rss" \
      "$lpurt" run --model "$work/$model.h5" --chips "$chips" --prompt-len 16 --tokens 65 --context 128 --json > "$work/j"
    j=$(cat "$work/j")
    awk -v dec="$(echo "$j" | field host_decode_s)" -v bytes="$(echo "$j" | field weight_bytes_per_decode_token)" \
        -v bw="$bw" -v setup="$(echo "$j" | field host_setup_s)" -v read="$(echo "$j" | field weight_bytes_read_rank0)" \
        -v rss="$(cat "$work/rss")" -v state="$(echo "$j" | field chip_state_bytes_rank0)" \
        -v m="$model" -v c="$chips" -v k="$k" 'BEGIN {
      tps = 64 / dec; bound = bw * 1e9 / bytes;
      printf "| %s | %s | %s | %.1f | %.1f | %.1f | %.1f | %.0f%% | %.2f | %.2f |\n", m, c, k, tps, bytes / 1e6, bw,
             bound, 100 * tps / bound, setup / (read / 1e9), rss * 1024 / state }'
  done
done
echo
echo "### One rank against two (same chips, \`--bind-to none\`, cores split between the ranks)"
echo
echo "| model | chips | ranks | ms per decode token | MPI wait per token (ms, rank 0) | MPI share | vs 1 rank |"
echo "|---|---|---|---|---|---|---|"
for spec in small:2 tinyllama:8; do
  model=${spec%%:*} chips=${spec##*:}
  base=""
  for ranks in 1 2; do
    j=$(mpirun -np "$ranks" --bind-to none "$lpurt" run --model "$work/$model.h5" --chips "$chips" --tp "$chips" --pp 1 \
          --prompt-len 16 --tokens 65 --context 128 --json)
    ms=$(awk -v d="$(echo "$j" | field host_decode_s)" 'BEGIN{printf "%.3f", d / 64 * 1000}')
    [ -z "$base" ] && base=$ms
    awk -v ms="$ms" -v w="$(echo "$j" | field host_mpi_wait_s_rank0)" -v base="$base" -v m="$model" -v c="$chips" -v r="$ranks" \
      'BEGIN { wait = w / 64 * 1000; printf "| %s | %s | %s | %.2f | %.2f | %.0f%% | %+.0f%% |\n", m, c, r, ms, wait, 100 * wait / ms, 100 * (ms / base - 1) }'
  done
done
