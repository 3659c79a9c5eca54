"""Server-sent events the way OpenAI streams them: ``data: {json}`` then ``data: [DONE]``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


async def open_event_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # a reverse proxy must not hold tokens back either
    })
    await response.prepare(request)
    return response


async def send_event(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    # write() drains the transport, so each token leaves as soon as it exists.
    await response.write(b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n")


async def send_done(response: web.StreamResponse) -> None:
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
