"""The request that wakes the daemon has its model loading while the daemon is still starting (first_request.py).

Socket-activated through systemd-socket-activate, with the real OpenAI SDK and ollama client. The order is read
from the daemon's own log: the read-ahead is announced before the daemon imports its HTTP side, so its line comes
before "listening on" whatever the machine's speed; a request the daemon refuses or cannot serve loads nothing.
"""

from __future__ import annotations

import httpx
import ollama
import openai
import pytest

from tests.activation import Activator
from tests.conftest import register, write_tiny_gguf

pytestmark = pytest.mark.skipif(
    __import__("shutil").which("systemd-socket-activate") is None, reason="needs systemd-socket-activate")

KEY = "sesame-key"
PRELOAD = "the request that started the daemon asks for"
MESSAGES = [{"role": "user", "content": "Say hi"}]


@pytest.fixture
def activator(tmp_path, gemma_path):
    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "1024")
    register(tmp_path, write_tiny_gguf(tmp_path / "broken.gguf"), "broken")  # a header, no usable weights
    running = Activator(tmp_path, "--idle-timeout", "1", env={"HOSHIKAGE_API_KEY": KEY})
    yield running
    running.stop()


def _lines(activator: Activator) -> list[str]:
    return activator.log_text().splitlines()


def _first_index(lines: list[str], text: str) -> int:
    return next(index for index, line in enumerate(lines) if text in line)


def _openai(activator: Activator, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{activator.port}/v1", api_key=key, max_retries=0)


def _wait_for_idle_exit(activator: Activator) -> None:
    process = activator.current
    assert process.wait(60) == 0, activator.log_text()


def test_the_first_requests_model_loads_before_the_daemon_listens(activator):
    with _openai(activator) as client:
        warm = client.chat.completions.create(model="gemma", messages=MESSAGES, max_tokens=4, temperature=0)
        lines = _lines(activator)
        assert _first_index(lines, f"{PRELOAD} gemma") < _first_index(lines, "listening on")
        assert sum("loading model gemma" in line for line in lines) == 1, "loaded once, ahead, used by the request"
        # The same answer as a daemon already running gives (the second request is served the usual way).
        again = client.chat.completions.create(model="gemma", messages=MESSAGES, max_tokens=4, temperature=0)
    assert warm.choices[0].message.content == again.choices[0].message.content
    _wait_for_idle_exit(activator)


def test_ollama_names_are_resolved_as_ollamas_endpoints_resolve_them(activator):
    with ollama.Client(host=f"http://127.0.0.1:{activator.port}",
                       headers={"Authorization": f"Bearer {KEY}"}) as client:
        answer = client.chat(model="gemma:latest", messages=MESSAGES, options={"num_predict": 3})
    assert answer.message.content is not None
    assert f"{PRELOAD} gemma" in activator.log_text()
    _wait_for_idle_exit(activator)


def test_a_request_the_daemon_refuses_loads_nothing(activator):
    with _openai(activator, "wrong-key") as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gemma", messages=MESSAGES, max_tokens=2)
    _wait_for_idle_exit(activator)
    assert PRELOAD not in activator.log_text() and "loading model" not in activator.log_text()


def test_requests_that_name_no_model_to_load_are_served_as_before(activator):
    base = f"http://127.0.0.1:{activator.port}"
    assert httpx.get(f"{base}/health", timeout=60).status_code == 200
    _wait_for_idle_exit(activator)
    with _openai(activator) as client:
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nothing", messages=MESSAGES, max_tokens=2)
        _wait_for_idle_exit(activator)
        with pytest.raises(openai.BadRequestError):  # a chat model asked for embeddings: a 400, no load
            client.embeddings.create(model="gemma", input="hi")
        _wait_for_idle_exit(activator)
    assert PRELOAD not in activator.log_text() and "loading model" not in activator.log_text()


def test_a_model_that_fails_ahead_fails_its_request_with_the_same_clear_error(activator):
    with _openai(activator) as client:
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="broken", messages=MESSAGES, max_tokens=2)
        assert failed.value.status_code == 503 and failed.value.body["code"] == "model_load_failed"
        assert "ahead of its request failed" in activator.log_text()
        # The daemon that failed it is healthy and serves the next request.
        assert client.chat.completions.create(model="gemma", messages=MESSAGES, max_tokens=2).choices
    _wait_for_idle_exit(activator)
