"""OpenAI's surface: /v1/chat/completions, /v1/completions, /v1/models.

Routes only shape the wire format; the work is in generation.py. The two
generating endpoints differ in three things: how the prompt is built, the
``object`` names, and what a choice looks like. ``_Surface`` names those.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from aiohttp import web

from hoshikage import __version__
from hoshikage.api.generation import new_id, now, parse_body, run_generation, sentence_model_available, usage
from hoshikage.api.http import keys
from hoshikage.api.http.body import read_json
from hoshikage.api.http.errors import APIError
from hoshikage.api.http.sse import open_event_stream, send_done, send_event
from hoshikage.api.openai.protocol import GenerationRequest, parse_chat_request, parse_completion_request
from hoshikage.api.tool_answers import text_splitter, tool_answer
from hoshikage.engine.llama import Chunk, TokenLogprob

FINGERPRINT = f"hoshikage-{__version__}"


@dataclasses.dataclass(frozen=True)
class _Surface:
    id_prefix: str
    object_name: str
    chunk_object_name: str
    parse: Callable[[Any], GenerationRequest]
    prompt: Callable[[web.Request, GenerationRequest], Callable]  # -> (model -> Prompt, or its awaitable)
    # (index, text, finish_reason, logprobs or None when not asked for) -> a whole answer's choice
    choice: Callable[[int, str, str | None, list[TokenLogprob] | None], dict[str, Any]]
    # (index, text, finish_reason, first piece?, logprobs or None) -> a streamed piece
    delta: Callable[[int, str, str | None, bool, list[TokenLogprob] | None], dict[str, Any]]


def _token(text: bytes, logprob: float) -> dict[str, Any]:
    return {"token": text.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(text)}


def _chat_logprobs(logprobs: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if logprobs is None:
        return None
    return {"content": [{**_token(entry.token, entry.logprob),
                         "top_logprobs": [_token(text, value) for text, value in entry.top]} for entry in logprobs],
            "refusal": None}


def _chat_choice(index: int, text: str, finish_reason: str | None,
                 logprobs: list[TokenLogprob] | None = None) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": _chat_logprobs(logprobs), "finish_reason": finish_reason}


def _chat_delta(index: int, text: str, finish_reason: str | None, first: bool,
                logprobs: list[TokenLogprob] | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {}
    if text and not first:
        delta["content"] = text
    return {"index": index, "delta": delta, "logprobs": _chat_logprobs(logprobs), "finish_reason": finish_reason}


def _completion_logprobs(logprobs: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    """OpenAI's legacy shape: parallel lists, alternatives as {token: logprob}."""
    if logprobs is None:
        return None
    tokens = [entry.token.decode("utf-8", errors="replace") for entry in logprobs]
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    return {"tokens": tokens, "token_logprobs": [entry.logprob for entry in logprobs],
            "top_logprobs": [{text.decode("utf-8", errors="replace"): value for text, value in entry.top}
                             for entry in logprobs], "text_offset": offsets}


def _completion_choice(index: int, text: str, finish_reason: str | None,
                       logprobs: list[TokenLogprob] | None = None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": _completion_logprobs(logprobs), "finish_reason": finish_reason}


def _completion_delta(index: int, text: str, finish_reason: str | None, first: bool,
                      logprobs: list[TokenLogprob] | None = None) -> dict[str, Any]:
    return _completion_choice(index, text, finish_reason, logprobs)


def _chat_prompt(request: web.Request, parsed) -> Callable:
    """The chat prompt builder: plain, or through memory when an overlong chat is to be summarised."""
    overflow = parsed.memory_overflow or request.app[keys.SETTINGS].memory_overflow
    if overflow != "summarize":
        def plain(model):
            request["tool_family"] = model.tool_family
            return model.chat_prompt(parsed.messages, parsed.stop, parsed.tools)

        return plain

    async def summarized(model):
        from hoshikage.api.memory_access import assemble_context, memory_log_fields
        from hoshikage.memory import context
        from hoshikage.memory.service import HistoryTurn

        pinned, turns = context.split_pinned(list(parsed.messages))
        history = [HistoryTurn(message["role"], message["content"], None, message) for message in turns]
        budget = context.answer_budget(model.context_length, parsed.max_tokens)
        assembly = await assemble_context(request, None, pinned, history, budget, model, "messages")
        request["log_fields"] = memory_log_fields(assembly, None)
        request["tool_family"] = model.tool_family
        return await asyncio.to_thread(model.chat_prompt, assembly.messages, parsed.stop, parsed.tools)

    return summarized


CHAT = _Surface(
    "chatcmpl", "chat.completion", "chat.completion.chunk", parse_chat_request,
    _chat_prompt,
    _chat_choice, _chat_delta,
)
COMPLETION = _Surface(
    "cmpl", "text_completion", "text_completion", parse_completion_request,
    lambda request, r: lambda model: model.completion_prompt(r.prompt, r.stop),
    _completion_choice, _completion_delta,
)


async def _serve(request: web.Request, surface: _Surface) -> web.StreamResponse:
    parsed = await parse_body(await read_json(request), surface.parse)
    request["model"] = parsed.model
    chunks = run_generation(request, parsed, surface.prompt(request, parsed))
    # The first chunk is awaited before anything is sent, so every error that
    # can happen before generation (unknown model, prompt too long) is still a
    # proper JSON error with its status code, for streams too.
    first = await anext(chunks)
    if parsed.stream:
        return await _stream(request, surface, parsed, first, chunks)
    parts: list[list[str]] = [[] for _ in range(parsed.n)]
    logprobs: list[list[TokenLogprob]] = [[] for _ in range(parsed.n)]
    finals: dict[int, Chunk] = {}

    def collect(chunk: Chunk) -> None:
        parts[chunk.index].append(chunk.text)
        logprobs[chunk.index].extend(chunk.logprobs)
        if chunk.finish_reason is not None:
            finals[chunk.index] = chunk

    asked = parsed.sampling.logprobs is not None
    collect(first)
    async for chunk in chunks:
        collect(chunk)
    ended = [finals[index] for index in range(parsed.n)]
    request["tokens"] = sum(chunk.completion_tokens for chunk in ended)
    choices = [surface.choice(index, "".join(parts[index]), finals[index].finish_reason,
                              logprobs[index] if asked else None) for index in range(parsed.n)]
    if parsed.calls_tools:
        for choice in choices:
            content, calls, reason = tool_answer(request, parsed, choice["message"]["content"],
                                                  choice["finish_reason"])
            choice["message"]["content"], choice["finish_reason"] = content, reason
            if calls:
                choice["message"]["tool_calls"] = [_tool_call(call) for call in calls]
    return web.json_response({
        "id": new_id(surface.id_prefix), "object": surface.object_name, "created": now(),
        "model": parsed.model, "system_fingerprint": FINGERPRINT, "choices": choices, "usage": usage(ended),
    })


def _tool_call(call, index: int | None = None) -> dict[str, Any]:
    shaped = {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
    return shaped if index is None else {"index": index, **shaped}


async def _stream(request: web.Request, surface: _Surface, parsed: GenerationRequest,
                  first: Chunk, chunks) -> web.StreamResponse:
    response = await open_event_stream(request)
    envelope = {"id": new_id(surface.id_prefix), "object": surface.chunk_object_name,
                "created": now(), "model": parsed.model, "system_fingerprint": FINGERPRINT}
    if parsed.include_usage:
        envelope["usage"] = None

    started: set[int] = set()  # choices whose first delta (with the role) is sent
    finals: dict[int, Chunk] = {}

    asked = parsed.sampling.logprobs is not None
    if parsed.calls_tools:
        return await _stream_tools(request, response, envelope, parsed, first, chunks)

    async def send(chunk: Chunk) -> None:
        await send_event(response, {**envelope, "choices": [
            surface.delta(chunk.index, chunk.text, chunk.finish_reason, chunk.index not in started,
                          list(chunk.logprobs) if asked else None)]})
        started.add(chunk.index)
        if chunk.finish_reason is not None:
            finals[chunk.index] = chunk

    await send(first)
    async for chunk in chunks:
        await send(chunk)
    return await _end_stream(request, response, envelope, parsed, finals)


async def _stream_tools(request: web.Request, response: web.StreamResponse, envelope: dict[str, Any], parsed,
                        first: Chunk, chunks) -> web.StreamResponse:
    """A streamed answer to a request with tools: text is sent as it is written, up to where a call may begin
    (engine/tool_stream.py); once a choice ends, the rest of its content, then one delta per tool call."""
    splitters: dict[int, Any] = {}
    started: set[int] = set()
    finals: dict[int, Chunk] = {}

    async def send(index: int, delta: dict[str, Any], reason: str | None = None) -> None:
        if index not in started:
            delta = {"role": "assistant", **delta}
            started.add(index)
        await send_event(response, {**envelope, "choices": [
            {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}]})

    async def settle(chunk: Chunk) -> None:
        splitter = splitters.setdefault(chunk.index, text_splitter(request, parsed))
        if text := splitter.feed(chunk.text):
            await send(chunk.index, {"content": text})
        if chunk.finish_reason is None:
            return
        finals[chunk.index] = chunk
        content, calls, reason = tool_answer(request, parsed, splitter.text, chunk.finish_reason)
        rest = splitter.rest(content)
        if rest or chunk.index not in started:  # an answer that is only calls still opens with the role
            await send(chunk.index, {"content": rest or content})
        for number, call in enumerate(calls):
            await send(chunk.index, {"tool_calls": [_tool_call(call, number)]})
        await send(chunk.index, {}, reason)

    await settle(first)
    async for chunk in chunks:
        await settle(chunk)
    return await _end_stream(request, response, envelope, parsed, finals)


async def _end_stream(request: web.Request, response: web.StreamResponse, envelope: dict[str, Any], parsed,
                      finals: dict[int, Chunk]) -> web.StreamResponse:
    """Usage (when asked for) and [DONE] after every choice has finished."""
    ended = [finals[index] for index in sorted(finals)]
    request["tokens"] = sum(chunk.completion_tokens for chunk in ended)
    if parsed.include_usage:
        await send_event(response, {**envelope, "choices": [], "usage": usage(ended)})
    await send_done(response)
    return response


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, CHAT)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, COMPLETION)


def _model_object(alias: str, entry) -> dict[str, Any]:
    return {"id": alias, "object": "model", "created": int(entry.added_at), "owned_by": "hoshikage"}


async def list_models(request: web.Request) -> web.Response:
    entries = request.app[keys.REGISTRY].entries()
    data = [_model_object(alias, entries[alias]) for alias in sorted(entries)]
    name = request.app[keys.SETTINGS].sentence_model_name
    if name not in entries and sentence_model_available(request):  # memory's embedding model serves too
        data.append({"id": name, "object": "model", "created": 0, "owned_by": "hoshikage"})
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    alias = request.match_info["model"]
    entry = request.app[keys.REGISTRY].get(alias)
    if entry is None and alias == request.app[keys.SETTINGS].sentence_model_name and sentence_model_available(
            request):
        return web.json_response({"id": alias, "object": "model", "created": 0, "owned_by": "hoshikage"})
    if entry is None:
        raise APIError(404, f"The model '{alias}' does not exist", param="model", code="model_not_found")
    return web.json_response(_model_object(alias, entry))


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)

