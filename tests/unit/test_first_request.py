"""Reading ahead the request that woke the daemon (hoshikage/first_request.py): what it may load early."""

from __future__ import annotations

import json
import socket

import pytest

from hoshikage.api_keys import parse_api_keys
from hoshikage.first_request import PEEK_BYTES, PeekedRequest, may_ask, peek, take
from hoshikage.registry import ModelEntry, Registry


def _request(body, path="/v1/chat/completions", method="POST", headers=(), length=None) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = [f"{method} {path} HTTP/1.1", "Host: hoshikage", "Content-Type: application/json",
            f"Content-Length: {len(data) if length is None else length}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


CHAT = {"model": "gemma", "messages": [{"role": "user", "content": "Hi"}]}


def test_a_whole_generation_request_names_its_model_path_and_key():
    assert peek(_request(CHAT, headers=["Authorization: Bearer sesame"])) == PeekedRequest(
        "/v1/chat/completions", "gemma", "Bearer sesame")
    assert peek(_request({"model": "gemma:latest", "prompt": "Hi"}, path="/api/generate?x=1")).model == \
        "gemma:latest"


@pytest.mark.parametrize("data", [
    _request(CHAT)[:40],  # the head not yet whole
    _request(CHAT)[:-5],  # the body not yet whole
    _request(CHAT, length=0),
    _request(CHAT, length="12x"),
    _request(CHAT, method="GET"),
    _request(CHAT, path="/v1/models"),
    _request(CHAT, headers=["Transfer-Encoding: chunked"]),
    _request(CHAT, headers=["Content-Encoding: gzip"]),
    _request(CHAT, headers=["Content-Length: 3"]),  # a second length: not ours to settle
    _request(b"{not json"),
    _request(b"[" * 100_000 + b"]" * 100_000),  # nesting deeper than the parser goes
    _request(["gemma"]),
    _request({"model": 7, "messages": []}),
    _request({"model": "", "messages": []}),
    _request({"model": "m" * 257}),
    _request(CHAT).replace(b"HTTP/1.1", b"HTTP/2.0"),
    b"POST /v1/chat/completions HTTP/1.1\r\nbroken header line\r\n\r\n{}",
])
def test_anything_else_is_left_to_the_normal_path(data):
    assert peek(data) is None


def test_a_head_too_large_is_not_read():
    assert peek(_request(CHAT, headers=["X-Padding: " + "x" * 20_000])) is None


def test_model_to_load_is_a_registered_model_of_the_kind_asked_for(tmp_path):
    registry = Registry(tmp_path / "models.json")
    registry.add(ModelEntry("gemma", "/models/gemma.gguf"))
    registry.add(ModelEntry("tagged:latest", "/models/tagged.gguf"))
    registry.add(ModelEntry("minilm", "/models/minilm.gguf", embedding=True))

    def load(path, model):
        return PeekedRequest(path, model, "").model_to_load(registry)

    assert load("/v1/chat/completions", "gemma") == "gemma"
    assert load("/v1/chat/completions", "gemma:latest") is None  # OpenAI's names are the alias itself
    assert load("/api/chat", "gemma:latest") == "gemma"  # Ollama's add or drop ':latest'
    assert load("/api/generate", "tagged") == "tagged:latest"
    assert load("/v1/embeddings", "minilm") == "minilm"
    assert load("/v1/chat/completions", "minilm") is None  # a 400 without a load
    assert load("/api/embed", "gemma") is None
    assert load("/v1/completions", "nothing") is None


def test_take_accepts_the_waiting_connection_and_reads_without_consuming(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    data = _request(CHAT)
    client.sendall(data)
    try:
        first = take([listener], tcp_keys=())
        assert first is not None and first.request is not None and first.request.model == "gemma"
        first.connection.setblocking(True)
        assert first.connection.recv(len(data), socket.MSG_WAITALL) == data  # still there for aiohttp
        first.connection.close()
        assert take([listener], tcp_keys=()) is None  # nothing else waits
    finally:
        client.close()
        listener.close()


def test_a_body_larger_than_the_peek_is_left_alone():
    big = {"model": "gemma", "messages": [{"role": "user", "content": "x" * PEEK_BYTES}]}
    assert peek(_request(big)[:PEEK_BYTES]) is None


def test_tcp_with_keys_needs_one_of_them():
    keys = parse_api_keys({"alice": "sesame-key"})
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    connection, _ = listener.accept()
    try:
        assert may_ask(connection, "Bearer sesame-key", keys, [])
        assert not may_ask(connection, "Bearer wrong", keys, [])
        assert not may_ask(connection, "", keys, [])
        assert not may_ask(connection, "Basic sesame-key", keys, [])
        assert may_ask(connection, "", (), [])  # no keys and no unix socket: every local user
    finally:
        for sock in (connection, client, listener):
            sock.close()


def test_a_unix_socket_admits_whoever_could_connect(tmp_path):
    path = str(tmp_path / "s.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    connection, _ = listener.accept()
    try:
        assert may_ask(connection, "", parse_api_keys({"alice": "sesame-key"}), [tmp_path / "s.sock"])
    finally:
        for sock in (connection, client, listener):
            sock.close()
