"""The first middleware: who is asking (api/http/identity.py), and the refusal of those who may not ask."""

from __future__ import annotations

from aiohttp import web

from hoshikage.api.http import keys
from hoshikage.api.http.identity import ANONYMOUS, Identity

OPEN_PATHS = frozenset({"/health"})
IDENTITY = "identity"  # the request's key for its Identity


@web.middleware
async def identity_middleware(request: web.Request, handler):
    """Tell who is asking before anything else runs; refuse those who may not ask."""
    if request.path in OPEN_PATHS:
        request[IDENTITY] = ANONYMOUS
    else:
        request[IDENTITY] = await request.app[keys.ACCESS].identify(request)
    return await handler(request)


def identity_of(request: web.Request) -> Identity:
    return request.get(IDENTITY, ANONYMOUS)
