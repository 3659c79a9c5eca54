"""The CLI's way to the running daemon (``hoshikage chat``, ``hoshikage memory`` for users who cannot read the
store): the packaged unix socket, which wakes the daemon, or an address, with a key where TCP needs one."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
from pathlib import Path
from typing import Any

from hoshikage.config import Settings, parse_listen_address
from hoshikage.unix_http import PACKAGED_SOCKET, UnixHTTPConnection

TIMEOUT_SECONDS = 600.0  # a cold start, a model load and a long answer on a CPU


class DaemonError(Exception):
    """The daemon cannot be reached, or answered with an error: the message says which and what to do."""


class Endpoint:
    """Where the daemon is: a unix socket, or host and port with an optional API key."""

    def __init__(self, address: str, api_key: str | None = None):
        self.address = address
        self.api_key = api_key

    def _connect(self) -> http.client.HTTPConnection:
        if not self.address.startswith(("http://", "https://")):
            return UnixHTTPConnection(self.address.removeprefix("unix:"), TIMEOUT_SECONDS)
        scheme, _, rest = self.address.partition("://")
        host, _, port = rest.split("/")[0].partition(":")
        if scheme == "https":
            return http.client.HTTPSConnection(host, int(port or 443), timeout=TIMEOUT_SECONDS)
        return http.client.HTTPConnection(host, int(port or 80), timeout=TIMEOUT_SECONDS)

    @classmethod
    def choose(cls, settings: Settings, url: str | None, api_key: str | None) -> Endpoint:
        """--url; else the packaged socket when it exists (systemd holds it); else the first listen address."""
        key = api_key or os.environ.get("HOSHIKAGE_API_KEY") or settings.api_key
        if url:
            return cls(url, key)
        if Path(PACKAGED_SOCKET).exists():
            return cls("unix:" + PACKAGED_SOCKET)
        kind, host_or_path, port = parse_listen_address(settings.listen[0])
        return cls(f"http://{host_or_path}:{port}" if kind == "tcp" else f"unix:{host_or_path}", key)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> http.client.HTTPResponse:
        """The response, its body unread (the caller reads or streams it); DaemonError when nothing answers."""
        connection = self._connect()
        headers = {"Content-Type": "application/json"}
        if self.api_key and not self.address.startswith("unix:"):
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            connection.request(method, path, json.dumps(body).encode() if body is not None else None, headers)
            return connection.getresponse()
        except OSError as error:
            connection.close()
            raise DaemonError(f"cannot reach the daemon at {self.address}: {error}. Is it running? (systemctl start "
                            "hoshikage.socket, or packaging/dev.sh serve; --url names another address)") from None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JSON request and its JSON answer; DaemonError with the daemon's message for an error."""
        response = self.request(method, path, body)
        with contextlib.closing(response):
            data = response.read()
        answer = json_of(data)
        if response.status >= 400:
            raise DaemonError(error_message(answer, response.status))
        return answer


def json_of(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def error_message(answer: dict[str, Any], status: int) -> str:
    error = answer.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return f"{message or 'the daemon answered ' + str(status)}"


def error_code(answer: dict[str, Any]) -> str | None:
    error = answer.get("error")
    return error.get("code") if isinstance(error, dict) else None
