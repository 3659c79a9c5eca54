"""Errors aiohttp's HTTP parser answers by itself, in OpenAI's shape like every other.

A request line or headers that do not parse, or bytes left past a body's
Content-Length (read as the next request), never reach the app: aiohttp's
RequestHandler answers them with a text/plain page and closes the connection.
They are client mistakes too, so the daemon's server makes its handlers answer
them with the JSON error body of errors.py (the connection still closes: after
a framing error, HTTP cannot tell where the next request would begin).
"""

from __future__ import annotations

from aiohttp import web, web_protocol

from hoshikage.api.http.errors import APIError

MESSAGE_LIMIT = 200  # the parser's message quotes the offending bytes; enough of them to see what went wrong


class _ShapedErrorsHandler(web_protocol.RequestHandler):
    __slots__ = ()

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it; raises if a response was already sent
        if status >= 500:
            error = APIError(status, "The server had an internal error; see the daemon's log",
                             error_type="server_error")
        else:
            detail = " ".join(str(message or exc or "malformed request").split())[:MESSAGE_LIMIT]
            error = APIError(status, f"The request is not valid HTTP: {detail}", code="invalid_http")
        response = error.response()
        response.force_close()
        return response


class _ShapedErrorsServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _ShapedErrorsHandler(self, loop=self._loop, **self._kwargs)


def shape_parser_errors(server: web.Server) -> None:
    """Make SERVER's connections answer HTTP parser errors in OpenAI's shape (from the next one on)."""
    server.__class__ = _ShapedErrorsServer
