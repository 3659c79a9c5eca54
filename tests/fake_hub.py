"""A local stand-in for the Hugging Face hub, enough for huggingface_hub's model_info and hf_hub_download.

Loopback only, for tests (this machine cannot reach the hub): it answers the model-info API with each file's
size and sha256, and resolve URLs with the headers the hub sends (commit, linked etag and size) and Range
requests. What a test may ask of it: a gated repository (401 without the token), a transfer that stops after
some bytes and holds the connection until the test releases it, and a file whose bytes differ from the sha256
it lists (corrupted on the way).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Repo:
    files: dict[str, bytes]
    token: str | None = None  # gated: only with this bearer token
    corrupt: set[str] = field(default_factory=set)  # served with one byte changed
    stall_after: dict[str, int] = field(default_factory=dict)  # first GET sends this many bytes, then holds


class FakeHub:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.ranges: list[str] = []  # the Range headers of file GETs, in order
        self.stalled = threading.Event()  # a stalled transfer has sent its bytes
        self.release = threading.Event()  # the test lets a stalled transfer end
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):  # noqa: N802 - http.server's naming
                hub._serve(self, body=False)

            def do_GET(self):  # noqa: N802
                hub._serve(self, body=True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, handler, body: bool) -> None:
        path = handler.path.split("?")[0]
        info = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        name = (info or resolve).group(1) if (info or resolve) else None
        repo = self.repos.get(name)
        if repo is None:
            return self._error(handler, 404, "RepoNotFound", body)
        if repo.token and handler.headers.get("Authorization") != f"Bearer {repo.token}":
            return self._error(handler, 401, "GatedRepo", body)
        if info:
            siblings = [{"rfilename": filename, "size": len(data), "blobId": hashlib.sha1(data).hexdigest(),
                         "lfs": {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}}
                        for filename, data in repo.files.items()]
            return self._json(handler, {"id": name, "modelId": name, "sha": COMMIT, "private": False,
                                        "siblings": siblings}, body)
        filename = resolve.group(3)
        if filename not in repo.files:
            return self._error(handler, 404, "EntryNotFound", body)
        data = repo.files[filename]
        sha256 = hashlib.sha256(data).hexdigest()
        if filename in repo.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        start = 0
        requested = handler.headers.get("Range")
        if body:
            self.ranges.append(requested or "")
        if requested and (match := re.fullmatch(r"bytes=(\d+)-", requested)):
            start = int(match.group(1))
        handler.send_response(206 if start else 200)
        handler.send_header("X-Repo-Commit", COMMIT)
        handler.send_header("X-Linked-Etag", f'"{sha256}"')
        handler.send_header("X-Linked-Size", str(len(data)))
        handler.send_header("ETag", f'"{sha256}"')
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(len(data) - start))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if not body:
            return
        stall = repo.stall_after.pop(filename, None)
        try:
            if stall is not None:
                handler.wfile.write(data[start:start + stall])
                handler.wfile.flush()
                self.stalled.set()
                self.release.wait(120)
                handler.close_connection = True
                return
            handler.wfile.write(data[start:])
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def _json(self, handler, value, body: bool) -> None:
        data = json.dumps(value).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def _error(self, handler, status: int, code: str, body: bool) -> None:
        data = json.dumps({"error": code}).encode()
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)
