"""Prompt cache: time to first token over a ten-turn conversation, Hoshikage against llama-server.

    .venv/bin/python tests/bench/bench_conversation.py [--turns 10] [--tokens 128] [--repeats 3]

One client holds a conversation: each turn sends the whole history plus a new
question and streams a greedy answer of up to --tokens tokens, which joins the
history. Without a prompt cache every turn re-reads everything before it, so
the time to first token grows with the conversation; with one, a turn reads
only what is new. Prints the median TTFT of every turn over --repeats
conversations and turn N / turn 1; goal for Hoshikage: <= 1.2. llama-server
(-np 4, cache_prompt on) and Hoshikage without its cache hold the same
conversation for comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.peers import hoshikage_server, llama_server, model_and_llama_server  # noqa: E402
from hoshikage.hardware import physical_core_count  # noqa: E402

QUESTIONS = [
    "Tell me about the sea.", "What lives in it?", "Which of those is the largest?", "How deep can it dive?",
    "What does it eat?", "Where does it travel in winter?", "How long does it live?",
    "Are there many left?", "What threatens them?", "How can people help?", "Summarise what we discussed.",
]


def ask(port: int, messages: list[dict], max_tokens: int) -> tuple[float, str, int]:
    """Time to first token, the whole answer and the prompt's length of one streamed chat turn."""
    body = {"model": "bench", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    parts: list[str] = []
    first = None
    prompt_tokens = 0
    started = time.perf_counter()
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            prompt_tokens = (event.get("usage") or {}).get("prompt_tokens", prompt_tokens)
            choices = event.get("choices") or [{}]
            text = choices[0].get("delta", {}).get("content")
            if text:
                first = first or time.perf_counter() - started
                parts.append(text)
    return first if first is not None else time.perf_counter() - started, "".join(parts), prompt_tokens


def tokens_read(port: int) -> int | None:
    """Prompt tokens Hoshikage has evaluated so far (not taken from its cache); None for a peer."""
    response = httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=10)
    if response.status_code != 200 or "loaded_models" not in response.json():
        return None
    return sum(model["prompt_cache"]["read_tokens"] for model in response.json()["loaded_models"])


def converse(server, turns: int, tokens: int) -> tuple[list[float], list[int], list[int | None]]:
    """TTFT, prompt length and prompt tokens actually read (Hoshikage only) of every turn."""
    context, port = server
    with context:
        ask(port, [{"role": "user", "content": "Warm up."}], 4)
        messages: list[dict] = []
        ttfts, lengths, reads = [], [], []
        for question in QUESTIONS[:turns]:
            messages.append({"role": "user", "content": question})
            before = tokens_read(port)
            ttft, answer, prompt_tokens = ask(port, messages, tokens)
            after = tokens_read(port)
            messages.append({"role": "assistant", "content": answer})
            ttfts.append(ttft)
            lengths.append(prompt_tokens)
            reads.append(None if before is None else after - before)
        return ttfts, lengths, reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10, choices=range(2, len(QUESTIONS) + 1))
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--ctx", type=int, default=4096, help="context per slot")
    parser.add_argument("--threads", type=int, default=physical_core_count())
    parser.add_argument("--repeats", type=int, default=3,
                        help="hold the conversation this many times, each on freshly started servers taken in "
                             "turn, and report each turn's median: one TTFT is tens of milliseconds, easily "
                             "doubled by a neighbour on a shared machine")
    args = parser.parse_args()

    model, binary = model_and_llama_server()
    print(f"model {model.name}, {args.threads} threads, {args.turns} turns of up to {args.tokens} tokens, "
          f"median of {args.repeats} conversations", flush=True)
    servers = {
        "llama-server -np 4": lambda: llama_server(binary, model, args.threads, args.ctx, parallel=4),
        "hoshikage": lambda: hoshikage_server(model, args.threads, args.ctx, slots=4),
        "hoshikage, no prompt cache": lambda: hoshikage_server(
            model, args.threads, args.ctx, slots=4, env={"HOSHIKAGE_PROMPT_CACHE_MIN_TOKENS": str(args.ctx)}),
    }
    runs: dict[str, list[tuple[list[float], list[int], list[int | None]]]] = {name: [] for name in servers}
    for _ in range(args.repeats):
        for name, start in servers.items():
            runs[name].append(converse(start(), args.turns, args.tokens))
    results = {name: [statistics.median(run[0][turn] for run in conversations) for turn in range(args.turns)]
               for name, conversations in runs.items()}
    lengths, reads = runs["hoshikage"][0][1], runs["hoshikage"][0][2]
    print(f"\n{'turn':<6}{'prompt tokens':>14}{'read':>6}" + "".join(f"{name:>28}" for name in results))
    for turn in range(args.turns):
        print(f"{turn + 1:<6}{lengths[turn]:>14}{reads[turn]:>6}"
              + "".join(f"{ttfts[turn] * 1000:>25.0f} ms" for ttfts in results.values()))
    print(f"{'N / 1':<6}{'':>20}" + "".join(f"{ttfts[-1] / ttfts[0]:>28.2f}" for ttfts in results.values()))
    ours = results["hoshikage"]
    print(f"\nhoshikage: turn {args.turns} TTFT / turn 1 TTFT = {ours[-1] / ours[0]:.2f} (goal <= 1.2); "
          f"'read': prompt tokens Hoshikage evaluated, the rest came from its cache")
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "conversation.json").write_text(json.dumps(
        {"median_ttft": results, "prompt_tokens": lengths, "hoshikage_tokens_read": reads}, indent=2))


if __name__ == "__main__":
    main()
