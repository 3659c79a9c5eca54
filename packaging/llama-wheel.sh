#!/usr/bin/env bash
# Build llama-cpp-python once as a portable wheel and print the directory that holds it:
#   packaging/llama-wheel.sh
# The development virtualenv, the .deb and the container image all install this one wheel
# (pip --find-links DIR), so a run that needs all three compiles llama.cpp once.
#
# Portable: llama.cpp's default build tunes its kernels for the build machine (-march=native),
# so a package built on an AVX-512 host would crash on an older CPU. Built with GGML_NATIVE=OFF,
# GGML_BACKEND_DL and GGML_CPU_ALL_VARIANTS instead, it carries one CPU backend per CPU
# generation and loads the best one the CPU runs (hoshikage/engine/native.py points llama.cpp
# at them). The variants cost build time (~10 min on 2 cores instead of ~6), once per version.
# GGML_RPC adds llama.cpp's RPC backend (libggml-rpc.so, 0.1 MiB of the wheel's 27): `hoshikage
# rpc-server` and models registered with --rpc (hoshikage/engine/rpc.py).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^llama[-_]cpp[-_]python==//p' packaging/requirements-daemon.txt)
cmake_args="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DGGML_RPC=ON"
key=$(printf '%s %s' "$version" "$cmake_args" | sha256sum | cut -c1-12)
cache=${HOSHIKAGE_WHEEL_CACHE:-$HOME/.cache/hoshikage/wheels}
directory=$cache/llama-cpp-python-$version-$key
if ! compgen -G "$directory/llama_cpp_python-$version-*.whl" >/dev/null; then
  echo "building llama-cpp-python $version, portable (all CPU variants; ~10 min on 2 cores, once)" >&2
  # Debian's python3 has no pip of its own: build from a virtualenv kept beside the wheels.
  [ -x "$cache/build-venv/bin/python" ] || /usr/bin/python3 -m venv "$cache/build-venv"
  python=$cache/build-venv/bin/python
  rm -rf "$directory.partial"
  # --no-cache-dir: pip's cache may hold a wheel of the same version built for one CPU.
  CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$python" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-cache-dir \
      --no-binary llama-cpp-python "llama-cpp-python==$version" --wheel-dir "$directory.partial" >&2
  rm -rf "$directory"
  mv "$directory.partial" "$directory"
fi
echo "$directory"
