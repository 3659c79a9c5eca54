"""Open WebUI with its defaults, replayed: its first message is answered on both connections, streaming (issue 24).

Open WebUI's default ("native") function calling sends its built-in tools with every chat (36 here: ~22 KB,
~7k prompt tokens), and beside the chat it asks for a title (max_tokens 1000), then follow-ups and tags. The
bodies in tests/data/open_webui are what it sends (see its README); here they go through the clients that
speak each connection, the OpenAI SDK and the ollama client, to a daemon with default settings and the model
registered without --ctx. Before, the first message was a 400 context_length_exceeded on both connections.
"""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.conftest import Daemon, register

DATA = Path(__file__).resolve().parent.parent / "data" / "open_webui"


def _body(name: str) -> dict:
    """A request body as Open WebUI sends it, for the model `gemma`."""
    body = json.loads((DATA / "requests.json").read_text())[name]
    tools = json.loads((DATA / "builtin_tools.json").read_text())
    body = {key: value for key, value in body.items() if not key.startswith("_")}
    return {**body, "model": "gemma", **({"tools": tools} if body.get("tools") == "@builtin_tools" else {})}


@pytest.fixture(scope="module")
def defaults_daemon(tmp_path_factory, gemma_path):
    state = tmp_path_factory.mktemp("open-webui")
    register(state, gemma_path, "gemma")  # no --ctx, no chat format: as a user would
    # Open WebUI sets no max_tokens on the chat, follow-ups and tags, and this tiny model at temperature 1 may
    # write thousands of tokens before it stops (4790 once): the daemon's default_max_tokens bounds the test's
    # length, nothing else differs from a default daemon.
    running = Daemon(state, {"HOSHIKAGE_DEFAULT_MAX_TOKENS": "200"}, "--no-embedded-model")
    yield running
    running.stop()


@pytest.fixture
def openai_client(defaults_daemon):
    with openai.OpenAI(base_url=f"{defaults_daemon.base_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture
def ollama_client(defaults_daemon):
    with ollama.Client(host=defaults_daemon.base_url) as client:
        yield client


def test_the_first_message_streams_over_the_openai_connection(openai_client):
    client = openai_client
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        title = pool.submit(client.chat.completions.create, **_body("title"))
        chunks = list(client.chat.completions.create(**_body("chat_openai")))
        titled = title.result()
    content = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    calls = [chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.tool_calls]
    finish = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finish and finish[-1] in ("stop", "length", "tool_calls"), finish
    assert chunks[-1].usage is None or chunks[-1].usage.prompt_tokens > 4096
    assert len(content) >= 2 or calls, chunks  # text token by token (or a call, whole)
    assert titled.choices[0].message.content and titled.usage.prompt_tokens > 0
    for name in ("follow_ups", "tags"):
        assert client.chat.completions.create(**_body(name)).choices[0].finish_reason in ("stop", "length")


def test_the_first_message_streams_over_the_ollama_connection(defaults_daemon, ollama_client):
    client = ollama_client
    body = _body("chat_ollama")
    parts = list(client.chat(model=body["model"], messages=body["messages"], tools=body["tools"], stream=True))
    assert parts[-1].done and parts[-1].done_reason in ("stop", "length")
    assert sum(1 for part in parts if part.message.content) >= 2 or parts[-1].message.tool_calls, parts
    assert parts[-1].prompt_eval_count > 4096  # what a fixed 4096-token default refused
    # Its title request puts num_predict at the top level (Open WebUI's own quirk): answered all the same.
    titled = httpx.post(f"{defaults_daemon.base_url}/api/chat", json=_body("title_ollama"), timeout=300)
    assert titled.status_code == 200 and titled.json()["message"]["content"], titled.text
    for name in ("follow_ups_ollama", "tags_ollama"):
        body = _body(name)
        assert client.chat(model=body["model"], messages=body["messages"], stream=False).done


def test_the_context_is_the_models_trained_one_and_says_why(defaults_daemon, ollama_client, gemma_path):
    from hoshikage.gguf_meta import read_gguf_info

    trained = read_gguf_info(gemma_path).context_length
    status = httpx.get(f"{defaults_daemon.base_url}/v1/status", timeout=30).json()
    (model,) = [m for m in status["loaded_models"] if m["model"] == "gemma"]
    assert trained == 32768 and model["context_length"] == trained
    assert model["context_reason"] == "the model's trained context"
    shown = ollama_client.show("gemma")
    assert shown.parameters == f"num_ctx {trained}"
