#!/usr/bin/env bash
# The GPU check, on a machine with an NVIDIA GPU and no network (tests/gpu/README in check.py's docstring):
#   bash tests/gpu/run.sh            build llama.cpp with CUDA, write two random-weight ~1-2 B models
#                                    (vocabulary 262144 and 32000), run check.py on each
#   bash tests/gpu/run.sh --cpu      the same on a CPU build with tiny models: a dry run of the script
# Needs tests/gpu/carry/ from tests/gpu/prepare.sh (run where PyPI is reachable). Output and the
# reports go to $OUT (the device tool brings them back) or tests/gpu/out.
set -euo pipefail
cd "$(dirname "$0")/../.."
cpu=false
[ "${1:-}" = --cpu ] && cpu=true
out=${OUT:-tests/gpu/out}
mkdir -p "$out"
build=${GPU_CHECK_BUILD:-/tmp/hoshikage-gpu-build}
models=${GPU_CHECK_MODELS:-/tmp/hoshikage-gpu-models}
python=${PYTHON:-python3}
carry=tests/gpu/carry
[ -d "$carry/llama.cpp" ] || { echo "run tests/gpu/prepare.sh first (needs PyPI)" >&2; exit 2; }

flags=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
       -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
       -DGGML_NATIVE=ON)
if ! $cpu; then
  export PATH="$PATH:/usr/local/cuda/bin"
  # One architecture (the H100/H200's) and one flash-attention KV type keep the build near 4.5 min on 16 cores.
  flags+=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES:-90-real} -DGGML_CUDA_FA_QUANTS=f16-f16)
  nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv | tee "$out/gpu.txt"
fi
started=$(date +%s)
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$carry/llama.cpp" -B "$build" "${generator[@]}" "${flags[@]}" > "$out/cmake.log" 2>&1 \
  || { tail -30 "$out/cmake.log"; exit 1; }
cmake --build "$build" --target llama llama-server -j "$(nproc)" > "$out/build.log" 2>&1 \
  || { tail -40 "$out/build.log"; exit 1; }
echo "llama.cpp built in $(( $(date +%s) - started )) s"

export LLAMA_CPP_LIB_PATH="$build/bin"
export PYTHONPATH="$PWD:$PWD/$carry/bindings${PYTHONPATH:+:$PYTHONPATH}"
# The carried wheels are for the GPU machine's Python; a Python that has the packages keeps its own.
"$python" -c "import openai, gguf" 2>/dev/null || PYTHONPATH="$PYTHONPATH:$PWD/$carry/python"
mkdir -p "$models"
tiny=(); $cpu && tiny=(--tiny)
status=0
for vocab in 262144 32000; do
  model="$models/random-${vocab}${tiny[*]:+-tiny}.gguf"
  [ -s "$model" ] || "$python" tests/gpu/make_model.py "$model" --vocab "$vocab" "${tiny[@]}"
  extra=(); $cpu && extra=(--cpu --clients 1,4 --tokens 32)
  "$python" tests/gpu/check.py --model "$model" --llama-server "$build/bin/llama-server" \
    --report "$out/report-$vocab.json" "${extra[@]}" || status=1
done
echo "GPU check finished in $(( $(date +%s) - started )) s, status $status"
exit $status
