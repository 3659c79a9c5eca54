"""A stream that fails after its headers ends in its own format, never as a status line inside the body.

The daemon's real error middleware and stream openers (api/http/errors.py, api/http/sse.py), in an aiohttp app
served on loopback, with handlers that fail after the first event the way a generation or a store
write can: the client must read a complete, well-formed stream that says what went wrong.
"""

from __future__ import annotations

import asyncio
import json

import httpx
from aiohttp import web
from aiohttp.test_utils import TestServer

from hoshikage.api.http.errors import APIError, error_middleware
from hoshikage.api.http.sse import open_event_stream, send_event, started_stream


async def chat_stream(request: web.Request) -> web.StreamResponse:
    response = await open_event_stream(request)
    await send_event(response, {"choices": [{"delta": {"content": "Hel"}}]})
    raise APIError(500, "Generation failed: llama_decode returned -3", error_type="server_error")


async def responses_stream(request: web.Request) -> web.StreamResponse:
    async def fail(stream, error):
        await stream.write(f"event: response.failed\ndata: {json.dumps({'type': 'response.failed', 'message': error.message})}\n\n".encode())

    response = await open_event_stream(request, fail)
    await response.write(b"event: response.created\ndata: {}\n\n")
    raise TypeError("a bug after the headers")  # not an APIError: still no garbled body


async def ndjson_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)

    async def fail(stream, error):
        await stream.write(json.dumps({"error": error.message}).encode() + b"\n")

    started_stream(request, response, fail)
    await response.write(b'{"message": {"content": "Hel"}}\n')
    raise APIError(500, "Generation failed")


async def run(path: str) -> httpx.Response:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/chat", chat_stream)
    app.router.add_post("/responses", responses_stream)
    app.router.add_post("/api/chat", ndjson_stream)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"http://127.0.0.1:{server.port}{path}", timeout=30)
            await answer.aread()  # a garbled chunked body raises here
            return answer
    finally:
        await server.close()


def test_chat_and_completions_end_with_an_error_event_and_done():
    answer = asyncio.run(run("/chat"))
    assert answer.status_code == 200 and b"HTTP/1.1" not in answer.content
    events = [line.removeprefix("data: ") for line in answer.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["message"] == "Generation failed: llama_decode returned -3" and error["type"] == "server_error"


def test_responses_end_with_response_failed_even_for_a_bug():
    answer = asyncio.run(run("/responses"))
    assert answer.status_code == 200 and b"HTTP/1.1" not in answer.content
    assert answer.text.rstrip().splitlines()[-2] == "event: response.failed"
    assert "internal error" in answer.text


def test_ollama_streams_end_with_an_error_line():
    answer = asyncio.run(run("/api/chat"))
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert lines[-1] == {"error": "Generation failed"} and b"HTTP/1.1" not in answer.content
