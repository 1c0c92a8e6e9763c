#!/usr/bin/env bash
# Regenerates docs/PERFORMANCE.md: simulator speed (bench/simulator.sh) and host speed (bench/host.sh).
# Usage: bench/performance.sh [BUILD_DIR]   (default build; about 5 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bash bench/simulator.sh "$build/jobs/lpurt"
section=$(mktemp)
bash bench/host.sh "$build" > "$section"
{ echo; cat "$section"; } >> docs/PERFORMANCE.md
rm -f "$section"
echo "wrote docs/PERFORMANCE.md"
