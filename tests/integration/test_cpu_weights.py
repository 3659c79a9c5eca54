"""The weight-repacking rule on the host the suite runs on (issue 20): an AMX Xeon or any other x86-64.

Whatever the CPU, the decision must follow what llama.cpp offers here, and a chat
model that may repack (batch_invariant off) and a quantised embedding model must
both load and decode: on an AMX host with the rule broken, the first decode is a
segmentation fault (llama.cpp issue #20824).
"""

from __future__ import annotations

import openai
import pytest

from hoshikage.engine import native
from hoshikage.engine.cpu_weights import cpu_flags, for_this_host
from tests.conftest import Daemon, register


@pytest.fixture(scope="module")
def host_decision():
    return for_this_host("auto")


def test_the_decision_follows_what_llama_cpp_offers_here(host_decision):
    offered = native.cpu_extra_buffer_types()
    assert offered is not None, "llama.cpp's CPU backend could not be asked for its buffer types"
    assert host_decision.buffer_types == offered
    assert host_decision.allowed is ("AMX" not in offered)
    if "AMX" in offered:  # llama.cpp offers it only where the CPU has it
        assert "amx_int8" in cpu_flags()


@pytest.fixture(scope="module")
def repacking_daemon(tmp_path_factory, gemma_path, embedding_gguf_q8):
    """A daemon whose chat model may repack (batch_invariant off), with a Q8_0 embedding model."""
    state_dir = tmp_path_factory.mktemp("repack-state")
    register(state_dir, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "512")
    register(state_dir, embedding_gguf_q8, "minilm-q8", "--embedding")
    running = Daemon(state_dir, {"HOSHIKAGE_BATCH_INVARIANT": "false", "HOSHIKAGE_SLOTS": "2"},
                     "--no-embedded-model")
    yield running
    running.stop()


def test_chat_and_quantised_embedding_models_load_and_decode_under_the_rule(repacking_daemon, host_decision):
    with openai.OpenAI(base_url=f"{repacking_daemon.base_url}/v1", api_key="unused", max_retries=0) as client:
        answer = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=4, temperature=0)
        assert answer.usage.completion_tokens >= 1
        vectors = client.embeddings.create(model="minilm-q8", input=["a lighthouse", "a harbour"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384
        status = client.get("/status", cast_to=object)
    rule = status["cpu"]["weight_repack"]
    assert rule["allowed"] is host_decision.allowed and rule["setting"] == "auto"
    assert rule["extra_buffer_types"] == list(host_decision.buffer_types)
    assert status["cpu"]["variant"] and status["cpu"]["features"]
    # Each load says what it did: both models repack exactly where the rule allows it.
    expected = "on" if host_decision.allowed else "off"
    log = repacking_daemon.log_text()
    assert f"repacked CPU weights {'allowed' if host_decision.allowed else 'off'}" in log
    assert log.count(f"cpu_weight_repack={expected}") >= 3, log[-3000:]  # the start and both loads
