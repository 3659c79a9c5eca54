"""Single-stream decode speed and time to first token, Hoshikage against its peers, in one run.

    .venv/bin/python tests/bench/bench_single.py [--runs 5] [--tokens 128]

Peers: llama.cpp's llama-server (built by tests/bench/build_llama_server.sh from the
llama.cpp tree vendored in the installed llama-cpp-python's sdist), llama-cpp-
python's own server, and llama-cpp-python in process (no HTTP at all). Every
server streams /v1/completions with the same prompts, greedy, the same threads
and context. Prints medians and the ratios to llama-server; goals: decode
>= 0.95x, TTFT <= 1.5x.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.peers import (Timing, hoshikage_server, in_process, llama_cpp_python_server,  # noqa: E402
                         llama_server, median_timing, model_and_llama_server, stream_completion)
from hoshikage.hardware import physical_core_count  # noqa: E402

STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"


def prompts(count: int) -> list[str]:
    # A different opening each run, so no server answers from a cached prompt.
    return [f"Story number {index}. {STORY}" for index in range(count)]


def measure_server(server, runs: int, tokens: int) -> Timing:
    context, port = server
    with context:
        stream_completion(port, "Warm up. " + STORY, 8)
        return median_timing([stream_completion(port, prompt, tokens) for prompt in prompts(runs)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=physical_core_count())
    args = parser.parse_args()

    model, binary = model_and_llama_server()
    print(f"model {model.name}, {args.threads} threads, ctx {args.ctx}, {args.tokens} tokens, "
          f"median of {args.runs} runs", flush=True)

    results: dict[str, Timing] = {}
    results["llama-server"] = measure_server(llama_server(binary, model, args.threads, args.ctx), args.runs, args.tokens)
    results["hoshikage"] = measure_server(hoshikage_server(model, args.threads, args.ctx), args.runs, args.tokens)
    results["llama_cpp.server"] = measure_server(llama_cpp_python_server(model, args.threads, args.ctx),
                                                 args.runs, args.tokens)
    results["llama-cpp-python in process"] = median_timing(
        in_process(model, args.threads, args.ctx, prompts(args.runs), args.tokens))

    reference = results["llama-server"]
    print(f"\n{'server':<30}{'decode tok/s':>14}{'ratio':>8}{'TTFT ms':>10}{'ratio':>8}{'tokens':>8}")
    for name, timing in results.items():
        print(f"{name:<30}{timing.decode_tps:>14.1f}{timing.decode_tps / reference.decode_tps:>8.2f}"
              f"{timing.ttft * 1000:>10.1f}{timing.ttft / reference.ttft:>8.2f}{timing.tokens:>8}")
    ours = results["hoshikage"]
    decode_ratio, ttft_ratio = ours.decode_tps / reference.decode_tps, ours.ttft / reference.ttft
    print(f"\nhoshikage / llama-server: decode {decode_ratio:.2f}x (goal >= 0.95), "
          f"TTFT {ttft_ratio:.2f}x (goal <= 1.5)")
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "single.json").write_text(json.dumps(
        {name: vars(timing) for name, timing in results.items()}, indent=2))


if __name__ == "__main__":
    main()
