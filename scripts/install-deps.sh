#!/usr/bin/env bash
# Installs lpurt's build and test dependencies from Debian 12 packages (as root, or via sudo).
set -euo pipefail
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
sudo_if_needed apt-get update -qq
sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  build-essential cmake ninja-build pkg-config \
  openmpi-bin libopenmpi-dev libtbb-dev libhdf5-dev hdf5-tools libcli11-dev libgtest-dev libbenchmark-dev libtomlplusplus-dev nlohmann-json3-dev \
  libsentencepiece-dev sentencepiece \
  python3-h5py python3-numpy clang libclang-rt-14-dev \
  gnuplot-nox slurm-wlm munge
