"""The one place that shapes errors the way OpenAI's API does.

Every failure a client can see is ``{"error": {"message", "type", "param",
"code"}}`` (under /api/, Ollama's ``{"error": "message"}``) with a matching HTTP status, whether it was raised by our
validation, by aiohttp (404 route, 405 method, 413 body) or by a bug (500, the
only status that means "our fault").
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

log = logging.getLogger("hoshikage.api")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, error_type: str | None = None,
                 headers: dict[str, str] | None = None, close_connection: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type or _TYPES.get(status, "server_error")
        self.headers = headers or {}
        self.close_connection = close_connection  # what is left of the request cannot be read in time

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type,
                          "param": self.param, "code": self.code}}

    def response(self, ollama: bool = False) -> web.Response:
        """OpenAI's error object; Ollama's ``{"error": "message"}`` for its API (OLLAMA)."""
        body = {"error": self.message} if ollama else self.body()
        response = web.json_response(body, status=self.status, headers=self.headers)
        if self.close_connection:
            response.force_close()
        return response


CLIENT_CLOSED = 499  # nginx's "client closed request": the status logged for a client that left


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def _from_http_exception(error: web.HTTPException) -> APIError:
    status = error.status
    if status == 404:
        return APIError(404, f"Unknown request URL: {error.text or 'not found'}".strip(),
                        code="unknown_url")
    if status == 405:
        allowed = ", ".join(sorted(getattr(error, "allowed_methods", ()) or ()))
        return APIError(405, f"Method not allowed; use {allowed}" if allowed else "Method not allowed",
                        code="method_not_allowed", headers={"Allow": allowed} if allowed else None)
    if status == 413:
        return APIError(413, "Request body is too large", code="request_too_large")
    return APIError(status, error.reason or "HTTP error")


@web.middleware
async def error_middleware(request: web.Request, handler):
    from hoshikage.api.http.sse import end_failed_stream

    ollama = request.path.startswith("/api/")  # Ollama's API: its own error shape
    try:
        return await handler(request)
    except APIError as error:
        return await end_failed_stream(request, error) or error.response(ollama)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        api_error = _from_http_exception(error)
        if error.status == 404:
            api_error.message = f"Unknown request URL: {request.method} {request.path}"
        return api_error.response(ollama)
    except ConnectionResetError:
        # The client closed its end (mid-body or mid-stream): nobody is left to answer, and it is no bug.
        log.debug("client went away during %s %s", request.method, request.path)
        response = web.Response(status=CLIENT_CLOSED)
        response.force_close()
        return response
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        error = APIError(500, "The server had an internal error; see the daemon's log", error_type="server_error")
        return await end_failed_stream(request, error) or error.response(ollama)
