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
from hoshikage.api import keys
from hoshikage.api.errors import APIError
from hoshikage.api.body import read_json
from hoshikage.api.generation import new_id, now, parse_body, run_generation, usage
from hoshikage.api.protocol import GenerationRequest, parse_chat_request, parse_completion_request
from hoshikage.api.sse import open_event_stream, send_done, send_event
from hoshikage.engine.llama import Chunk

FINGERPRINT = f"hoshikage-{__version__}"


@dataclasses.dataclass(frozen=True)
class _Surface:
    id_prefix: str
    object_name: str
    chunk_object_name: str
    parse: Callable[[Any], GenerationRequest]
    prompt: Callable[[web.Request, GenerationRequest], Callable]  # -> (model -> Prompt, or its awaitable)
    choice: Callable[[int, str, str | None], dict[str, Any]]  # whole answer
    delta: Callable[[int, str, str | None, bool], dict[str, Any]]  # streamed piece


def _chat_choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None, "finish_reason": finish_reason}


def _chat_delta(index: int, text: str, finish_reason: str | None, first: bool) -> dict[str, Any]:
    delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {}
    if text and not first:
        delta["content"] = text
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _completion_choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def _completion_delta(index: int, text: str, finish_reason: str | None, first: bool) -> dict[str, Any]:
    return _completion_choice(index, text, finish_reason)


def _chat_prompt(request: web.Request, parsed) -> Callable:
    """The chat prompt builder: plain, or through memory when an overlong chat is to be summarised."""
    overflow = parsed.memory_overflow or request.app[keys.SETTINGS].memory_overflow
    if overflow != "summarize":
        return lambda model: model.chat_prompt(parsed.messages, parsed.stop)

    async def summarized(model):
        from hoshikage.api.memory_access import memory_errors
        from hoshikage.api.responses import memory_log_fields
        from hoshikage.memory import context
        from hoshikage.memory.service import HistoryTurn, assemble

        pinned, turns = context.split_pinned(list(parsed.messages))
        history = [HistoryTurn(message["role"], message["content"], None) for message in turns]
        budget = context.answer_budget(model.context_length, parsed.max_tokens)
        with memory_errors():
            try:
                assembly = await assemble(request.app[keys.MEMORY], None, pinned, history, budget,
                                          model.count_chat_tokens, model.count_text_tokens)
            except context.ContextTooLong as error:
                raise APIError(400, f"The newest message needs {error.prompt_tokens} tokens; this model's context "
                                    f"has room for {error.budget} besides the answer", param="messages",
                               code="context_length_exceeded") from None
        request["log_fields"] = memory_log_fields(assembly, None)
        return await asyncio.to_thread(model.chat_prompt, assembly.messages, parsed.stop)

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
    parsed = parse_body(await read_json(request), surface.parse)
    request["model"] = parsed.model
    chunks = run_generation(request, parsed, surface.prompt(request, parsed))
    # The first chunk is awaited before anything is sent, so every error that
    # can happen before generation (unknown model, prompt too long) is still a
    # proper JSON error with its status code, for streams too.
    first = await anext(chunks)
    if parsed.stream:
        return await _stream(request, surface, parsed, first, chunks)
    parts: list[list[str]] = [[] for _ in range(parsed.n)]
    finals: dict[int, Chunk] = {}

    def collect(chunk: Chunk) -> None:
        parts[chunk.index].append(chunk.text)
        if chunk.finish_reason is not None:
            finals[chunk.index] = chunk

    collect(first)
    async for chunk in chunks:
        collect(chunk)
    ended = [finals[index] for index in range(parsed.n)]
    request["tokens"] = sum(chunk.completion_tokens for chunk in ended)
    return web.json_response({
        "id": new_id(surface.id_prefix), "object": surface.object_name, "created": now(),
        "model": parsed.model, "system_fingerprint": FINGERPRINT,
        "choices": [surface.choice(index, "".join(parts[index]), finals[index].finish_reason)
                    for index in range(parsed.n)],
        "usage": usage(ended),
    })


async def _stream(request: web.Request, surface: _Surface, parsed: GenerationRequest,
                  first: Chunk, chunks) -> web.StreamResponse:
    response = await open_event_stream(request)
    envelope = {"id": new_id(surface.id_prefix), "object": surface.chunk_object_name,
                "created": now(), "model": parsed.model, "system_fingerprint": FINGERPRINT}
    if parsed.include_usage:
        envelope["usage"] = None

    started: set[int] = set()  # choices whose first delta (with the role) is sent
    finals: dict[int, Chunk] = {}

    async def send(chunk: Chunk) -> None:
        await send_event(response, {**envelope, "choices": [
            surface.delta(chunk.index, chunk.text, chunk.finish_reason, chunk.index not in started)]})
        started.add(chunk.index)
        if chunk.finish_reason is not None:
            finals[chunk.index] = chunk

    await send(first)
    async for chunk in chunks:
        await send(chunk)
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
    return web.json_response({"object": "list",
                              "data": [_model_object(alias, entries[alias]) for alias in sorted(entries)]})


async def get_model(request: web.Request) -> web.Response:
    alias = request.match_info["model"]
    entry = request.app[keys.REGISTRY].get(alias)
    if entry is None:
        raise APIError(404, f"The model '{alias}' does not exist", param="model", code="model_not_found")
    return web.json_response(_model_object(alias, entry))


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)

