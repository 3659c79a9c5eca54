"""How many connections clients may hold, and which one goes when there are too many.

aiohttp closes a connection that has had no request in progress for its
keep-alive timeout (the daemon sets it to ``connection_idle_seconds``),
whether the request head trickles in or nothing comes at all; request bodies
must arrive within body_timeout_seconds (api/http/body.py); the idle exit stops
waiting for connections that make no request (lifecycle.py). What is left is
how many connections are open at once: ConnectionGuard keeps at most
``max_connections``. A connection accepted beyond them closes the one that
has been idle longest, among those idle for at least EVICTION_GRACE_SECONDS
(a real client sends its request within milliseconds of connecting; without
the grace a flood of new connections would evict each other's before any
request arrived), and is itself answered 503 (Retry-After) and closed when
there is none. WebSockets (the Responses API's WebSocket mode) are bounded
the same way: one with nothing running and nothing said for the keep-alive
time closes itself, and the drain at exit closes the idle ones at once.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web, web_protocol

from hoshikage.config import Settings

Connection = web_protocol.RequestHandler
EVICTION_GRACE_SECONDS = 1.0

_REFUSAL_BODY = json.dumps({"error": {
    "message": "The server has as many connections open as it allows, all busy with requests; retry shortly",
    "type": "server_error", "param": None, "code": "too_many_connections"}}).encode()
# Sent before the request is read, as HTTP allows when the server closes the connection.
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
           b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY))


DEFAULT_KEEPALIVE_SECONDS = 75  # aiohttp's own default


def keepalive_seconds(settings: Settings) -> float:
    """How long a connection (or a WebSocket) may sit with no request before it is closed."""
    keepalive = min(DEFAULT_KEEPALIVE_SECONDS, settings.connection_idle_seconds)
    if settings.exit_when_idle and settings.idle_timeout_seconds:
        # An idle keep-alive connection holds the exit back; never longer than the timeout.
        keepalive = max(1, min(keepalive, settings.idle_timeout_seconds))
    return keepalive


class ConnectionGuard:
    def __init__(self, idle_seconds: float, max_connections: int, keepalive: float = DEFAULT_KEEPALIVE_SECONDS):
        self.idle_seconds = idle_seconds
        self.max_connections = max_connections
        self.keepalive_seconds = keepalive
        self._sockets: dict[web.WebSocketResponse, bool] = {}  # open WebSockets -> a response is running
        self._server: web.Server | None = None
        # Keyed by the connection (aiohttp's handlers take no weak references);
        # forget() drops the ones that have closed.
        self._busy: dict[Connection, int] = {}
        self._since: dict[Connection, float] = {}
        self.evicted = 0  # idle connections closed to make room for a new one
        self.refused = 0  # new connections answered 503: no other one could make room

    def attach(self, server: web.Server) -> None:
        """Watch SERVER's connections; each one it accepts is admitted here first."""
        self._server = server
        accept = server.connection_made

        def connection_made(connection: Connection, transport: asyncio.Transport) -> None:
            accept(connection, transport)
            self._admit(connection, transport)

        server.connection_made = connection_made  # type: ignore[method-assign]

    def _open(self) -> list[Connection]:
        return self._server.connections if self._server is not None else []

    def _admit(self, connection: Connection, transport: asyncio.Transport) -> None:
        now = time.monotonic()
        self._since[connection] = now
        open_now = self._open()
        excess = len(open_now) - self.max_connections
        if excess <= 0:
            return
        idle = sorted((since, id(other), other) for other in open_now
                      if other is not connection and not self._busy.get(other)
                      and now - (since := self._since.get(other, now)) >= EVICTION_GRACE_SECONDS)
        for _, _, victim in idle[:excess]:
            victim.force_close()
            self.evicted += 1
        if len(idle) < excess:
            transport.write(REFUSAL)
            connection.force_close()
            self.refused += 1

    def describe(self) -> dict[str, int]:
        """For /v1/status: open connections, and how many the guard has closed or refused."""
        return {"open": len(self._open()), "max": self.max_connections, "evicted": self.evicted,
                "refused": self.refused}

    def begin(self, connection: Connection) -> None:
        self._busy[connection] = self._busy.get(connection, 0) + 1

    def end(self, connection: Connection) -> None:
        self._busy[connection] = self._busy.get(connection, 1) - 1
        self._since[connection] = time.monotonic()

    def open_socket(self, socket: web.WebSocketResponse) -> None:
        self._sockets[socket] = False

    def socket_busy(self, socket: web.WebSocketResponse, busy: bool) -> None:
        if socket in self._sockets:
            self._sockets[socket] = busy

    def close_socket(self, socket: web.WebSocketResponse) -> None:
        self._sockets.pop(socket, None)

    async def close_idle_sockets(self) -> None:
        """At exit: WebSockets with no response running are closed now (1001), so the drain does not wait out
        their keep-alive; a busy one closes itself after its response (api/responses/websocket.py)."""
        for socket, busy in list(self._sockets.items()):
            if not busy:
                await socket.close(code=1001, message=b"server going away")

    def forget(self) -> None:
        """Drop what is known of connections that have closed (called each tick)."""
        open_now = set(self._open())
        for table in (self._busy, self._since):
            for gone in table.keys() - open_now:
                del table[gone]
