"""The request that woke the daemon, read ahead so that its model loads while the rest of the daemon starts.

Under socket activation the connection that made systemd start the daemon is already waiting, and its request
has normally arrived whole by the time Python is up. Before the daemon can answer it imports aiohttp and the
API (a quarter of a second on 2 cores), and only then did it begin loading the model the request names. The
load runs in llama.cpp, without the GIL, so it can run meanwhile on another core. So the daemon accepts that one
connection first, looks at its request without taking it off the socket (MSG_PEEK), and when it is a generation
request for a registered model from someone the daemon admits, starts loading that model before it imports the
rest (startup.py). aiohttp then reads the same request from the same connection like any other, and finds its
model loaded or loading.

Nothing here waits and nothing here answers: a request not yet whole, compressed, chunked or larger than
PEEK_BYTES, or anything that is not a POST of JSON naming a model, is left to the normal path. A request the
daemon would refuse (a wrong key, a local user its socket keeps out) loads nothing early.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import socket
from pathlib import Path

from hoshikage import peers
from hoshikage.api_keys import find_key
from hoshikage.registry import Registry, resolve_name

PEEK_BYTES = 256 * 1024  # a conversation of ~50k tokens; a longer one just loads its model the usual way
MAX_HEAD_BYTES = 16 * 1024
# Where a request names a model to generate with, or to embed with: OpenAI's and Ollama's.
EMBEDDING_PATHS = frozenset({"/v1/embeddings", "/api/embed", "/api/embeddings"})
MODEL_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses", "/api/generate", "/api/chat",
                         *EMBEDDING_PATHS})


@dataclasses.dataclass(frozen=True)
class PeekedRequest:
    path: str
    model: str
    authorization: str

    def model_to_load(self, registry: Registry) -> str | None:
        """The registered model to load ahead for this request: the one it names, of the kind it asks for."""
        entries = registry.entries()
        # Ollama's names may add or leave out ':latest' (api/ollama/endpoints.py); OpenAI's are the alias itself.
        alias = (resolve_name(self.model, entries) if self.path.startswith("/api/")
                 else self.model if self.model in entries else None)
        if alias is None or entries[alias].embedding != (self.path in EMBEDDING_PATHS):
            return None  # unknown, or of the other kind: the request gets its 404 or 400 without a load
        return alias


@dataclasses.dataclass
class FirstRequest:
    connection: socket.socket  # accepted; its request not yet read
    request: PeekedRequest | None  # what it asks for, when the daemon admits it and it may load a model ahead


def take(listeners: list[socket.socket], tcp_keys) -> FirstRequest | None:
    """Accept the connection waiting on one of LISTENERS (systemd's sockets), if any, and read ahead what its
    request asks for; None when no connection is waiting."""
    try:
        ready, _, _ = select.select(listeners, [], [], 0)
    except (OSError, ValueError):
        return None
    for listener in ready:
        listener.setblocking(False)  # as asyncio will set it anyway: a connection gone meanwhile must not block
        try:
            connection, _ = listener.accept()
        except OSError:
            continue  # gone meanwhile, or not a socket that accepts: the usual path says what is wrong
        connection.setblocking(False)
        try:
            data = connection.recv(PEEK_BYTES, socket.MSG_PEEK)
        except OSError:
            data = b""
        request = peek(data)
        admitted = request is not None and may_ask(connection, request.authorization, tcp_keys,
                                                   peers.unix_socket_paths(listeners))
        return FirstRequest(connection, request if admitted else None)
    return None


def peek(data: bytes) -> PeekedRequest | None:
    """The model a whole HTTP/1.1 request in DATA names, with where it goes and its Authorization header, when
    it is a POST of JSON to MODEL_PATHS; None for anything else or anything not yet whole."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator or len(head) > MAX_HEAD_BYTES:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    target, _, version = rest.partition(" ")
    path = target.partition("?")[0]
    if method != "POST" or path not in MODEL_PATHS or not version.startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            return None
        name = name.strip().lower()
        if name in headers:  # repeated: whatever aiohttp makes of it, it is not worth guessing here
            return None
        headers[name] = value.strip()
    if "transfer-encoding" in headers or headers.get("content-encoding", "identity").lower() != "identity":
        return None
    try:
        length = int(headers.get("content-length", ""))
    except ValueError:
        return None
    if not 0 < length <= len(body):
        return None
    try:
        document = json.loads(body[:length])
    except (ValueError, RecursionError):
        return None
    model = document.get("model") if isinstance(document, dict) else None
    if not isinstance(model, str) or not model or len(model) > 256:
        return None
    return PeekedRequest(path, model, headers.get("authorization", ""))


def may_ask(connection: socket.socket, authorization: str, tcp_keys, unix_paths: list[Path]) -> bool:
    """Whether the daemon admits the client at CONNECTION, as api/http/identity.py decides it: the unix
    socket's permissions already did; TCP needs a key when there are keys, and from loopback without keys,
    a user the unix sockets admit."""
    if connection.family == socket.AF_UNIX:
        return True
    if tcp_keys:
        scheme, _, given = authorization.partition(" ")
        return scheme.lower() == "bearer" and find_key(tcp_keys, given.strip()) is not None
    try:
        peer, local = connection.getpeername(), connection.getsockname()
    except OSError:
        return False
    if not peers.is_loopback(peer):
        return True  # admitted as 'anonymous' (the daemon warned at start)
    return peers.admits(peers.loopback_peer_uid(peer, local), unix_paths, os.getuid())
