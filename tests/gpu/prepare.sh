#!/usr/bin/env bash
# Stage, here, what the GPU machine needs and cannot download: tests/gpu/carry/ (git-ignored, < 64 MiB).
#   carry/llama.cpp   the llama.cpp tree vendored in the llama-cpp-python sdist this checkout pins,
#                     pruned of docs, models, tests, examples, the web UI and the other backends
#   carry/bindings    llama-cpp-python's Python package (pure Python; its library comes from the build)
#   carry/python      for the device's Python ($DEVICE_PYTHON, 3.12), the packages the checks need that
#                     it lacks: openai and gguf with their dependencies
# Then on the device (the `device` tool, carry tests/gpu/carry): bash tests/gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")"
repo=$(cd ../.. && pwd)
pip="$repo/.venv/bin/pip"
pin() { sed -n "s/^$1==//p" "$repo/packaging/requirements-dev.txt"; }
version=$(pin llama_cpp_python)
device_python=${DEVICE_PYTHON:-3.12}
rm -rf carry && mkdir -p carry/python carry/bindings
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
  "llama-cpp-python==$version" -d "$work"
tar -xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
sdist="$work/llama_cpp_python-$version"
cp -r "$sdist/llama_cpp" carry/bindings/llama_cpp
mv "$sdist/vendor/llama.cpp" carry/llama.cpp
(
  cd carry/llama.cpp
  rm -rf docs models tests examples gguf-py benches media pocs skills conversion ci \
         requirements grammars .github .devops
  find scripts -mindepth 1 ! -name '*.cmake' -exec rm -rf {} +  # the build runs scripts/ui-assets.cmake
  # The web UI's sources: the build is told not to embed or download it.
  rm -rf tools/ui/src tools/ui/tests tools/ui/static tools/ui/package-lock.json
  rm -rf tools/server/tests tools/server/public* tools/server/webui
  for backend in ggml/src/ggml-*/; do
    case "$(basename "$backend")" in ggml-cpu|ggml-cuda|ggml-blas) ;; *) rm -rf "$backend" ;; esac
  done
)

# Exactly the pinned versions, built for the device's Python; what it already has
# (numpy, httpx, pyyaml, ...) is left out.
wheels=(openai anyio httpx2 httpcore2 jiter pydantic pydantic_core sniffio typing_extensions annotated-types
        typing-inspection gguf tqdm diskcache)
specs=()
for name in "${wheels[@]}"; do
  spec=$(grep -i -E "^${name//[-_]/[-_]}==" "$repo/packaging/requirements-dev.txt" || true)
  specs+=("${spec:-$name}")
done
"$pip" install --quiet --disable-pip-version-check --no-deps --only-binary :all: --target carry/python \
  --python-version "$device_python" --implementation cp --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform any "${specs[@]}"
find carry -name __pycache__ -prune -exec rm -rf {} +
du -sh carry carry/llama.cpp carry/bindings carry/python
