"""KV state that outlives its slot and its process (issue 22), on the real model.

A slot taken for another prompt leaves its prefix in the host tier; a model unloaded, or a daemon exiting
when idle, leaves it on disk; the next prompt that shares it gets it restored instead of read, and the
greedy answer is the one a warm slot gives. Forgetting the conversation deletes what was saved of it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from hoshikage.engine.llama import LoadedModel, LoadOptions
from hoshikage.engine.prompt_cache import PromptCache
from hoshikage.engine.sampling import SamplingParams
from hoshikage.engine.scheduler import ModelScheduler
from hoshikage.registry import ModelEntry
from tests.activation import Activator
from tests.conftest import register
from tests.llama_reference import repack_allowed

STORY = " ".join(f"Line {number}: the lighthouse keeper counted {number * 7} waves." for number in range(45))
OTHER = " ".join(f"Entry {number}: the harbour master logged {number * 3} ships." for number in range(45))


def load(gemma_path) -> LoadedModel:
    """Gemma with one slot; the scheduler that drives it frees it when closed."""
    entry = ModelEntry("gemma", str(gemma_path), 1024, None, "gemma", False, 0.0, None)
    return LoadedModel.load(entry, LoadOptions(context_length=1024, gpu_layers=0, threads=2, slots=1,
                                               weight_repack=repack_allowed()))


def run(scheduler: ModelScheduler, model, text: str) -> tuple[str, int]:
    async def one():
        chunks = [chunk async for chunk in scheduler.submit(model.completion_prompt(text, ()),
                                                             SamplingParams(temperature=0), 12)]
        return "".join(chunk.text for chunk in chunks), chunks[-1].restored_tokens

    return asyncio.run(one())


def test_a_prefix_evicted_from_its_slot_is_restored_and_answers_as_the_warm_slot(gemma_path, tmp_path):
    question = STORY + " Question: how many waves on line 3?"
    model = load(gemma_path)
    plain = ModelScheduler(model, 4)  # one slot, no prompt cache: the warm reference
    try:
        run(plain, model, STORY)
        run(plain, model, question)
        warm, _ = run(plain, model, question)  # the slot holds the whole question: only its last token is read
    finally:
        asyncio.run(plain.close())
    tiers = PromptCache(tmp_path, "gemma-test", 64 * 2**20, 0, 256)
    model = load(gemma_path)
    cached = ModelScheduler(model, 4, cache=tiers)
    try:
        run(cached, model, question)
        run(cached, model, OTHER)  # the one slot is taken: the question's prefix goes to the host tier
        assert tiers.describe()["host"]["entries"] == 1
        answer, restored = run(cached, model, question)
        prompt_tokens = model.completion_prompt(question, ()).tokens
    finally:
        asyncio.run(cached.close())
    assert restored == len(prompt_tokens) - 1
    assert answer == warm
    assert tiers.describe()["restores"] == 1


def chat(port: int, messages: list[dict]) -> str:
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=300, json={
        "model": "gemma", "messages": messages, "max_tokens": 12, "temperature": 0})
    assert answer.status_code == 200, answer.text
    return answer.json()["choices"][0]["message"]["content"]


def wait_for_exits(activator: Activator, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(activator.exit_codes) < count:  # the process's exit, seen by its supervisor
        assert time.monotonic() < deadline, activator.log_text()[-3000:]
        time.sleep(0.2)


def socket_activated(tmp_path, gemma_path, embedding_model_dir) -> tuple[Activator, Path]:
    """Gemma under socket activation with a 2 s idle exit, memory on; and where its prompt cache saves."""
    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "1024")
    cache_dir = tmp_path / "prompt-cache"
    return Activator(tmp_path, "--idle-timeout", "2", env={
        "HOSHIKAGE_PROMPT_CACHE_DIR": str(cache_dir), "SENTENCE_BERT_MODEL": str(embedding_model_dir)}), cache_dir


def test_after_an_idle_exit_the_next_turn_is_restored_not_read(tmp_path, gemma_path, embedding_model_dir):
    activator, cache_dir = socket_activated(tmp_path, gemma_path, embedding_model_dir)
    try:
        history = [{"role": "user", "content": STORY}]
        history.append({"role": "assistant", "content": chat(activator.port, history)})
        history.append({"role": "user", "content": "How many waves on line 3?"})
        chat(activator.port, history)
        warm = chat(activator.port, history)  # as a warm daemon answers the turn once its slot holds it
        wait_for_exits(activator, 1)  # idle exit: the slot's state is saved on the way out
        assert activator.exit_codes == [0]
        assert len(list(cache_dir.glob("*/*.kv"))) == 1
        after = chat(activator.port, history)  # a new process
        status = httpx.get(f"http://127.0.0.1:{activator.port}/v1/status", timeout=30).json()
    finally:
        activator.stop()
    assert after == warm
    log = activator.log_text()
    assert "kv_restored=" in log, log[-3000:]
    tiers = status["loaded_models"][0]["prompt_cache"]["tiers"]
    assert tiers["restores"] == 1 and tiers["restored_tokens"] > 500, tiers


def test_forgetting_a_conversation_deletes_its_saved_state(tmp_path, gemma_path, embedding_model_dir):
    activator, cache_dir = socket_activated(tmp_path, gemma_path, embedding_model_dir)
    try:
        base = f"http://127.0.0.1:{activator.port}/v1"
        conversation = httpx.post(f"{base}/conversations", json={}, timeout=120).json()["id"]
        answer = httpx.post(f"{base}/responses", timeout=300, json={
            "model": "gemma", "input": STORY, "max_output_tokens": 4, "conversation": conversation})
        assert answer.status_code == 200, answer.text
        wait_for_exits(activator, 1)
        assert len(list(cache_dir.glob("*/*.kv"))) == 1
        # The chain resumed in a new process: memory's prompt begins as the saved prefix does.
        resumed = httpx.post(f"{base}/responses", timeout=300, json={
            "model": "gemma", "input": "How many waves on line 3?", "max_output_tokens": 4,
            "previous_response_id": answer.json()["id"]})
        assert resumed.status_code == 200, resumed.text
        assert "kv_restored=" in activator.log_text()
        deleted = httpx.delete(f"{base}/conversations/{conversation}", timeout=120)
        assert deleted.status_code == 200, deleted.text
        assert list(cache_dir.glob("*/*.kv")) == []
        wait_for_exits(activator, 2)  # and the slot that held it is not saved at this exit either
        assert list(cache_dir.glob("*/*.kv")) == []
    finally:
        activator.stop()
