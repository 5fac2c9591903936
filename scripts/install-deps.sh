#!/usr/bin/env bash
# Installs everything ckpt needs to build and test, from Debian 12 packages only. Run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(
  # build
  cmake g++ make pkg-config
  # the benchmark's peer (ckpt-bench --peers)
  zstd
  # library
  libhdf5-dev zlib1g-dev libzstd-dev libxxhash-dev libdeflate-dev libboost-serialization-dev nlohmann-json3-dev libfmt-dev
  libmsgpack-cxx-dev
  # tools and tests
  libcli11-dev catch2 hdf5-tools
  # ckpt::mpi (the build-mpi/ tree): the MPI build of HDF5, Open MPI's mpirun
  libhdf5-openmpi-dev openmpi-bin
  # ckpt::torch (libckpt_torch): libtorch, found by find_package(Torch)
  libtorch-dev
  # Python peers that judge our files
  python3 python3-h5py python3-numpy python3-xxhash python3-msgpack python3-torch python3-torchvision
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
