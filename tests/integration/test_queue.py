"""A bounded queue: 429 with Retry-After beyond it, 503 when a turn never comes."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time

import httpx
import openai
import pytest

from tests.conftest import Daemon, register

CONTEXT = 4096
# Holds the only slot until the test lets go. End-of-generation tokens are
# banned (ignore_eos) and there is no max_tokens, so it could only end at the
# end of its 4096-token context: about a minute on the development machine,
# and a 1.5 s queue timeout is all any test below waits for. The test ends
# it by closing the stream, and the slot is free at the next step.
HOLD = {"model": "gemma", "messages": [{"role": "user", "content": "Tell a long story."}],
        "temperature": 0, "ignore_eos": True, "stream": True}
SHORT = {"model": "gemma", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def _one_slot_daemon(tmp_path_factory, gemma_path, queue_timeout: str) -> Daemon:
    state = tmp_path_factory.mktemp("queue-state")
    register(state, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", str(CONTEXT))
    # One slot: while the test holds it, the next request waits.
    return Daemon(state, {"HOSHIKAGE_SLOTS": "1", "HOSHIKAGE_MAX_QUEUE": "1",
                          "HOSHIKAGE_QUEUE_TIMEOUT_SECONDS": queue_timeout}, "--no-embedded-model")


@pytest.fixture(scope="module")
def small_queue_daemon(tmp_path_factory, gemma_path):
    """Waiting for a turn ends after 1.5 s."""
    running = _one_slot_daemon(tmp_path_factory, gemma_path, "1.5")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def patient_queue_daemon(tmp_path_factory, gemma_path):
    """Waiting for a turn lasts as long as the test holds the slot (the default 300 s)."""
    running = _one_slot_daemon(tmp_path_factory, gemma_path, "300")
    yield running
    running.stop()


@contextlib.contextmanager
def holding_the_slot(daemon):
    """The model's only slot is generating until the block ends."""
    with httpx.Client(base_url=daemon.base_url, timeout=120) as http:
        with http.stream("POST", "/v1/chat/completions", json=HOLD) as response:
            lines = response.iter_lines()  # kept: dropping the iterator would close the stream now
            next(line for line in lines if line.startswith("data:"))  # it is running now
            yield


def test_beyond_the_queue_is_429_with_retry_after(patient_queue_daemon):
    daemon = patient_queue_daemon
    # The pool outlives the hold: leaving the block releases the slot first.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with holding_the_slot(daemon):
            waiting = pool.submit(httpx.post, f"{daemon.base_url}/v1/chat/completions", json=SHORT, timeout=120)
            deadline = time.monotonic() + 30
            while httpx.get(f"{daemon.base_url}/v1/status").json()["queue"]["waiting"] < 1:
                # The daemon's own count: no event to await.
                assert time.monotonic() < deadline, "the request never queued"
            refused = httpx.post(f"{daemon.base_url}/v1/chat/completions", json=SHORT, timeout=30)
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) > 0
            assert refused.json()["error"]["code"] == "queue_full"
            assert not waiting.done()  # its turn has not come while the slot is held
        # The queued request is served once the slot comes free: never lost or failed.
        assert waiting.result().status_code == 200


def test_a_turn_that_never_comes_is_503_with_retry_after(small_queue_daemon):
    with holding_the_slot(small_queue_daemon):
        timed_out = httpx.post(f"{small_queue_daemon.base_url}/v1/chat/completions", json=SHORT, timeout=60)
    assert timed_out.status_code == 503
    assert int(timed_out.headers["Retry-After"]) > 0
    assert timed_out.json()["error"]["code"] == "queue_timeout"
    # Nothing of it is left behind: the next request is served.
    assert httpx.post(f"{small_queue_daemon.base_url}/v1/chat/completions", json=SHORT, timeout=60).status_code == 200


def test_the_openai_sdk_retries_a_503_after_retry_after_and_succeeds(small_queue_daemon):
    """The SDK retries 429/503 by itself, waiting as long as Retry-After says."""
    refused = threading.Event()

    def note_refusal(response: httpx.Response) -> None:
        if response.status_code == 503:
            refused.set()

    http_client = openai.DefaultHttpxClient(event_hooks={"response": [note_refusal]})
    client = openai.OpenAI(base_url=f"{small_queue_daemon.base_url}/v1", api_key="unused", max_retries=2,
                           http_client=http_client)
    with client, concurrent.futures.ThreadPoolExecutor(1) as pool:
        with holding_the_slot(small_queue_daemon):
            asking = pool.submit(client.chat.completions.with_raw_response.create, **{**SHORT, "stream": False})
            assert refused.wait(60), "the first attempt was not refused"  # its turn did not come in 1.5 s
        # The slot is free now; the SDK's retry, Retry-After seconds later, is served.
        raw = asking.result()
    assert raw.retries_taken >= 1
    assert raw.parse().usage.completion_tokens > 0
