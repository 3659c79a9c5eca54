"""A bounded queue: 429 with Retry-After beyond it, 503 when a turn never comes."""

from __future__ import annotations

import concurrent.futures
import contextlib
import time

import httpx
import openai
import pytest

from tests.conftest import Daemon, register

LONG = {"model": "gemma", "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 150, "temperature": 0, "stream": True}
SHORT = {"model": "gemma", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def small_queue_daemon(tmp_path_factory, gemma_path):
    state = tmp_path_factory.mktemp("queue-state")
    register(state, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "1024")
    # One slot: a long generation holds the model, so the next request waits.
    running = Daemon(state, {"HOSHIKAGE_SLOTS": "1", "HOSHIKAGE_MAX_QUEUE": "1",
                             "HOSHIKAGE_QUEUE_TIMEOUT_SECONDS": "1.5"},
                     "--no-embedded-model")
    yield running
    running.stop()


@contextlib.contextmanager
def generating(daemon):
    """A long generation holding the model, until the block ends."""
    with httpx.Client(base_url=daemon.base_url, timeout=120) as http:
        with http.stream("POST", "/v1/chat/completions", json=LONG) as response:
            lines = response.iter_lines()
            next(line for line in lines if line.startswith("data:"))  # it is running now
            yield


def test_beyond_the_queue_is_429_with_retry_after(small_queue_daemon):
    with generating(small_queue_daemon), concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(httpx.post, f"{small_queue_daemon.base_url}/v1/chat/completions",
                              json=SHORT, timeout=120)
        status = small_queue_daemon.base_url + "/v1/status"
        deadline = time.monotonic() + 30
        while httpx.get(status).json()["queue"]["waiting"] < 1:  # the daemon's own count: no event to await
            assert time.monotonic() < deadline, "the request never queued"
        refused = httpx.post(f"{small_queue_daemon.base_url}/v1/chat/completions", json=SHORT, timeout=30)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.json()["error"]["code"] == "queue_full"
    # The queued request was served, or timed out as a 503; never lost or failed.
    assert waiting.result().status_code in (200, 503)


def test_a_turn_that_never_comes_is_503_with_retry_after(small_queue_daemon):
    with generating(small_queue_daemon):
        timed_out = httpx.post(f"{small_queue_daemon.base_url}/v1/chat/completions", json=SHORT, timeout=60)
    assert timed_out.status_code == 503
    assert int(timed_out.headers["Retry-After"]) > 0
    assert timed_out.json()["error"]["code"] == "queue_timeout"
    # Nothing of it is left behind: the next request is served.
    assert httpx.post(f"{small_queue_daemon.base_url}/v1/chat/completions", json=SHORT, timeout=60).status_code == 200


def test_the_openai_sdk_retries_a_503_after_retry_after_and_succeeds(small_queue_daemon):
    """The SDK retries 429/503 by itself, waiting as long as Retry-After says."""
    client = openai.OpenAI(base_url=f"{small_queue_daemon.base_url}/v1", api_key="unused", max_retries=2)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with httpx.Client(base_url=small_queue_daemon.base_url, timeout=120) as http:
            response = http.send(http.build_request("POST", "/v1/chat/completions", json=LONG), stream=True)
            lines = response.iter_lines()
            next(line for line in lines if line.startswith("data:"))
            finishing = pool.submit(lambda: [line for line in lines])  # let it run to its end
            raw = client.chat.completions.with_raw_response.create(**{**SHORT, "stream": False})
            finishing.result()
            response.close()
    assert raw.retries_taken >= 1  # the first attempt got a 503: its turn did not come in 1.5 s
    assert raw.parse().usage.completion_tokens > 0
