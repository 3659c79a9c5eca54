"""Per-transport access policy: an API key guards TCP; the unix socket is guarded by its group.

systemd hands us every socket under one name, so the transport is told by the
socket's own address family, never by configuration order.
"""

from __future__ import annotations

import hmac
import socket

from aiohttp import web

from hoshikage.api.http import keys
from hoshikage.api.http.errors import APIError

OPEN_PATHS = frozenset({"/health"})


def is_unix_socket(request: web.Request) -> bool:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX


@web.middleware
async def api_key_middleware(request: web.Request, handler):
    expected = request.app[keys.SETTINGS].api_key
    if expected and request.path not in OPEN_PATHS and not is_unix_socket(request):
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise APIError(401, "Incorrect API key provided. Send it as 'Authorization: Bearer KEY'; "
                                "the unix socket needs none.", code="invalid_api_key")
    return await handler(request)
