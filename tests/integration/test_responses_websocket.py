"""The Responses API's WebSocket mode, through the openai SDK's client.responses.connect() on the real daemon.

One socket, many responses in turn; store: false chains held by their connection only; errors as one envelope
that leaves the socket open; the same auth, limits and cancellation as HTTP; and an open, silent socket that
neither keeps the daemon up nor counts as activity.
"""

from __future__ import annotations

import contextlib
import time

import httpx
import openai
import pytest

from tests.conftest import Daemon, register

# The SDK opens its socket with websockets' connect() outside a with block, which websockets 17 deprecates: the
# SDK's to change, not something these tests check.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}


def turn(connection, **create) -> list:
    """Send one response.create and read its events up to the terminal one (the error envelope included)."""
    connection.response.create(**create)
    events = []
    for event in connection:
        events.append(event)
        if event.type in TERMINAL:
            return events
    raise AssertionError(f"the socket closed after {[event.type for event in events]}")


def answer_text(events) -> str:
    return "".join(event.delta for event in events if event.type == "response.output_text.delta")


@pytest.fixture
def sdk(daemon):
    with openai.OpenAI(base_url=f"{daemon.base_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_one_socket_answers_responses_in_turn_with_the_events_of_a_stream(sdk):
    with sdk.responses.connect() as connection:
        first = turn(connection, model="gemma", input="Name a colour.", max_output_tokens=8, store=False,
                     temperature=0)
        second = turn(connection, model="gemma", input="Name a fruit.", max_output_tokens=8, store=False,
                      temperature=0)
    for events in (first, second):
        kinds = [event.type for event in events]
        assert kinds[:2] == ["response.created", "response.in_progress"], kinds
        assert kinds[-1] in ("response.completed", "response.incomplete"), kinds
        assert [event.sequence_number for event in events] == list(range(len(events)))  # numbered per response
        final = events[-1].response
        assert answer_text(events) == final.output[0].content[0].text and final.usage.output_tokens >= 1
    assert first[-1].response.id != second[-1].response.id


def test_a_store_false_chain_continues_on_its_connection_and_nowhere_else(sdk, daemon):
    with sdk.responses.connect() as connection:
        opening = turn(connection, model="gemma", input="Remember the code word: cobalt. Reply with OK.",
                       max_output_tokens=4, store=False, temperature=0)[-1].response
        following = turn(connection, model="gemma", input="What is the code word?", max_output_tokens=4,
                         store=False, temperature=0, previous_response_id=opening.id)[-1].response
    assert following.previous_response_id == opening.id
    # The history came along: the earlier input and output are read again before the new question.
    alone = sdk.responses.create(model="gemma", input="What is the code word?", max_output_tokens=1, store=False)
    assert following.usage.input_tokens >= alone.usage.input_tokens + opening.usage.input_tokens
    # Nothing of it reached the store: over HTTP, and on another connection, the id names nothing.
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="gemma", input="Again?", previous_response_id=opening.id, max_output_tokens=1)
    assert caught.value.code == "previous_response_not_found"
    with sdk.responses.connect() as connection:
        refused = turn(connection, model="gemma", input="Again?", store=False, previous_response_id=following.id)
        assert [event.type for event in refused] == ["error"]
        assert refused[0].status == 400 and refused[0].error.code == "previous_response_not_found"
        # The socket stays open for a fresh start.
        recovered = turn(connection, model="gemma", input="Start again.", max_output_tokens=2, store=False)
        assert recovered[-1].type in ("response.completed", "response.incomplete")


def test_a_failed_continuation_forgets_the_response_it_named(sdk):
    with sdk.responses.connect() as connection:
        opening = turn(connection, model="gemma", input="Remember: ember. Reply with OK.", max_output_tokens=2,
                       store=False)[-1].response
        orphan = turn(connection, model="gemma", store=False, previous_response_id=opening.id, input=[
            {"type": "function_call_output", "call_id": "call_missing", "output": "no call asked for this"}])
        assert [event.type for event in orphan] == ["error"]
        assert orphan[0].error.code == "invalid_request_error" and "call_missing" in orphan[0].error.message
        stale = turn(connection, model="gemma", input="Go on.", store=False, previous_response_id=opening.id)
        assert stale[0].type == "error" and stale[0].error.code == "previous_response_not_found"


def test_stored_responses_continue_from_any_connection_and_over_http(sdk):
    with sdk.responses.connect() as connection:
        stored = turn(connection, model="gemma", input="Remember: slate. Reply with OK.", max_output_tokens=2,
                      temperature=0)[-1].response
    assert sdk.responses.retrieve(stored.id).id == stored.id  # on disk before the terminal event was sent
    with sdk.responses.connect() as connection:
        following = turn(connection, model="gemma", input="And the word?", max_output_tokens=2,
                         previous_response_id=stored.id)[-1].response
    items = sdk.responses.input_items.list(following.id).data
    assert [item.type for item in items][:1] == ["message"] and len(items) >= 3  # the chain, then the new input


def test_client_mistakes_get_one_error_each_and_the_socket_goes_on(sdk):
    with sdk.responses.connect() as connection:
        connection.send({"type": "response.cancel"})
        unknown = next(iter(connection))
        connection.send({"type": "response.create", "model": "gemma", "input": "Hi", "temperature": "hot"})
        invalid = next(iter(connection))
        connection.send({"type": "response.create", "model": "no-such-model", "input": "Hi"})
        missing = next(iter(connection))
        connection.send({"type": "response.create", "model": "gemma", "input": "\ud800"})
        surrogate = next(iter(connection))
        fine = turn(connection, model="gemma", input="Hi", max_output_tokens=2, store=False)
    assert (unknown.type, unknown.status, unknown.error.code) == ("error", 400, "unknown_message_type")
    assert (invalid.status, invalid.error.param) == (400, "temperature")
    assert (missing.status, missing.error.code) == (404, "model_not_found")
    assert (surrogate.status, surrogate.error.code) == (400, "invalid_unicode")
    assert fine[-1].type in ("response.completed", "response.incomplete")


def _status(daemon) -> dict:
    return httpx.get(f"{daemon.base_url}/v1/status", timeout=30).json()


def _generating(daemon) -> int:
    model = next(model for model in _status(daemon)["loaded_models"] if model["model"] == "gemma")
    return sum(slot["generating"] for slot in model["slots"])


def test_only_a_running_response_counts_and_closing_the_socket_cancels_it(sdk, daemon):
    with sdk.responses.connect() as connection:
        # Open and silent: no request in flight, the idle timer runs (a Response earlier proves it is open).
        turn(connection, model="gemma", input="Hi", max_output_tokens=1, store=False)
        assert _status(daemon)["queue"]["in_flight_requests"] == 0
        # No end of generation and no output limit: it runs until the socket closes.
        connection.send({"type": "response.create", "model": "gemma", "input": "Count the stars.", "store": False,
                         "ignore_eos": True})
        next(event for event in connection if event.type == "response.output_text.delta")
        assert _generating(daemon) == 1 and _status(daemon)["queue"]["in_flight_requests"] == 1
    deadline = time.monotonic() + 15
    while _generating(daemon):
        assert time.monotonic() < deadline, "the generation outlived its socket"


def test_creates_wait_their_turn_up_to_a_bound(sdk, daemon):
    endless = {"type": "response.create", "model": "gemma", "input": "Count the stars.", "store": False,
               "ignore_eos": True}
    with sdk.responses.connect() as connection:
        connection.send(endless)  # runs until the socket closes: everything after it waits
        next(event for event in connection if event.type == "response.output_text.delta")
        for _ in range(9):
            connection.send({**endless, "ignore_eos": False, "max_output_tokens": 1})
        refused = next(event for event in connection if event.type == "error")
    assert (refused.status, refused.error.code) == (429, "too_many_waiting")
    assert "8 response.create messages" in refused.error.message
    deadline = time.monotonic() + 15
    while _generating(daemon):  # neither the running one nor the waiting ones outlive the socket
        assert time.monotonic() < deadline


def test_the_unix_socket_serves_the_websocket_mode(daemon):
    import aiohttp
    import asyncio

    async def over_unix() -> list[dict]:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.unix_path))) as session:
            async with session.ws_connect("http://hoshikage/v1/responses") as socket:
                await socket.send_json({"type": "response.create", "model": "gemma", "input": "Hi",
                                        "max_output_tokens": 2, "store": False})
                events = []
                while not events or events[-1]["type"] not in TERMINAL:
                    events.append(await socket.receive_json(timeout=120))
                return events

    events = asyncio.run(over_unix())
    assert events[0]["type"] == "response.created" and events[-1]["type"] in TERMINAL - {"error"}


def test_a_plain_get_is_told_to_upgrade(daemon):
    answer = httpx.get(f"{daemon.base_url}/v1/responses", timeout=30)
    assert answer.status_code == 426 and answer.headers["Upgrade"] == "websocket"
    assert answer.json()["error"]["code"] == "websocket_upgrade_required"


def test_tcp_needs_the_key_and_a_silent_socket_does_not_keep_the_daemon_up(tmp_path, gemma_path):
    """A daemon of its own, with an API key and an idle exit after 2 s (so keep-alive is 2 s too)."""
    from websockets.exceptions import InvalidStatus

    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "1024")
    running = Daemon(tmp_path, {"HOSHIKAGE_API_KEY": "sesame"}, "--no-embedded-model", "--idle-timeout", "2",
                     "--exit-when-idle")
    try:
        with openai.OpenAI(base_url=f"{running.base_url}/v1", api_key="wrong", max_retries=0) as wrong:
            with pytest.raises(InvalidStatus) as refused, wrong.responses.connect():
                pass
            assert refused.value.response.status_code == 401
        with openai.OpenAI(base_url=f"{running.base_url}/v1", api_key="sesame", max_retries=0) as right:
            with right.responses.connect() as connection:
                events = turn(connection, model="gemma", input="Hi", max_output_tokens=2, store=False)
                assert events[-1].type in ("response.completed", "response.incomplete")
        # Then a socket that says nothing: the daemon closes it, and exits by itself.
        assert _close_of_a_silent_socket(running, {"Authorization": "Bearer sesame"}) == (1000, "idle")
        assert running.process.wait(timeout=60) == 0
    finally:
        with contextlib.suppress(Exception):
            running.stop()


def test_a_stopping_daemon_closes_its_idle_sockets_at_once(tmp_path, gemma_path):
    """SIGTERM with a silent socket open: it is closed as going away (1001) rather than waited for."""
    import signal

    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "1024")
    running = Daemon(tmp_path, {"HOSHIKAGE_CONNECTION_IDLE_SECONDS": "60"}, "--no-embedded-model")
    try:
        closed = _close_of_a_silent_socket(running, {}, lambda: running.process.send_signal(signal.SIGTERM))
        assert closed == (1001, "server going away")
        assert running.process.wait(timeout=60) == 0
    finally:
        with contextlib.suppress(Exception):
            running.stop()


def _close_of_a_silent_socket(running: Daemon, headers: dict, then=lambda: None) -> tuple[int, str]:
    """Open a WebSocket to RUNNING, say nothing (THEN happens meanwhile): the code and reason it is closed with."""
    from websockets.exceptions import ConnectionClosedOK
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{running.port}/v1/responses", additional_headers=headers) as silent:
        then()
        with pytest.raises(ConnectionClosedOK) as closed:
            silent.recv()
    return closed.value.rcvd.code, closed.value.rcvd.reason
