"""Throughput under concurrent clients, Hoshikage against its peers, in one run.

    .venv/bin/python tests/bench/bench_concurrency.py [--passes 3] [--rounds 2] [--tokens 128]

Every server gets 1, 4 and 8 clients at once, each streaming /v1/completions of
--tokens greedy tokens from its own prompt; a round ends when the last client
is done. Peers: llama.cpp's llama-server with -np 4 (4 slots, the same context
per slot), llama-cpp-python's own server, and Hoshikage with 4 slots; same
GGUF, same threads. Prints, per server and client count, the aggregate tok/s
(all tokens / wall time of the round), the median per-stream decode tok/s and
the median time to first token, with their ratios to llama-server, and draws
docs/bench-concurrency.png. With --passes N every server runs N times, in
turn, and each figure is the median over the passes. Goals: 1 client >=
0.95x llama-server's decode, 4 clients aggregate >= 1.0x, TTFT <= 1.5x.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.peers import (hoshikage_server, llama_cpp_python_server, llama_server,  # noqa: E402
                               model_and_llama_server, stream_arrivals)
from hoshikage.hardware import physical_core_count  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"
CLIENTS = (1, 4, 8)
SLOTS = 4


@dataclass
class Level:
    clients: int
    aggregate_tps: float  # median over rounds
    stream_tps: float  # median over every request
    ttft: float  # seconds, median over every request
    tokens: float  # mean tokens a request received (a server that cuts streams off shows it here)


def measure_level(port: int, clients: int, rounds: int, tokens: int, serial: list[int],
                  extra: dict | None = None) -> Level:
    aggregates, stream_rates, ttfts, counts = [], [], [], []
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for _ in range(rounds):
            prompts = []
            for _ in range(clients):
                serial[0] += 1  # a different opening each request: nothing answers from a cached prompt
                prompts.append(f"Story number {serial[0]}. {STORY}")
            began = time.perf_counter()
            results = list(pool.map(lambda prompt: stream_arrivals(port, prompt, tokens, extra), prompts))
            ended = max((arrivals[-1] for _, arrivals in results if arrivals), default=time.perf_counter())
            aggregates.append(sum(len(arrivals) for _, arrivals in results) / (ended - began))
            for started, arrivals in results:
                counts.append(len(arrivals))
                if arrivals:
                    ttfts.append(arrivals[0] - started)
                if len(arrivals) > 1:
                    stream_rates.append((len(arrivals) - 1) / (arrivals[-1] - arrivals[0]))
    return Level(clients, statistics.median(aggregates), statistics.median(stream_rates) if stream_rates else 0.0,
                 statistics.median(ttfts) if ttfts else float("nan"), statistics.mean(counts))


def measure_server(server, rounds: int, tokens: int) -> list[Level]:
    context, port = server
    serial = [0]
    with context:
        stream_arrivals(port, "Warm up. " + STORY, 8)
        return [measure_level(port, clients, rounds, tokens, serial) for clients in CLIENTS]


def combine(runs: list[list[Level]]) -> list[Level]:
    """One server's levels over several passes: the median of each figure."""
    return [Level(levels[0].clients, statistics.median(level.aggregate_tps for level in levels),
                  statistics.median(level.stream_tps for level in levels),
                  statistics.median(level.ttft for level in levels), statistics.mean(level.tokens for level in levels))
            for levels in zip(*runs)]


def draw_chart(results: dict[str, list[Level]], path: Path, title: str, tokens: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 5))
    width = 0.8 / len(results)
    for offset, (name, levels) in enumerate(results.items()):
        positions = [index + (offset - (len(results) - 1) / 2) * width for index in range(len(levels))]
        worst = min(levels, key=lambda level: level.tokens)
        if worst.tokens < tokens * 0.95:  # its bars count fewer tokens than asked for: say so on the chart
            name += (f"\n(cuts streams off: a request got {worst.tokens:.0f} of {tokens} tokens"
                     f"\non average at {worst.clients} clients)")
        throughput.bar(positions, [level.aggregate_tps for level in levels], width, label=name)
        latency.bar(positions, [level.ttft * 1000 for level in levels], width, label=name)
    for axes, label in ((throughput, "aggregate tokens/s (higher is better)"),
                        (latency, "median time to first token, ms (lower is better)")):
        axes.set_xticks(range(len(CLIENTS)), [f"{clients} client{'s' if clients > 1 else ''}"
                                              for clients in CLIENTS])
        axes.set_ylabel(label)
        axes.grid(axis="y", alpha=0.3)
    handles, labels = throughput.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.14, 1, 1))  # room for the legend under the plots
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per client count in each pass")
    parser.add_argument("--passes", type=int, default=1,
                        help="run every server this many times, in turn, and report the medians: the machine's "
                             "speed drifts over minutes, and interleaving spreads the drift over all servers")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--ctx", type=int, default=2048, help="context per slot")
    parser.add_argument("--threads", type=int, default=physical_core_count())
    parser.add_argument("--chart", type=Path, default=REPO / "docs" / "bench-concurrency.png")
    args = parser.parse_args()

    model, binary = model_and_llama_server()
    setup = (f"model {model.name}, {args.threads} threads, {args.ctx} context per slot, {args.tokens} tokens "
             f"per request, {args.rounds} rounds per level, {args.passes} passes")
    print(setup, flush=True)

    servers = {
        "llama-server -np 4": lambda: llama_server(binary, model, args.threads, args.ctx, parallel=SLOTS),
        "hoshikage": lambda: hoshikage_server(model, args.threads, args.ctx, slots=SLOTS),
        "llama_cpp.server": lambda: llama_cpp_python_server(model, args.threads, args.ctx),
    }
    passes: dict[str, list[list[Level]]] = {name: [] for name in servers}
    for number in range(args.passes):
        for name, start in servers.items():
            print(f"pass {number + 1}/{args.passes}: {name}", flush=True)
            passes[name].append(measure_server(start(), args.rounds, args.tokens))
    results = {name: combine(runs) for name, runs in passes.items()}

    reference = results["llama-server -np 4"]
    print(f"\n{'server':<22}{'clients':>8}{'agg tok/s':>11}{'ratio':>7}{'stream tok/s':>14}{'ratio':>7}"
          f"{'TTFT ms':>9}{'ratio':>7}{'tokens':>8}")
    for name, levels in results.items():
        for level, ref in zip(levels, reference):
            print(f"{name:<22}{level.clients:>8}{level.aggregate_tps:>11.1f}"
                  f"{level.aggregate_tps / ref.aggregate_tps:>7.2f}{level.stream_tps:>14.1f}"
                  f"{level.stream_tps / ref.stream_tps:>7.2f}{level.ttft * 1000:>9.0f}"
                  f"{level.ttft / ref.ttft:>7.2f}{level.tokens:>8.0f}")
    ours = {level.clients: level for level in results["hoshikage"]}
    theirs = {level.clients: level for level in reference}
    single = ours[1].stream_tps / theirs[1].stream_tps
    four = ours[4].aggregate_tps / theirs[4].aggregate_tps
    worst_ttft = max(ours[clients].ttft / theirs[clients].ttft for clients in CLIENTS)
    print(f"\nhoshikage / llama-server: 1-client decode {single:.2f}x (goal >= 0.95), "
          f"4-client aggregate {four:.2f}x (goal >= 1.0), worst TTFT {worst_ttft:.2f}x (goal <= 1.5)")

    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "concurrency.json").write_text(json.dumps(
        {"setup": setup, "results": {name: [asdict(level) for level in levels] for name, levels in results.items()}},
        indent=2))
    draw_chart(results, args.chart, f"gemma3 270M Q4_K_M, {args.threads} CPU threads, {args.tokens} tokens a request",
               args.tokens)
    print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()
