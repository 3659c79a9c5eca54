"""Ollama's API (/api/...) on the same sockets, registry, model pool and scheduler as OpenAI's.

Requests are translated to the OpenAI request api/openai/protocol.py validates
(ollama/protocol.py), run by the same generation path, and answered in
Ollama's shape: NDJSON lines by default, one JSON object with stream: false,
durations in nanoseconds, errors as ``{"error": "..."}`` (api/http/errors.py
shapes every error under /api/ that way). Model names are registry aliases,
also in Ollama's ``name:tag`` form with ``:latest``.

What Ollama does with its own model store (pull, push, create, copy) is the
registry's here: those endpoints say how to register a model instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
from typing import Any

from aiohttp import web

from hoshikage import __version__
from hoshikage.api.generation import parse_body, run_generation, scheduler_for, sentence_model_available
from hoshikage.api.http import keys
from hoshikage.api.http.body import read_json
from hoshikage.api.http.errors import APIError, invalid
from hoshikage.api.http.sse import started_stream
from hoshikage.api.ollama.protocol import (chat_messages, details, digest, done_reason, model_summary, nanoseconds,
                                           ollama_name, parse_keep_alive, request_body, timestamp,
                                           tool_calls_out, unknown_options)
from hoshikage.api.openai.embeddings import embed, parse_inputs
from hoshikage.api.openai.protocol import parse_chat_request, parse_completion_request, whole_number
from hoshikage.api.tool_answers import text_splitter, tool_answer
from hoshikage.engine.context_choice import context_for
from hoshikage.engine.llama import Chunk
from hoshikage.registry import resolve_name

log = logging.getLogger("hoshikage.api")

NDJSON = "application/x-ndjson"
REGISTER_HINT = ("Hoshikage serves GGUF files from its registry: register one with "
                 "`hoshikage add /path/to/model.gguf ALIAS` (see `hoshikage add --help`)")


async def _body(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object")
    return body


def _model_field(body: dict[str, Any]) -> str:
    name = body.get("model") or body.get("name")  # "name": Ollama's older clients
    if not isinstance(name, str) or not name:
        raise invalid("'model' is required")
    return name


def _alias(request: web.Request, name: str, *, sentence_model: bool = False) -> str:
    """The registered alias NAME means; 404 in Ollama's words when there is none."""
    known = set(request.app[keys.REGISTRY].entries())
    if sentence_model and sentence_model_available(request):
        known.add(request.app[keys.SETTINGS].sentence_model_name)
    alias = resolve_name(name, known)
    if alias is None:
        raise APIError(404, f"model '{name}' not found; {REGISTER_HINT}")
    request["model"] = alias
    return alias


# Model listing -----------------------------------------------------------------

async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": __version__})


async def tags(request: web.Request) -> web.Response:
    entries = request.app[keys.REGISTRY].entries()
    models = [model_summary(entries[alias]) for alias in sorted(entries)]
    settings = request.app[keys.SETTINGS]
    if settings.sentence_model_name not in entries and sentence_model_available(request):
        name = ollama_name(settings.sentence_model_name)
        models.append({"name": name, "model": name, "modified_at": timestamp(_modified(settings.sentence_bert_model)),
                       "size": 0, "digest": "",
                       "details": {"parent_model": "", "format": "sentence-transformers", "family": "",
                                   "families": None, "parameter_size": "", "quantization_level": ""}})
    return web.json_response({"models": models})


def _modified(name: str) -> float:
    """When a sentence-transformers model directory last changed (0 for a name in the Hugging Face cache)."""
    from pathlib import Path

    try:
        return Path(name).expanduser().stat().st_mtime
    except OSError:
        return 0.0


async def show(request: web.Request) -> web.Response:
    body = await _body(request)
    alias = _alias(request, _model_field(body))
    entry = request.app[keys.REGISTRY].get(alias)
    info = await asyncio.to_thread(_header, entry.path)
    gguf = entry.gguf or {}
    architecture = gguf.get("architecture", "")
    verbose = bool(body.get("verbose"))
    model_info = {key: value for key, value in (info or {}).items()
                  if verbose or not (key.startswith("tokenizer.") or isinstance(value, (list, dict)))}
    context_length = context_for(entry, request.app[keys.SETTINGS]).tokens
    capabilities = ["embedding"] if entry.embedding else ["completion", "tools"]
    return web.json_response({
        "license": str((info or {}).get("general.license", "")),
        "modelfile": f"# Modelfile of the Hoshikage registry entry '{alias}'\nFROM {entry.path}\n"
                     f"PARAMETER num_ctx {context_length}\n",
        "parameters": f"num_ctx {context_length}",
        "template": (info or {}).get("tokenizer.chat_template", "") if not entry.embedding else "",
        "details": details(entry),
        "model_info": {"general.architecture": architecture, "general.parameter_count": gguf.get("parameters"),
                       **model_info},
        "capabilities": capabilities,
        "modified_at": timestamp(entry.added_at),
    })


def _header(path: str) -> dict[str, Any] | None:
    from hoshikage.gguf_meta import GGUFError, read_gguf_info

    try:
        return read_gguf_info(path).metadata
    except (GGUFError, OSError):
        return None  # the listing still shows what the registry knows


async def running(request: web.Request) -> web.Response:
    pool, settings, activity = request.app[keys.POOL], request.app[keys.SETTINGS], request.app[keys.ACTIVITY]
    registry = request.app[keys.REGISTRY]
    # A daemon that exits when idle (always, under socket activation) takes every model with it.
    exits_in = math.inf
    if settings.exit_when_idle and settings.idle_timeout_seconds:
        exits_in = settings.idle_timeout_seconds - (0 if activity.in_flight else activity.idle_for())
    models = []
    for loaded in pool.describe():
        alias, entry = loaded["model"], registry.get(loaded["model"])
        if entry is None:
            continue  # removed from the registry: released at the next idle check
        left = min(pool.expires_in(alias, settings.idle_timeout_seconds), max(0.0, exits_in))
        expires = "9999-12-31T23:59:59Z" if math.isinf(left) else timestamp(time.time() + left)
        models.append({"name": ollama_name(alias), "model": ollama_name(alias),
                       "size": loaded["host_bytes"] + loaded["device_bytes"], "digest": digest(entry),
                       "details": details(entry), "expires_at": expires, "size_vram": loaded["device_bytes"],
                       "context_length": loaded["context_length"]})
    return web.json_response({"models": models})


# Generation --------------------------------------------------------------------

@dataclasses.dataclass
class _Exchange:
    """What one chat or generate request needs beyond its parsed body."""
    name: str  # as the client wrote it, echoed back
    alias: str
    keep_alive: float | None
    started: float
    chat: bool


async def chat(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    exchange = _exchange(request, body, chat=True)
    messages = body.get("messages")
    if not messages:  # Ollama's way to load (or, with keep_alive 0, unload) a model
        return await _load_or_unload(request, exchange)
    openai, stop = request_body(body, exchange.alias)
    openai["messages"] = chat_messages(messages)
    if body.get("tools"):
        openai["tools"] = body["tools"]
    parsed = dataclasses.replace(await parse_body(openai, parse_chat_request), stream=_streams(body))
    parsed = dataclasses.replace(parsed, stop=parsed.stop + stop)

    def prompt(model):
        request["tool_family"] = model.tool_family
        return model.chat_prompt(parsed.messages, parsed.stop, parsed.tools)

    return await _generate(request, exchange, parsed, prompt)


async def generate(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    exchange = _exchange(request, body, chat=False)
    text = body.get("prompt")
    if text is not None and not isinstance(text, str):
        raise invalid("'prompt' must be a string", param="prompt")
    for name, why in (("suffix", "fill-in-the-middle is not supported"),
                      ("template", "templates come from the GGUF or `hoshikage add --chat-format`"),
                      ("context", "Ollama's deprecated token context is not kept; send the conversation to "
                                  "/api/chat"),
                      ("images", "images are not supported (no vision model is served)")):
        if body.get(name):
            raise invalid(f"'{name}' is not supported: {why}", param=name)
    if not text:
        return await _load_or_unload(request, exchange)
    openai, stop = request_body(body, exchange.alias)
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise invalid("'system' must be a string", param="system")
    if body.get("raw"):  # the prompt as written, no template
        openai["prompt"] = text
        parsed = await parse_body(openai, parse_completion_request)
        parsed = dataclasses.replace(parsed, stream=_streams(body), stop=parsed.stop + stop)
        return await _generate(request, exchange, parsed, lambda model: model.completion_prompt(parsed.prompt,
                                                                                                parsed.stop))
    openai["messages"] = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}]
    parsed = await parse_body(openai, parse_chat_request)
    parsed = dataclasses.replace(parsed, stream=_streams(body), stop=parsed.stop + stop)
    return await _generate(request, exchange, parsed, lambda model: model.chat_prompt(parsed.messages, parsed.stop))


def _exchange(request: web.Request, body: dict[str, Any], chat: bool) -> _Exchange:
    name = _model_field(body)
    keep_alive = parse_keep_alive(body.get("keep_alive"))
    alias = _alias(request, name)
    ignored = unknown_options(body)
    if ignored:
        log.debug("ignoring unknown Ollama options: %s", ", ".join(ignored))
    return _Exchange(name, alias, keep_alive, time.monotonic(), chat)


def _streams(body: dict[str, Any]) -> bool:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid("'stream' must be true or false", param="stream")
    return stream is not False  # Ollama streams unless told not to


def _line(exchange: _Exchange, text: str, **final: Any) -> dict[str, Any]:
    content = {"message": {"role": "assistant", "content": text}} if exchange.chat else {"response": text}
    return {"model": exchange.name, "created_at": timestamp(), **content, "done": bool(final), **final}


async def _load_or_unload(request: web.Request, exchange: _Exchange) -> web.Response:
    pool = request.app[keys.POOL]
    if exchange.keep_alive == 0:
        await pool.unload(exchange.alias)
        return web.json_response(_line(exchange, "", done_reason="unload"))
    entry = request.app[keys.REGISTRY].get(exchange.alias)
    scheduler = await scheduler_for(request, exchange.alias, embedding=entry is not None and entry.embedding)
    scheduler.release_lease()
    pool.touch(exchange.alias)
    pool.keep_alive(exchange.alias, exchange.keep_alive)
    return web.json_response(_line(exchange, "", done_reason="load"))


async def _generate(request: web.Request, exchange: _Exchange, parsed, prompt) -> web.StreamResponse:
    chunks = run_generation(request, parsed, prompt)
    first = await anext(chunks)  # errors before the first token keep their status code
    first_at = time.monotonic()
    pieces: list[str] = [first.text]
    final = first if first.finish_reason is not None else None
    response = None
    if parsed.stream:
        response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        started_stream(request, response, lambda stream, error: _write(stream, {"error": error.message}))
    # With tools, text streams up to where a call may begin; the calls come whole, in the last line.
    splitter = text_splitter(request, parsed) if parsed.calls_tools else None

    async def send(text: str) -> None:
        if response is not None and (visible := splitter.feed(text) if splitter else text):
            await _write(response, _line(exchange, visible))

    await send(first.text)
    # A failure from here on is reported in the stream once it is open (api/http/sse.py).
    async for chunk in chunks:
        if chunk.text:
            pieces.append(chunk.text)
            await send(chunk.text)
        if chunk.finish_reason is not None:
            final = chunk
    request["tokens"] = final.completion_tokens
    last = _final_line(request, exchange, parsed, "".join(pieces), final, first_at)
    if response is None:
        response = web.json_response(last)
        await response.prepare(request)  # sent before the model is released, not after
    else:
        field = last["message"] if "message" in last else last
        key = "content" if "message" in last else "response"
        field[key] = splitter.rest(field[key]) if splitter else ""  # the rest was sent line by line
        await _write(response, last)
    await response.write_eof()
    await _settle_keep_alive(request, exchange)
    return response


def _final_line(request: web.Request, exchange: _Exchange, parsed, text: str, final: Chunk,
                first_at: float) -> dict[str, Any]:
    now = time.monotonic()
    load = request.get("load_seconds", 0.0)
    reason = final.finish_reason
    calls = []
    if parsed.calls_tools:
        text, calls, reason = tool_answer(request, parsed, text, reason)
        text = text or ""
    line = _line(exchange, text, done_reason=done_reason(reason),
                 total_duration=nanoseconds(now - exchange.started), load_duration=nanoseconds(load),
                 prompt_eval_count=final.prompt_tokens,
                 prompt_eval_duration=nanoseconds(max(0.0, first_at - exchange.started - load)),
                 eval_count=final.completion_tokens, eval_duration=nanoseconds(now - first_at))
    if calls:
        line["message"]["tool_calls"] = tool_calls_out(calls)
    return line


async def _write(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    await response.write(json.dumps(payload, ensure_ascii=False).encode() + b"\n")


async def _settle_keep_alive(request: web.Request, exchange: _Exchange) -> None:
    """Apply the request's keep_alive once the answer is sent: 0 releases the model now when no other request
    uses it, else when the idle checker next finds it unused."""
    pool = request.app[keys.POOL]
    pool.keep_alive(exchange.alias, exchange.keep_alive)
    if exchange.keep_alive == 0:
        await pool.unload(exchange.alias)


# Embeddings --------------------------------------------------------------------

async def embed_texts(request: web.Request) -> web.Response:
    body = await _body(request)
    name = _model_field(body)
    alias = _alias(request, name, sentence_model=True)
    keep_alive = parse_keep_alive(body.get("keep_alive"))
    started = time.monotonic()
    value = body.get("input")
    if value == [] or value is None:
        return web.json_response({"model": name, "embeddings": []})
    truncate = body.get("truncate", True)
    if not isinstance(truncate, bool):
        raise invalid("'truncate' must be true or false", param="truncate")
    dimensions = body.get("dimensions")
    if dimensions is not None:
        dimensions = whole_number(dimensions)
        if dimensions is None or dimensions < 1:
            raise invalid("'dimensions' must be a positive integer", param="dimensions")
    if not _texts(value):
        raise invalid("'input' must be a string or a list of strings", param="input")
    inputs = parse_inputs(value)
    outcome = await embed(request, alias, inputs, truncate=truncate, dimensions=dimensions, param="input")
    request["tokens"] = outcome.prompt_tokens
    request.app[keys.POOL].keep_alive(alias, keep_alive)
    return web.json_response({"model": name, "embeddings": [[float(x) for x in vector] for vector in outcome.vectors],
                              "total_duration": nanoseconds(time.monotonic() - started),
                              "load_duration": nanoseconds(outcome.load_seconds),
                              "prompt_eval_count": outcome.prompt_tokens})


def _texts(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(item, str) for item in value))


async def embeddings_legacy(request: web.Request) -> web.Response:
    """The older /api/embeddings: one prompt, one vector under "embedding"."""
    body = await _body(request)
    alias = _alias(request, _model_field(body), sentence_model=True)
    keep_alive = parse_keep_alive(body.get("keep_alive"))
    text = body.get("prompt")
    if text is not None and not isinstance(text, str):
        raise invalid("'prompt' must be a string", param="prompt")
    if not text:
        return web.json_response({"embedding": []})
    outcome = await embed(request, alias, [text], truncate=True, param="prompt")
    request["tokens"] = outcome.prompt_tokens
    request.app[keys.POOL].keep_alive(alias, keep_alive)
    return web.json_response({"embedding": [float(x) for x in outcome.vectors[0]]})


# The model store -------------------------------------------------------------------

async def delete(request: web.Request) -> web.Response:
    from hoshikage.model_files import remove_model
    from hoshikage.registry import RegistryError

    body = await _body(request)
    alias = _alias(request, _model_field(body))
    settings, registry = request.app[keys.SETTINGS], request.app[keys.REGISTRY]
    try:
        await asyncio.to_thread(remove_model, settings, registry, alias)
    except RegistryError as error:
        raise APIError(404, str(error)) from None
    except PermissionError as error:
        raise APIError(403, f"the daemon may not change the registry ({error.filename}); remove the model with "
                            f"`sudo hoshikage remove {alias}`") from None
    await request.app[keys.POOL].unload(alias)
    return web.json_response({})


async def store_operation(request: web.Request) -> web.Response:
    operation = request.path.rsplit("/", 1)[-1]
    raise APIError(400, f"'{operation}' is not supported: Hoshikage never downloads, builds or copies models. "
                        f"{REGISTER_HINT}; the same file may be registered under several aliases")


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Hoshikage is running (OpenAI API at /v1, Ollama API at /api)")


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_post("/api/show", show)
    app.router.add_get("/api/ps", running)
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/api/embed", embed_texts)
    app.router.add_post("/api/embeddings", embeddings_legacy)
    app.router.add_delete("/api/delete", delete)
    for operation in ("pull", "push", "create", "copy"):
        app.router.add_post(f"/api/{operation}", store_operation)
