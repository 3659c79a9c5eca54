"""Continuous batching on the running daemon: same answers, joins mid-flight, n > 1, fairness, cancellation."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time

import httpx

PROMPTS = ["Write a poem about the night sky.", "Tell me about cats.", "What is 2+2?",
           "Write a haiku about rain.", "Name three colours.", "Explain gravity simply."]


def _status(daemon) -> dict:
    return httpx.get(f"{daemon.base_url}/v1/status", timeout=10).json()


def _gemma(daemon) -> dict:
    return next(model for model in _status(daemon)["loaded_models"] if model["model"] == "gemma")


def _chat(content: str, **extra) -> dict:
    return {"model": "gemma", "messages": [{"role": "user", "content": content}], "max_tokens": 48,
            "temperature": 0, **extra}


def _streamed_text(daemon, body: dict, first_token: threading.Event | None = None) -> str:
    parts = []
    with httpx.stream("POST", f"{daemon.base_url}/v1/chat/completions", json={**body, "stream": True},
                      timeout=120) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                parts.extend(choice["delta"].get("content") or "" for choice in json.loads(line[6:])["choices"])
                if first_token is not None and parts:
                    first_token.set()
    return "".join(parts)


def test_greedy_output_is_the_same_batched_as_alone(daemon):
    alone = [_streamed_text(daemon, _chat(prompt)) for prompt in PROMPTS]
    # Each request starts once the one before it is generating, so every one
    # joins a batch in flight, and the batch's make-up changes at every join.
    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
        futures = []
        for prompt in PROMPTS:
            generating = threading.Event()
            futures.append(pool.submit(_streamed_text, daemon, _chat(prompt), generating))
            assert generating.wait(60)
        together = [future.result() for future in futures]
    assert together == alone


def test_n_choices_come_from_one_prompt(openai_tcp):
    single = openai_tcp.chat.completions.create(**_chat("Tell me a joke."))
    first = openai_tcp.chat.completions.create(**_chat("Tell me a joke.", temperature=1.0, seed=11, n=3))
    again = openai_tcp.chat.completions.create(**_chat("Tell me a joke.", temperature=1.0, seed=11, n=3))
    assert [choice.index for choice in first.choices] == [0, 1, 2]
    texts = [choice.message.content for choice in first.choices]
    assert len(set(texts)) == 3  # each choice samples with its own seed
    assert [choice.message.content for choice in again.choices] == texts  # and the request is reproducible
    assert first.usage.prompt_tokens == single.usage.prompt_tokens  # the prompt counts once
    assert 3 <= first.usage.completion_tokens <= 3 * 48


def test_n_choices_stream_with_their_index(openai_tcp):
    stream = openai_tcp.chat.completions.create(**_chat("Name a fruit.", temperature=1.0, seed=5, n=2),
                                                stream=True, stream_options={"include_usage": True})
    texts, finished, usage = {0: "", 1: ""}, {}, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
    assert set(finished) == {0, 1}
    assert all(texts.values())
    assert usage.completion_tokens >= 2


def test_a_long_request_is_not_starved_by_a_stream_of_short_ones(daemon):
    """More short requests than slots keep coming; the long one still gets a slot and finishes."""
    long_done = threading.Event()
    shorts_served = []

    def keep_asking() -> None:
        with httpx.Client(base_url=daemon.base_url, timeout=120) as http:
            while not long_done.is_set():
                response = http.post("/v1/chat/completions", json=_chat("Hi", max_tokens=3))
                assert response.status_code == 200, response.text
                shorts_served.append(time.monotonic())

    slots = len(_gemma(daemon)["slots"])
    with concurrent.futures.ThreadPoolExecutor(slots + 2) as pool:
        askers = [pool.submit(keep_asking) for _ in range(slots + 1)]
        while len(shorts_served) < 2 * slots:  # the queue is busy before the long request arrives
            assert not any(asker.done() for asker in askers), [asker.exception() for asker in askers]
            time.sleep(0.05)  # watching a counter another thread fills: no event to await
        started = time.monotonic()
        try:
            long = httpx.post(f"{daemon.base_url}/v1/chat/completions", timeout=300,
                              json=_chat("Tell a long story.", max_tokens=120))
        finally:
            long_done.set()
        for asker in askers:
            asker.result()
    assert long.status_code == 200, long.text
    assert long.json()["usage"]["completion_tokens"] > 0
    assert sum(served > started for served in shorts_served) >= slots  # the short ones kept flowing meanwhile


def test_a_cancelled_request_frees_its_slot_and_cells_at_once(daemon):
    # Neither can end before the test is done with it: no end-of-generation token, no max_tokens.
    body = _chat("Write a poem about the night sky.", max_tokens=None, ignore_eos=True, stream=True)
    with httpx.Client(base_url=daemon.base_url, timeout=120) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as staying:
            staying_lines = staying.iter_lines()
            next(line for line in staying_lines if line.startswith("data:"))
            with http.stream("POST", "/v1/chat/completions", json=body) as leaving:
                # Hold on to the line iterator: dropping it would close the connection here.
                leaving_lines = leaving.iter_lines()
                next(line for line in leaving_lines if line.startswith("data:"))
                assert sum(slot["generating"] for slot in _gemma(daemon)["slots"]) == 2
            # The client is gone; its sequence leaves the batch at the next step.
            deadline = time.monotonic() + 15
            while sum(slot["generating"] for slot in _gemma(daemon)["slots"]) != 1:
                assert time.monotonic() < deadline, _gemma(daemon)["slots"]
                next(staying_lines)  # the other request goes on meanwhile
            slots = _gemma(daemon)["slots"]
            assert any(not slot["generating"] and slot["cached_tokens"] == 0 for slot in slots)
            # The request that stayed is still being served.
            assert next(line for line in staying_lines if line.startswith("data:"))


def test_the_next_turn_reuses_the_cached_conversation_and_answers_the_same(daemon, openai_tcp):
    story = " ".join(f"Line {number}: the lighthouse keeper counted the waves." for number in range(50))
    body = _chat(story + " What did the keeper count?")
    first = _streamed_text(daemon, body)
    before = _gemma(daemon)["prompt_cache"]
    second = _streamed_text(daemon, body)
    after = _gemma(daemon)["prompt_cache"]
    prompt_tokens = openai_tcp.chat.completions.create(**{**body, "max_tokens": 1}).usage.prompt_tokens
    assert prompt_tokens > 512  # longer than one batch: read in pieces the first time
    assert after["reused_tokens"] - before["reused_tokens"] == prompt_tokens - 1  # all but the last token
    assert after["read_tokens"] - before["read_tokens"] == 1
    assert second == first  # reading from the cache changes nothing
