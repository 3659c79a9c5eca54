"""More conversations than slots: a returning conversation's time to first token, against its warm-slot one.

    .venv/bin/python tests/bench/bench_slot_churn.py [--conversations 16] [--history 1500] [--rounds 2]

16 conversations (each ~1.5k tokens of history, its own numbers) take turns over 4 slots, the packaged
Gemma 3 270M, 2 threads, 4096 tokens per slot, Chat Completions with the whole history as clients send it,
greedy, 8 tokens an answer. Each server runs alone and gets the same workload:

- warm slot: a conversation's turn right after its own previous turn (its slot still holds the prefix);
- returning: round-robin, each conversation's turn after the 15 others' (4 slots: its prefix left them).

Servers: Hoshikage (prompt cache host tier on, issue 22), Hoshikage with the disk tier only, Hoshikage
without either (as before issue 22),
llama-server -np 4 with --cache-ram (its host-memory prompt cache) and with --cache-ram 0. Goal: for
Hoshikage, returning <= 1.5x warm slot. Prints medians and ratios; writes tests/bench/results/slot_churn.json.
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

THREADS, SLOTS, CTX = 2, 4, 4096


def conversation(number: int, tokens: int) -> list[dict]:
    """About TOKENS tokens of history, different in every conversation from its first message on."""
    messages, count, turn = [], 0, 0
    while count < tokens:
        lines = " ".join(f"Ship {number}, log {turn}.{line}: {number * 977 + turn * 13 + line} crates."
                         for line in range(8))
        messages += [{"role": "user", "content": lines}, {"role": "assistant", "content": f"Noted {turn}."}]
        count += 150
        turn += 1
    return messages


def turn(port: int, messages: list[dict]) -> tuple[float, str]:
    """Seconds to the first streamed content of the next turn, and the answer."""
    started, first, parts = time.perf_counter(), None, []
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", timeout=600, json={
            "model": "bench", "messages": messages, "max_tokens": 8, "temperature": 0, "stream": True}) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                delta = choices[0].get("delta", {}).get("content")
                if delta:
                    first = first or time.perf_counter() - started
                    parts.append(delta)
    return first or time.perf_counter() - started, "".join(parts)


def workload(port: int, count: int, history: int, rounds: int) -> dict:
    chats = [conversation(number, history) for number in range(count)]

    def ask(number: int, question: str) -> float:
        chats[number].append({"role": "user", "content": question})
        seconds, answer = turn(port, chats[number])
        chats[number].append({"role": "assistant", "content": answer or "."})
        return seconds

    for number in range(count):  # each reads its history once
        ask(number, "How many crates in log 1.1?")
    returning, warm = [], []
    for round_ in range(rounds):
        for number in range(count):  # 15 others between two turns of one conversation
            returning.append(ask(number, f"And in log {round_ + 2}.{number % 8}?"))
        for number in range(0, count, 2):  # right after its own turn: the slot holds it
            ask(number, "And in log 0.0?")
            warm.append(ask(number, "And in log 0.1?"))
    return {"returning": returning, "warm": warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=16)
    parser.add_argument("--history", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model, binary = model_and_llama_server()
    servers = {
        "hoshikage": lambda: hoshikage_server(model, THREADS, CTX, SLOTS),
        "hoshikage, disk tier only": lambda: hoshikage_server(model, THREADS, CTX, SLOTS,
                                                              {"HOSHIKAGE_PROMPT_CACHE_RAM_MIB": "0"}),
        "hoshikage, no prompt cache": lambda: hoshikage_server(model, THREADS, CTX, SLOTS, {
            "HOSHIKAGE_PROMPT_CACHE_RAM_MIB": "0", "HOSHIKAGE_PROMPT_CACHE_DISK_MIB": "0"}),
        "llama-server --cache-ram 8192": lambda: llama_server(binary, model, THREADS, CTX, SLOTS,
                                                              "--cache-ram", "8192"),
        "llama-server --cache-ram 0": lambda: llama_server(binary, model, THREADS, CTX, SLOTS, "--cache-ram", "0"),
    }
    report = {}
    print(f"{args.conversations} conversations of ~{args.history} tokens over {SLOTS} slots, {THREADS} threads")
    print(f"{'server':<32} {'warm slot ms':>13} {'returning ms':>13} {'returning/warm':>15}")
    for name, start in servers.items():
        context, port = start()
        with context:
            measured = workload(port, args.conversations, args.history, args.rounds)
        warm, back = statistics.median(measured["warm"]), statistics.median(measured["returning"])
        report[name] = {"warm_ms": warm * 1000, "returning_ms": back * 1000, "ratio": back / warm}
        print(f"{name:<32} {warm * 1000:>13.0f} {back * 1000:>13.0f} {back / warm:>15.2f}", flush=True)
    print("goal: Hoshikage's returning <= 1.5x its warm slot")
    results = Path(__file__).with_name("results") / "slot_churn.json"
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
