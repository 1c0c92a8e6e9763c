#!/usr/bin/env bash
# The README's second Quick start command: build (if needed) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
ctest --test-dir build --output-on-failure -j 2 < /dev/null
