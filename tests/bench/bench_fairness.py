"""A fair share of the slots: one identity's flood against another's single requests, beside llama-server.

    .venv/bin/python tests/bench/bench_fairness.py [--slots 4] [--flood 16] [--flood-requests 64]
        [--flood-tokens 32] [--tokens 8] [--think 0.5] [--llama-server BIN]

Identity A (key "a") keeps --flood requests outstanding until it has sent
--flood-requests, each --flood-tokens long (ignore_eos: every one runs to its
end). Identity B (key "b") sends one request at a time, --tokens long, with
--think seconds between (a person, or an agent's step). Measured on each
server, alone on the machine, with the same model, threads, slots and context
(Hoshikage as configured, and with spare_slots: 0 to show the queue alone):
B's time to first token on the idle server, A's throughput alone, then both
together: B's median TTFT and A's throughput beside B. llama-server (-np SLOTS)
serves the same workload first come, first served; it has no identities.
Goals (issue 25): B's TTFT under A's flood <= 2x B's idle TTFT, and A's
throughput beside B >= 0.95x A alone, on Hoshikage. On a machine whose cores
the model already fills, whatever B is served is taken from A: compare A's
ratio with the row without the spare slot, where B is served less.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hoshikage.hardware import physical_core_count  # noqa: E402
from tests.bench.peers import hoshikage_server, llama_server, model_and_llama_server  # noqa: E402

KEYS = {"a": "flood-key-000001", "b": "single-key-00002"}
STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"


def first_token(port: int, key: str, prompt: str, tokens: int) -> float:
    """Seconds from sending one streamed completion to its first token; the rest is read to the end."""
    body = {"model": "bench", "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "cache_prompt": False}
    started, first = time.perf_counter(), None
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=600,
                      headers={"Authorization": f"Bearer {key}"}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and line.startswith("data: ") and line != "data: [DONE]":
                if (json.loads(line[6:]).get("choices") or [{}])[0].get("text"):
                    first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("no token came")
    return first


def flood(port: int, outstanding: int, requests: int, tokens: int) -> float:
    """A's throughput: REQUESTS completions of TOKENS each, OUTSTANDING at a time; generated tokens per second."""
    remaining = [requests]
    lock = threading.Lock()
    generated = [0]
    failures: list[BaseException] = []

    def worker(number: int) -> None:
        with httpx.Client(timeout=600, headers={"Authorization": f"Bearer {KEYS['a']}"}) as http:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                    serial = remaining[0]
                try:
                    answer = http.post(f"http://127.0.0.1:{port}/v1/completions", json={
                        "model": "bench", "prompt": f"Tale {serial}. {STORY}", "max_tokens": tokens,
                        "temperature": 0, "ignore_eos": True, "cache_prompt": False})
                    answer.raise_for_status()
                    with lock:
                        generated[0] += answer.json()["usage"]["completion_tokens"]
                except Exception as error:  # noqa: BLE001 - reported after the run
                    failures.append(error)
                    return

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(number,)) for number in range(outstanding)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"the flood failed: {failures[0]!r}")
    return generated[0] / (time.perf_counter() - started)


def beside(port: int, args) -> tuple[float, list[float]]:
    """A's flood with B asking meanwhile: A's throughput, and B's times to first token."""
    ttfts: list[float] = []
    done = threading.Event()

    def single_requests() -> None:
        serial = 0
        while not done.is_set():
            serial += 1
            ttfts.append(first_token(port, KEYS["b"], f"Ask {serial}. {STORY}", args.tokens))
            done.wait(args.think)

    asker = threading.Thread(target=single_requests)  # B starts with A's flood, as on a shared machine
    asker.start()
    try:
        throughput = flood(port, args.flood, args.flood_requests, args.flood_tokens)
    finally:
        done.set()
        asker.join()
    return throughput, ttfts


def measure(server, args) -> dict[str, float]:
    """Medians over --rounds rounds of (A alone, A beside B), taken in turn so that a slow minute of a shared
    machine weighs on both."""
    context, port = server
    with context:
        first_token(port, KEYS["b"], "Warm up. " + STORY, 4)
        idle = statistics.median(first_token(port, KEYS["b"], f"Question {n}. {STORY}", args.tokens)
                                 for n in range(args.idle_requests))
        alone, together, ttfts = [], [], []
        for _ in range(args.rounds):
            alone.append(flood(port, args.flood, args.flood_requests, args.flood_tokens))
            throughput, asked = beside(port, args)
            together.append(throughput)
            ttfts += asked
    return {"b_idle_ttft": idle, "b_flood_ttft": statistics.median(ttfts), "b_requests": len(ttfts),
            "a_alone_tps": statistics.median(alone), "a_beside_tps": statistics.median(together),
            "a_beside_ratios": [round(t / a, 3) for a, t in zip(alone, together)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--flood", type=int, default=16, help="A's requests outstanding at once")
    parser.add_argument("--flood-requests", type=int, default=64)
    parser.add_argument("--flood-tokens", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=8, help="B's answer length")
    parser.add_argument("--think", type=float, default=0.5, help="B's pause between requests, seconds")
    parser.add_argument("--idle-requests", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3, help="of A alone, then A beside B")
    parser.add_argument("--ctx", type=int, default=1024, help="per slot")
    parser.add_argument("--llama-server", type=Path, help="default: built from the vendored llama.cpp")
    args = parser.parse_args()
    model, built = model_and_llama_server()
    binary = args.llama_server or built
    threads = physical_core_count()
    environment = {"HOSHIKAGE_API_KEYS": ",".join(f"{name}={key}" for name, key in KEYS.items()),
                   "HOSHIKAGE_MAX_QUEUE": str(4 * args.flood), "HOSHIKAGE_MAX_QUEUE_PER_IDENTITY": str(args.flood)}
    results = {
        "hoshikage": measure(hoshikage_server(model, threads, args.ctx, args.slots, environment), args),
        # The round-robin queue alone, without the spare sequence: B waits for one of A's answers to end.
        "no spare slot": measure(hoshikage_server(model, threads, args.ctx, args.slots,
                                                  {**environment, "HOSHIKAGE_SPARE_SLOTS": "0"}), args),
        "llama-server": measure(llama_server(binary, model, threads, args.ctx, args.slots), args),
    }
    print(f"\n{args.rounds} rounds; {args.slots} slots, {threads} threads; A keeps {args.flood} of "
          f"{args.flood_requests} x {args.flood_tokens}-token requests outstanding; B asks {args.tokens} tokens, "
          f"{args.think:g} s apart")
    print(f"{'server':<14}{'B idle TTFT':>13}{'B flood TTFT':>14}{'ratio':>8}{'A alone tok/s':>15}"
          f"{'A beside B':>12}{'ratio':>8}{'B asked':>9}")
    for name, row in results.items():
        print(f"{name:<14}{row['b_idle_ttft'] * 1000:>10.0f} ms{row['b_flood_ttft'] * 1000:>11.0f} ms"
              f"{row['b_flood_ttft'] / row['b_idle_ttft']:>7.2f}x{row['a_alone_tps']:>15.1f}"
              f"{row['a_beside_tps']:>12.1f}{row['a_beside_tps'] / row['a_alone_tps']:>7.2f}x{row['b_requests']:>9}")
    ours, theirs = results["hoshikage"], results["llama-server"]
    print(f"B's TTFT under the flood, Hoshikage vs llama-server: "
          f"{ours['b_flood_ttft'] / theirs['b_flood_ttft']:.2f}x")
    (Path(__file__).with_name("results") / "fairness.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
