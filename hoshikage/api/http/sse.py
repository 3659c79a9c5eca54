"""Streamed answers: server-sent events the way OpenAI streams them (``data: {json}`` then ``data: [DONE]``),
and how any stream ends when something fails after its headers are sent.

Once a stream's 200 and headers are out, an error can no longer be a status
code: written as a new response, it would land inside the chunked body and the
client would see a garbled stream. So every stream, when it opens, says how it
reports a failure in its own format (``started_stream``): an ``error`` event
and ``[DONE]`` for Chat and Completions, ``response.failed`` for Responses, an
``{"error": ...}`` line for Ollama. The error middleware (api/http/errors.py) ends an
open stream that way, whatever was raised.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from hoshikage.api.http.errors import APIError

StreamFailure = Callable[[web.StreamResponse, "APIError"], Awaitable[None]]
# The prepared response of a request whose answer is a stream, and how that stream reports a failure.
_OPEN_STREAM = web.RequestKey("open_stream", tuple)


async def open_event_stream(request: web.Request, on_failure: StreamFailure | None = None) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # a reverse proxy must not hold tokens back either
    })
    await response.prepare(request)
    started_stream(request, response, on_failure or _error_event)
    return response


def started_stream(request: web.Request, response: web.StreamResponse, on_failure: StreamFailure) -> None:
    """REQUEST's answer is RESPONSE, a stream whose headers are sent: a failure from now on is written into it by
    ON_FAILURE."""
    request[_OPEN_STREAM] = (response, on_failure)


async def end_failed_stream(request: web.Request, error: APIError) -> web.StreamResponse | None:
    """End REQUEST's open stream with ERROR, in the stream's own format, and return it; None if no stream is
    open (the error is then an ordinary response)."""
    opened = request.get(_OPEN_STREAM)
    if opened is None:
        return None
    response, on_failure = opened
    with contextlib.suppress(ConnectionError):  # the client may be gone too: nothing more to tell it
        await on_failure(response, error)
        await response.write_eof()
    return response


async def _error_event(response: web.StreamResponse, error: APIError) -> None:
    """OpenAI's way: an event with the error object, then the end of the stream."""
    await response.write(b"data: " + json.dumps(error.body(), ensure_ascii=False).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")


async def send_event(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    # write() drains the transport, so each token leaves as soon as it exists.
    await response.write(b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n")


async def send_done(response: web.StreamResponse) -> None:
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
