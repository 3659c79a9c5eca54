"""http.client over a unix socket: how the CLI (status, chat) talks to the daemon without a TCP port."""

from __future__ import annotations

import http.client
import socket

PACKAGED_SOCKET = "/run/hoshikage/hoshikage.sock"  # systemd's hoshikage.socket holds it


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)
