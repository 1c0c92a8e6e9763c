#!/usr/bin/env bash
# The README's first Quick start command: install dependencies, build, and run the default job
# (the built-in model on 4 simulated chips over 2 MPI ranks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # harmless when not root
# tp 2 x pp 2: the model is split over the 4 chips, which exchange activations and partial sums over
# MPI (left to itself, the planner would run this tiny model on one chip and leave three idle).
mpirun -np 2 build/jobs/lpurt run --chips 4 --tp 2 --pp 2 --tokens 16
