#!/usr/bin/env bash
# Build hoshikage_<version>_<arch>.deb and hoshikage-memory_<version>_<arch>.deb (conversation memory's
# dependencies; the last line printed is the main package's path):
#   packaging/build-deb.sh            CPU build          -> dist/
#   packaging/build-deb.sh --cuda     NVIDIA GPU build   -> dist/cuda/ (needs the CUDA toolkit, nvcc on PATH
#                                     or under /usr/local/cuda; the target needs the NVIDIA driver and the
#                                     toolkit's runtime libraries, libcudart and libcublas)
#   add --dry-run to print the build environment and stop.
# Installs the build dependencies (Debian 12), then dpkg-buildpackage -us -uc -b.
# The Python dependencies are bundled by dh-virtualenv from
# packaging/requirements-daemon.txt. The CPU flavour installs the portable
# llama-cpp-python wheel of packaging/llama-wheel.sh (built once, shared with
# the development virtualenv); the CUDA flavour compiles its own, with a pip
# cache of its own, so it never gets the CPU wheel back.
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=cpu dry_run=false
for argument in "$@"; do
  case "$argument" in
    --cuda) flavour=cuda ;;
    --dry-run) dry_run=true ;;
    *) echo "usage: $0 [--cuda] [--dry-run]" >&2; exit 2 ;;
  esac
done
out=dist
if [ "$flavour" = cuda ]; then
  out=dist/cuda
  # GGML_NATIVE=OFF: llama.cpp otherwise tunes its CPU code for the build
  # machine (-march=native) and the package would crash elsewhere.
  export CMAKE_ARGS="-DGGML_CUDA=on -DGGML_RPC=ON -DGGML_NATIVE=OFF ${CMAKE_ARGS:-}"
  export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}-cuda"
  [ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
  if ! $dry_run && ! command -v nvcc >/dev/null; then
    echo "build-deb.sh: --cuda needs the CUDA toolkit (nvcc not found on PATH or in /usr/local/cuda/bin)" >&2
    exit 2
  fi
fi
if $dry_run; then
  echo "flavour=$flavour"
  echo "CMAKE_ARGS=${CMAKE_ARGS:-}"
  echo "PIP_CACHE_DIR=${PIP_CACHE_DIR:-$HOME/.cache/pip}"
  echo "output=$out"
  exit 0
fi
BUILD_DEPS=(debhelper dh-virtualenv python3 python3-venv python3-dev build-essential cmake pkg-config
            libsystemd-dev dpkg-dev)
missing=()
for package in "${BUILD_DEPS[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ "$flavour" = cpu ]; then
  # The portable llama-cpp-python wheel (packaging/llama-wheel.sh): the package runs on any
  # x86-64 CPU, and a checkout that already built it for its virtualenv does not compile again.
  PIP_FIND_LINKS="$(packaging/llama-wheel.sh) ${PIP_FIND_LINKS:-}"
  export PIP_FIND_LINKS
fi
dpkg-buildpackage -us -uc -b
mkdir -p "$out"
version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -q DEB_HOST_ARCH)
mv "../hoshikage_${version}_${arch}.deb" "../hoshikage-memory_${version}_${arch}.deb" "$out/"
rm -f "../hoshikage_${version}_${arch}.buildinfo" "../hoshikage_${version}_${arch}.changes" \
      "../hoshikage-dbgsym_${version}_${arch}.deb"
echo "$out/hoshikage-memory_${version}_${arch}.deb"
echo "$out/hoshikage_${version}_${arch}.deb"
