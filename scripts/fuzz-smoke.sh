#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each from the committed seed corpus
# (tests/fuzz/corpus) in a scratch copy, deterministically (fixed seed and number of runs, so CI gives
# the same answer every time). A crash, undefined behaviour, timeout or (system files) leak fails the
# script and leaves the reproducer in the printed folder.
# The model-file target runs without leak detection: HDF5 1.10.8 itself leaks on some corrupt files
# (for example inside H5Fopen -> H5G_mkroot when the root group cannot be loaded), where lpurt holds no
# handle and reports a clean error; those leaks are not lpurt's.
# Usage: scripts/fuzz-smoke.sh   (FUZZ_RUNS, default 20000 inputs per target; FUZZ_TARGETS, default
# "system_file toml job_file hf_config safetensors": the model-file target finds an HDF5 1.10.8 hang inside
# H5Aread on a corrupt file, see tests/fuzz/findings/README.md, so it runs on request: FUZZ_TARGETS=model_file)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${FUZZ_RUNS:-20000}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLPURT_BUILD_FUZZERS=ON \
  -DLPURT_BUILD_TESTS=OFF -DLPURT_BUILD_BENCH=OFF > /dev/null
cmake --build build-fuzz --target fuzz_model_file fuzz_system_file fuzz_toml fuzz_job_file fuzz_hf_config \
  fuzz_safetensors > /dev/null
work=$(mktemp -d)
status=0
for target in ${FUZZ_TARGETS:-system_file toml job_file hf_config safetensors}; do
  mkdir -p "$work/$target"
  cp tests/fuzz/corpus/$target/* "$work/$target/"
  leaks=1
  [ "$target" = model_file ] && leaks=0
  start=$(date +%s)
  ASAN_OPTIONS=detect_leaks=$leaks ./build-fuzz/tests/fuzz/fuzz_$target "$work/$target" -seed=1 -runs="$runs" \
    -timeout=10 -rss_limit_mb=2048 -max_len=65536 -artifact_prefix="$work/$target/" > "$work/$target.log" 2>&1 || true
  corpus=$(find "$work/$target" -maxdepth 1 -type f ! -name 'crash-*' ! -name 'leak-*' ! -name 'timeout-*' | wc -l)
  echo "fuzz_$target: $runs inputs in $(( $(date +%s) - start )) s, corpus $corpus files"
  if [ -n "$(find "$work/$target" -maxdepth 1 \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \))" ]; then
    echo "fuzz_$target found a failing input: see $work/$target and $work/$target.log"
    grep -E "ERROR|SUMMARY" "$work/$target.log" | head -5
    status=1
  fi
done
[ "$status" -eq 0 ] && rm -rf "$work" && echo "fuzz smoke: no failure"
exit "$status"
