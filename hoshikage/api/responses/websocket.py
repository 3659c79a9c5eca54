"""The Responses API's WebSocket mode: ``GET /v1/responses`` upgraded, one socket for many responses.

As the Open Responses spec and OpenAI define it: the client sends
``{"type": "response.create", ...}`` text messages whose other fields are a
``POST /v1/responses`` body; each is answered with the same events a stream
gets over HTTP (from ``response.created`` to one terminal
``response.completed``/``incomplete``/``failed``, no ``[DONE]``), one response
at a time, in order. A request that fails before its first event is answered
with one error envelope (``{"type": "error", "status": 400, "error": {...}}``)
and the socket stays open for the next.

The connection keeps its latest response (HeldResponse), so ``store: false``
chains continue on it without anything on disk; a continuation that fails
forgets the response it named, and another connection never sees it
(``previous_response_not_found``). ``store: true`` responses continue from the
store, on any connection.

What a socket may cost is bounded like any connection's: messages are at most
``max_body_bytes`` and parsed as strictly as bodies (api/http/body.py); a
socket with no response running and nothing sent for the keep-alive time is
closed (1000, "idle"), so an open, silent socket never holds the idle exit;
only a running response counts as activity; a socket lives at most
MAX_CONNECTION_SECONDS, as at OpenAI; at most MAX_WAITING creates wait behind
the running one; closing the socket cancels the response being generated. When
the daemon exits, idle sockets are closed at once (1001) and a busy one after
its response.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from hoshikage.api.http import keys
from hoshikage.api.http.auth import IDENTITY, identity_of
from hoshikage.api.http.body import parse_json
from hoshikage.api.http.errors import APIError, invalid
from hoshikage.api.responses.endpoints import (HeldResponse, event_sender, failed_object, start_turn,
                                               stream_events)

log = logging.getLogger("hoshikage.api")

MAX_CONNECTION_SECONDS = 60 * 60  # OpenAI's limit, and the spec's websocket_connection_limit_reached
MAX_WAITING = 8  # response.create messages queued behind the running one
# Fields of an HTTP create that mean nothing here: every response is streamed.
STREAM_ONLY = ("stream", "stream_options")


def is_upgrade(request: web.Request) -> bool:
    """Whether REQUEST asks to become a WebSocket."""
    return request.headers.get("Upgrade", "").lower() == "websocket"


async def responses_socket(request: web.Request) -> web.StreamResponse:
    if not is_upgrade(request):
        raise APIError(426, "GET /v1/responses opens the Responses API's WebSocket mode: send it with "
                            "'Upgrade: websocket' (a WebSocket client), or create a response with POST /v1/responses",
                       code="websocket_upgrade_required", error_type="invalid_request_error",
                       headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    settings = request.app[keys.SETTINGS]
    socket = web.WebSocketResponse(max_msg_size=settings.max_body_bytes, autoping=True)
    await socket.prepare(request)
    session = _Session(request, socket)
    guard = request.app[keys.CONNECTIONS]
    guard.open_socket(socket)
    try:
        await session.serve()
    finally:
        guard.close_socket(socket)
    return socket


class _Session:
    """One WebSocket connection: its messages, its queue of creates, the response it holds."""

    def __init__(self, request: web.Request, socket: web.WebSocketResponse):
        self.request = request
        self.socket = socket
        self.held: HeldResponse | None = None
        self.waiting: collections.deque[str] = collections.deque()
        self.opened = time.monotonic()
        self.last_active = self.opened
        self.idle_seconds = request.app[keys.CONNECTIONS].keepalive_seconds

    async def serve(self) -> None:
        guard, activity = self.request.app[keys.CONNECTIONS], self.request.app[keys.ACTIVITY]
        receiving: asyncio.Future = asyncio.ensure_future(self.socket.receive())
        running: asyncio.Task | None = None
        try:
            while True:
                waits = {receiving} | ({running} if running else set())
                timeout = None if running else max(0.0, self.last_active + self.idle_seconds - time.monotonic())
                done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:  # nothing running, nothing said for the keep-alive time
                    await self.socket.close(code=1000, message=b"idle")
                    return
                if running in done:
                    running = None
                    self.last_active = time.monotonic()
                    guard.socket_busy(self.socket, False)
                    if activity.draining:
                        await self.socket.close(code=1001, message=b"server going away")
                        return
                if receiving in done:
                    message = receiving.result()
                    if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                        return  # the client left: a running response is cancelled below
                    self.last_active = time.monotonic()
                    await self._accept(message)
                    receiving = asyncio.ensure_future(self.socket.receive())
                if running is None and self.waiting:
                    guard.socket_busy(self.socket, True)
                    running = asyncio.create_task(self._turn(self.waiting.popleft()))
        finally:
            for task in (running, receiving):
                if task is not None and not task.done():
                    task.cancel()
            for task in (running, receiving):
                if task is not None:
                    try:
                        await task
                    except (asyncio.CancelledError, Exception):  # noqa: BLE001 - gone with the socket
                        pass

    async def _accept(self, message) -> None:
        """Queue a create, or answer at once what cannot be one."""
        if message.type != WSMsgType.TEXT:
            await self._error(invalid("Send each response.create as a JSON text message", code="invalid_message"))
        elif time.monotonic() - self.opened > MAX_CONNECTION_SECONDS:
            await self._error(invalid(f"Responses websocket connection limit reached ({MAX_CONNECTION_SECONDS // 60}"
                                      " minutes). Create a new websocket connection to continue.",
                                      code="websocket_connection_limit_reached"))
        elif len(self.waiting) >= MAX_WAITING:
            await self._error(APIError(429, f"{MAX_WAITING} response.create messages already wait on this "
                                            "connection; wait for their answers, or open another connection",
                                       code="too_many_waiting"))
        else:
            self.waiting.append(message.data)

    async def _turn(self, text: str) -> None:
        """One response.create, logged and counted like a request of its own."""
        request = self.request.clone()  # its own model, tokens and log fields; the same app and connection
        request["request_id"] = uuid.uuid4().hex[:16]
        request[IDENTITY] = identity_of(self.request)  # the connection's: a clone starts with no state
        request["started"] = started = time.monotonic()
        activity, metrics = request.app[keys.ACTIVITY], request.app[keys.METRICS]
        activity.begin()
        status = 200
        try:
            status = await self._respond(request, text)
        except ConnectionError:  # the client went away mid-answer: nobody to tell
            status = 499
        finally:
            activity.end()
            elapsed = time.monotonic() - started
            metrics.count("hoshikage_requests", ("/v1/responses (websocket)", str(status)))
            metrics.observe("hoshikage_request_duration_seconds", ("/v1/responses (websocket)",), elapsed)
            log.info("WEBSOCKET response.create %d %d ms", status, round(elapsed * 1000),
                     extra={"REQUEST_ID": request["request_id"], "IDENTITY": request[IDENTITY].name,
                            "MODEL": request.get("model", ""), "STATUS": status,
                            "TOKENS": request.get("tokens", 0), "DURATION_MS": round(elapsed * 1000),
                            **request.get("log_fields", {})})

    async def _respond(self, request: web.Request, text: str) -> int:
        """Answer one create: its events, or one error envelope; its status, as it would be logged over HTTP."""
        previous = None
        sent_any = False

        async def write(_kind: str, payload: str) -> None:
            nonlocal sent_any
            sent_any = True
            await self.socket.send_str(payload)

        send = event_sender(write)
        turn = None
        try:
            body = _create_body(parse_json(text))
            previous = body.get("previous_response_id")
            turn, first, chunks = await start_turn(request, body, self.held)
            response = await stream_events(request, turn, first, chunks, send)
        except APIError as error:
            self._forget(previous)
            await self._fail(error, send, turn, sent_any)
            return error.status
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:  # noqa: BLE001 - a bug: logged, answered, and the socket goes on
            log.exception("unhandled error serving a WebSocket response.create")
            self._forget(previous)
            await self._fail(APIError(500, "The server had an internal error; see the daemon's log",
                                      error_type="server_error"), send, turn, sent_any)
            return 500
        if response["status"] == "failed":
            self._forget(previous)
            return 500
        # The connection keeps its latest response: a store: false one exists nowhere else. No more of it than
        # one request could send as its input (max_body_bytes): a longer chain wants store: true.
        held = turn.held_after(response) if not turn.parsed.store else None
        limit = request.app[keys.SETTINGS].max_body_bytes
        self.held = held if held is not None and held.size_bytes() <= limit else None
        return 200

    def _forget(self, previous: Any) -> None:
        """A continuation that failed forgets the response it continued (the spec's eviction rule)."""
        if self.held is not None and previous == self.held.response_id:
            self.held = None

    async def _fail(self, error: APIError, send, turn, sent_any: bool) -> None:
        """One terminal message for a failed create: the error envelope before any event, response.failed
        after them (never both: a client reads each as the end of its turn)."""
        if sent_any and turn is not None:
            await send("response.failed", response=failed_object(turn.started(), error))
        else:
            await self._error(error)

    async def _error(self, error: APIError) -> None:
        body = error.body()
        body["error"]["code"] = error.code or error.error_type  # clients read the code to tell errors apart
        await self.socket.send_json({"type": "error", "status": error.status, **body})


def _create_body(message: Any) -> dict[str, Any]:
    """The POST /v1/responses body a response.create message carries (its other fields, flat)."""
    if not isinstance(message, dict) or message.get("type") != "response.create":
        kind = message.get("type") if isinstance(message, dict) else None
        raise invalid(f"Unknown message type {kind!r}: this socket takes response.create messages", param="type",
                      code="unknown_message_type")
    return {key: value for key, value in message.items() if key != "type" and key not in STREAM_ONLY}


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/responses", responses_socket)
