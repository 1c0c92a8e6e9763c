#!/usr/bin/env bash
# Builds lpurt with AddressSanitizer and UndefinedBehaviorSanitizer (every UB report is fatal) and runs
# the test suite under them, except the tests labelled slow. Leak detection is off: Open MPI's own
# allocations at exit are reported as leaks (they are not lpurt's).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLPURT_SANITIZE_ADDRESS=ON \
  -DLPURT_SANITIZE_UNDEFINED=ON -DLPURT_BUILD_BENCH=OFF > /dev/null
cmake --build build-sanitize
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-sanitize --output-on-failure -j 2 -LE "slow|slurm|twohost" < /dev/null
