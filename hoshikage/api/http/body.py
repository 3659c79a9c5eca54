"""Read a request's JSON body, turning every way it can be malformed into a 4xx.

A client's mistake is never a 500: a body that does not decode as its
Content-Encoding says, an encoding we do not decode, invalid UTF-8 or JSON,
NaN or Infinity (not JSON, though Python's parser takes them), a key given
twice (which value was meant?), nesting deeper than MAX_DEPTH, text that is not
valid Unicode (a lone surrogate, from a ``\ud800`` escape or raw bytes Python's
parser lets through, would fail later in every UTF-8 encoder: the tokenizer,
the store, the SSE writer). Every surface reads its body here, so each of
those is refused once, at the door, naming the field. A body too
large, compressed or not, is 413; one that takes longer than
body_timeout_seconds to arrive is 408 (api/http/connections.py bounds the rest).

The daemon decompresses bodies itself (the runner has aiohttp's
auto_decompress off): aiohttp's own decoder raises inside its HTTP parser when
a body is not what its Content-Encoding says, which answered 500, dropped the
connection, or left the handler waiting for ever on a body that never ended.
Read raw, the body is consumed exactly as Content-Length says, so the
connection stays usable whatever the bytes were.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

from aiohttp import web

from hoshikage.api.http import keys
from hoshikage.api.http.errors import APIError, invalid

# Content-Encoding -> zlib window bits: gzip; zlib-wrapped deflate (RFC 9110), with raw deflate tried too.
_DECODERS = {"gzip": (16 + zlib.MAX_WBITS,), "x-gzip": (16 + zlib.MAX_WBITS,),
             "deflate": (zlib.MAX_WBITS, -zlib.MAX_WBITS)}
MAX_DEPTH = 64  # OpenAI's request bodies nest a handful of levels; this leaves room and stops abuse


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: web.Request) -> Any:
    settings = request.app[keys.SETTINGS]
    limit = settings.max_body_bytes
    try:
        # aiohttp raises 413 past client_max_size; a body trickling in for ever is cut off.
        raw = await asyncio.wait_for(request.read(), settings.body_timeout_seconds)
    except TimeoutError:
        raise APIError(408, f"The request body did not arrive within {settings.body_timeout_seconds:g} s",
                       code="request_timeout", close_connection=True) from None
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raw = _decompressed(raw, encoding, limit)
    return parse_json(raw)


def parse_json(raw: bytes | str) -> Any:
    """RAW as strict JSON, each way it can be malformed as a 400 (a body, or a WebSocket message)."""
    try:
        body = json.loads(raw, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except _DuplicateKey as duplicate:
        raise invalid(f"The JSON body gives the key {duplicate.key!r} more than once in one object",
                      code="duplicate_key") from None
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError):
        raise invalid("We could not parse the JSON body of your request. Send valid JSON "
                      "with Content-Type: application/json.") from None
    depth, unencodable = _inspect(body)
    if depth > MAX_DEPTH:
        raise _too_deep()
    if unencodable is not None:
        raise invalid(f"The text at '{unencodable}' is not valid Unicode (it contains a lone surrogate); send "
                      "UTF-8 text", param=unencodable, code="invalid_unicode")
    return body


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object with a non-empty string 'model' (every endpoint that names a model)."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required and must be a non-empty string", param="model")
    return body


def _decompressed(raw: bytes, encoding: str, limit: int) -> bytes:
    if encoding not in _DECODERS:
        raise APIError(415, f"Content-Encoding {encoding!r} is not supported; send the body uncompressed, "
                            "or compressed with gzip or deflate", code="unsupported_content_encoding")
    for window in _DECODERS[encoding]:
        decoder = zlib.decompressobj(window)
        try:
            data = decoder.decompress(raw, limit + 1)  # never more than the limit: a small body can inflate hugely
        except zlib.error:
            continue
        if len(data) > limit:
            raise APIError(413, f"The request body is larger than {limit} bytes once decompressed",
                           code="request_too_large")
        if decoder.eof and not decoder.unused_data:
            return data
    raise invalid(f"The request body is not valid {encoding} data (Content-Encoding: {encoding})",
                  code="invalid_body")


def _too_deep() -> APIError:
    return invalid(f"The JSON body is nested more than {MAX_DEPTH} levels deep", code="too_deeply_nested")


def _inspect(value: Any) -> tuple[int, str | None]:
    """How deeply VALUE nests arrays and objects, and the path of a string (or key) that cannot be encoded as
    UTF-8 (None: all can); without recursion, stopping early at either. Paths are only spelled out once a bad
    string is found: a large body of numbers costs no strings."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return deepest, _path_of_unencodable(value)
            continue
        if isinstance(item, dict):
            if not all(_encodable(key) for key in item):
                return deepest, _path_of_unencodable(value)
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest, None


def _path_of_unencodable(value: Any) -> str:
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str) and not _encodable(item):
            return path or "body"
        if isinstance(item, dict):
            for key, child in item.items():
                if not _encodable(key):
                    return f"{path or 'body'} (a key)"
                stack.append((child, f"{path}.{key}" if path else key))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))
    return "body"


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
