#!/usr/bin/env bash
# Build llama.cpp's llama-server from the llama.cpp tree vendored in the same
# llama-cpp-python sdist that Hoshikage runs on, so both sides of the benchmark
# use identical kernels. Cached: prints the binary's path, building only once.
set -euo pipefail
version=$("${PYTHON:-python3}" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
cache=${HOSHIKAGE_BENCH_CACHE:-$HOME/.cache/hoshikage-bench}/llama-cpp-python-$version
binary=$cache/build/bin/llama-server
if [ ! -x "$binary" ]; then
  mkdir -p "$cache"
  if [ ! -d "$cache/src" ]; then
    "${PYTHON:-python3}" -m pip download --quiet --no-deps --no-binary :all: \
      "llama-cpp-python==$version" -d "$cache" >&2
    tar -xzf "$cache/llama_cpp_python-$version.tar.gz" -C "$cache"
    mv "$cache/llama_cpp_python-$version/vendor/llama.cpp" "$cache/src"
    rm -rf "$cache/llama_cpp_python-$version"
  fi
  cmake -S "$cache/src" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
  cmake --build "$cache/build" --target llama-server -j "$(nproc)" >&2
fi
echo "$binary"
