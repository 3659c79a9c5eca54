"""What users tell the daemon to remember survives exits, restarts and kill -9; unused memory costs nothing."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Daemon, register

SHORT = {"model": "gemma", "max_output_tokens": 6, "temperature": 0}
HEAVY = ("chromadb", "torch", "sentence_transformers")


@pytest.fixture
def state_dir(tmp_path, gemma_path) -> Path:
    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "2048")
    return tmp_path


def _start(state_dir: Path, embedding_model_dir: Path, **env: str) -> Daemon:
    return Daemon(state_dir, {"SENTENCE_BERT_MODEL": str(embedding_model_dir), **env}, "--no-embedded-model")


def _client(daemon: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{daemon.base_url}/v1", api_key="unused", max_retries=0)


def _mapped_libraries(daemon: Daemon) -> str:
    return Path(f"/proc/{daemon.process.pid}/maps").read_text()


def test_a_chain_continues_after_the_daemon_exits_and_a_new_one_starts(state_dir, embedding_model_dir):
    first_daemon = _start(state_dir, embedding_model_dir)
    try:
        with _client(first_daemon) as client:
            first = client.responses.create(input="My locker number is 612.", **SHORT)
            second = client.responses.create(input="Noted?", previous_response_id=first.id, **SHORT)
    finally:
        assert first_daemon.stop() == 0
    next_daemon = _start(state_dir, embedding_model_dir)  # what the next socket activation does
    try:
        with _client(next_daemon) as client:
            third = client.responses.create(input="What is my locker number?", previous_response_id=second.id,
                                            **SHORT)
            report = httpx.get(f"{next_daemon.base_url}/hoshikage/memory/{third.id}/context", timeout=30).json()
    finally:
        next_daemon.stop()
    contents = [message["content"] for message in report["messages"]]
    assert contents[:4] == ["My locker number is 612.", first.output_text, "Noted?", second.output_text]


def test_a_turn_answered_right_before_kill_9_is_still_there(state_dir, embedding_model_dir):
    daemon = _start(state_dir, embedding_model_dir)
    try:
        with _client(daemon) as client:
            answered = client.responses.create(input="The meeting moved to Thursday.", **SHORT)
        daemon.process.send_signal(signal.SIGKILL)  # no shutdown code runs
        daemon.process.wait()
    finally:
        daemon.stop()
    restarted = _start(state_dir, embedding_model_dir)
    try:
        with _client(restarted) as client:
            assert client.responses.retrieve(answered.id).output_text == answered.output_text
            items = client.responses.input_items.list(answered.id).data
            assert [item.content[0].text for item in items] == ["The meeting moved to Thursday."]
    finally:
        restarted.stop()


def test_memory_loads_nothing_until_a_request_needs_it(state_dir, embedding_model_dir):
    daemon = _start(state_dir, embedding_model_dir)
    try:
        with _client(daemon) as client:
            client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
            client.completions.create(model="gemma", prompt="Hi", max_tokens=4)
            plain = _mapped_libraries(daemon)
            assert not [name for name in HEAVY if f"/{name}/" in plain]
            assert not (state_dir / "chroma").exists()
            client.responses.create(input="Now remember this.", **SHORT)
            assert "/chromadb" in _mapped_libraries(daemon)  # the check above can see a loaded store
    finally:
        daemon.stop()


def test_a_store_that_cannot_be_opened_is_a_clear_503_and_chat_keeps_working(state_dir, embedding_model_dir):
    blocker = state_dir / "not-a-directory"
    blocker.write_text("")
    daemon = _start(state_dir, embedding_model_dir, CHROMA_PATH=str(blocker))
    try:
        with _client(daemon) as client:
            with pytest.raises(openai.InternalServerError) as raised:
                client.responses.create(input="Remember me.", **SHORT)
            error = raised.value.response.json()["error"]
            assert raised.value.status_code == 503 and error["code"] == "memory_unavailable"
            assert "chroma_path" in error["message"] and str(blocker) in error["message"]
            streamed = httpx.post(f"{daemon.base_url}/v1/responses", timeout=30,
                                  json={**SHORT, "input": "Remember me.", "stream": True})
            assert streamed.status_code == 503 and streamed.json()["error"]["code"] == "memory_unavailable"
            chat = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Hi"}],
                                                  max_tokens=4)
            assert chat.choices[0].message.content is not None
            assert client.responses.create(input="Stateless.", store=False, **SHORT).status
    finally:
        assert daemon.stop() == 0


def test_a_missing_embedding_model_is_a_clear_503_naming_the_setting(state_dir, tmp_path):
    from tests.memory_corpus import conversation

    daemon = Daemon(state_dir, {"SENTENCE_BERT_MODEL": str(tmp_path / "no-such-model")}, "--no-embedded-model")
    try:
        with _client(daemon) as client:
            short = client.responses.create(input="A short chat needs no embeddings.", **SHORT)
            assert short.status in ("completed", "incomplete")
            with pytest.raises(openai.InternalServerError) as raised:
                client.chat.completions.create(model="gemma", messages=conversation(300), max_tokens=4,
                                               extra_body={"memory_overflow": "summarize"})
            error = raised.value.response.json()["error"]
            assert raised.value.status_code == 503 and error["code"] == "memory_unavailable"
            assert "sentence_bert_model" in error["message"] and "never downloads" in error["message"]
    finally:
        assert daemon.stop() == 0
