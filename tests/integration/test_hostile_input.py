"""Malformed bodies are a 4xx in OpenAI's shape, never a 500, and the daemon serves on.

Raw sockets where the HTTP framing itself is the point (a lying
Content-Encoding), httpx elsewhere, and a hypothesis run that throws
generated bodies at the real daemon on every CI run (bounded: a fixed number
of examples, each answered in milliseconds since it names no loaded model).
"""

from __future__ import annotations

import gzip
import json
import re
import socket

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

GOOD = {"model": "gemma", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
STATUSES_FOR_CLIENT_MISTAKES = {400, 404, 413, 415}


def raw_exchange(daemon, request: bytes) -> bytes:
    """Send REQUEST on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def post(body: bytes, *headers: bytes) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: hoshikage\r\nContent-Type: application/json\r\n"
            + b"".join(header + b"\r\n" for header in headers)
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize("encoding,body", [("gzip", b"this is not gzip"), ("deflate", b"\x00"),
                                           ("gzip", gzip.compress(json.dumps(GOOD).encode())[:-6])])
def test_a_body_that_is_not_what_its_content_encoding_says_is_400_and_the_connection_serves_on(
        daemon, encoding, body):
    # Two requests on one connection: the broken one, then a good one that closes it.
    answer = raw_exchange(daemon, post(body, b"Content-Encoding: " + encoding.encode())
                          + post(json.dumps(GOOD).encode(), b"Connection: close"))
    first, second = answer.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"400 ")
    assert json.loads(first.partition(b"\r\n\r\n")[2])["error"]["code"] == "invalid_body"
    assert second.startswith(b"200 ")
    assert json.loads(second.partition(b"\r\n\r\n")[2])["usage"]["completion_tokens"] > 0


def test_a_body_that_inflates_past_the_limit_is_413(daemon):
    bomb = gzip.compress(b" " * (2 * 1024 * 1024) + json.dumps(GOOD).encode())  # ~2 KB on the wire
    response = httpx.post(f"{daemon.base_url}/v1/chat/completions", content=bomb, timeout=60,
                          headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert_openai_error(response, 413, "request_too_large")


@pytest.mark.parametrize("request_bytes", [
    post(json.dumps(GOOD).encode()) + b"GARBAGE\r\n\r\n",  # past Content-Length: read as the next request
    b"GET /health HTTP/1.1\r\nHost: hoshikage\r\nBad Header Line\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello on the plain port
])
def test_requests_that_are_not_http_get_an_openai_shaped_400(daemon, request_bytes):
    answers = re.split(rb"HTTP/1\.[01] ", raw_exchange(daemon, request_bytes))[1:]
    head, _, body = answers[-1].partition(b"\r\n\r\n")
    assert head.startswith(b"400 ") and b"application/json" in head, answers[-1][:300]
    assert json.loads(body)["error"]["code"] == "invalid_http"
    assert httpx.get(f"{daemon.base_url}/health", timeout=30).status_code == 200


def test_a_gzip_body_is_read(daemon):
    response = httpx.post(f"{daemon.base_url}/v1/chat/completions", content=gzip.compress(json.dumps(GOOD).encode()),
                          headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 200, response.text


def test_an_unknown_content_encoding_is_415(daemon):
    response = httpx.post(f"{daemon.base_url}/v1/chat/completions", content=json.dumps(GOOD).encode(),
                          headers={"Content-Encoding": "zstd-of-the-future"}, timeout=60)
    assert_openai_error(response, 415, "unsupported_content_encoding")


@pytest.mark.parametrize("body,code", [
    (b"[" * 5000 + b"]" * 5000, "too_deeply_nested"),  # Python's own parser would overflow its stack
    (json.dumps({"model": "gemma", "messages": [{"role": "user", "content": "x"}], "meta": [[[[[[[]]]]]]] * 1,
                 "deep": json.loads("[" * 70 + "]" * 70)}).encode(), "too_deeply_nested"),
    (b'{"model": "gemma", "model": "other", "messages": []}', "duplicate_key"),
    (b'{"model": "gemma", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', None),
    (b'{"model": "gemma", "messages": [{"role": "user", "content": "x"}], "top_p": Infinity}', None),
    (b'{"model": "gemma", "messages": [{"role": "user", "content": "\xff\xfe"}]}', None),  # not UTF-8
    (b'{"model": "gemma", "max_tokens": 1' + b"0" * 5000 + b"}", None),  # beyond Python's int digits
    (b'{"model": "gemma", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e999}', None),
])
def test_malformed_json_is_400(daemon, body, code):
    with httpx.Client(base_url=daemon.base_url, timeout=60) as http:
        response = http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
        assert_openai_error(response, 400, code)
        assert http.post("/v1/chat/completions", json=GOOD).status_code == 200  # same connection, still good


# Generated bodies ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
FIELDS = ["messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed",
          "presence_penalty", "frequency_penalty", "stream", "stream_options", "user", "n", "logit_bias",
          "ignore_eos", "tools", "response_format", "logprobs"]
request_bodies = st.fixed_dictionaries(
    # An unregistered model: a body that passes validation is a 404 before anything is generated.
    {"model": st.just("fuzz-no-such-model")},
    optional={field: json_values for field in FIELDS})


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(body=request_bodies | json_values, path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
def test_generated_bodies_never_make_a_500(daemon, http_for_fuzz, body, path):
    response = http_for_fuzz.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    assert response.status_code in STATUSES_FOR_CLIENT_MISTAKES, (response.status_code, response.text)
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=200), encoding=st.sampled_from([None, "gzip", "deflate", "identity", "br", "bogus"]))
def test_generated_bytes_never_make_a_500(daemon, http_for_fuzz, raw, encoding):
    headers = {"Content-Type": "application/json", **({"Content-Encoding": encoding} if encoding else {})}
    response = http_for_fuzz.post("/v1/chat/completions", content=raw, headers=headers)
    assert response.status_code in STATUSES_FOR_CLIENT_MISTAKES, (response.status_code, response.text)


@pytest.fixture(scope="module")
def http_for_fuzz(daemon):
    with httpx.Client(base_url=daemon.base_url, timeout=60) as http:
        yield http
    # After all of it the daemon is healthy and serves.
    assert httpx.post(f"{daemon.base_url}/v1/chat/completions", json=GOOD, timeout=60).status_code == 200
    assert daemon.process.poll() is None
