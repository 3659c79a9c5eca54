"""The work behind every generating endpoint, whatever its wire format.

Read and validate the body, find the model, build the prompt, submit it, and
hand back a TokenStream. Each step turns its failure into the APIError a
client should see; the stream is cancelled whenever the request ends early
(client gone, handler cancelled), so no generation outlives its request.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from hoshikage.api.http import keys
from hoshikage.api.http.auth import identity_of
from hoshikage.api.http.errors import APIError, invalid
from hoshikage.api.openai.protocol import GenerationRequest
from hoshikage.engine.llama import Chunk, LoadedModel, ModelLoadError, Prompt, PromptTooLong
from hoshikage.engine.models import BudgetBusy, ModelTooLarge, UnknownModel
from hoshikage.engine.sampling import GrammarError, GrammarTooCostly, check_grammar
from hoshikage.engine.scheduler import GenerationFailed, QueueFull, TooManyChoices

log = logging.getLogger("hoshikage.api")

# Seconds a client should wait before retrying: a full queue drains in seconds,
# a queue that timed out is busy for longer.
RETRY_AFTER_QUEUE_FULL = 2
RETRY_AFTER_QUEUE_TIMEOUT = 10


async def parse_body(body: Any, parse: Callable[[Any], GenerationRequest]) -> GenerationRequest:
    """PARSE(BODY) on a worker thread: a schema becomes a grammar there (engine/structured.py), which is work
    whose size the client controls, bounded but never for the event loop."""
    parsed = await asyncio.to_thread(parse, body)
    if parsed.ignored_fields:
        log.debug("ignoring unknown request fields: %s", ", ".join(parsed.ignored_fields))
    return parsed


async def scheduler_for(request: web.Request, model: str, *, embedding: bool = False):
    """MODEL's scheduler (an EmbeddingRunner when EMBEDDING), loaded if need be, leased (release_lease() when
    done); failures as APIError, a model of the other kind among them."""
    pool = request.app[keys.POOL]
    entry = request.app[keys.REGISTRY].get(model)
    sentence_model = entry is None and model == request.app[keys.SETTINGS].sentence_model_name
    if not embedding and ((entry is not None and entry.embedding)
                          or (sentence_model and sentence_model_available(request))):
        raise invalid(f"'{model}' is an embedding model: it gives vectors (/v1/embeddings), not text; use a chat "
                      "model", param="model", code="model_not_chat")
    if embedding and entry is not None and not entry.embedding:
        raise invalid(f"'{model}' is a chat model and gives no embeddings; use an embedding model (register one "
                      "with `hoshikage add FILE ALIAS --embedding`)", param="model", code="model_not_embedding")
    started = time.monotonic()
    try:
        scheduler = await pool.scheduler_for(model)
        request["load_seconds"] = time.monotonic() - started  # ~0 when it was loaded already
    except UnknownModel:
        raise APIError(404, f"The model '{model}' does not exist", param="model",
                       code="model_not_found") from None
    except ModelLoadError as error:
        # The administrator's to fix (the message says how), not a bug: 503, not 500.
        raise APIError(503, str(error), param="model", code="model_load_failed",
                       error_type="server_error") from None
    except ModelTooLarge as error:
        raise invalid(f"{error}; ask the administrator, or use a smaller model", param="model",
                      code="model_too_large") from None
    except BudgetBusy:
        raise APIError(503, f"The memory budget is taken by models serving requests; '{model}' "
                            "cannot be loaded right now", code="memory_budget_busy", error_type="server_error",
                       headers={"Retry-After": str(RETRY_AFTER_QUEUE_TIMEOUT)}) from None
    return scheduler


def sentence_model_available(request: web.Request) -> bool:
    """Whether memory's sentence model can serve (it is a model name only then): the memory extra and the
    model are installed."""
    from hoshikage.memory.embed import model_installed

    return model_installed(request.app[keys.SETTINGS].sentence_bert_model)


async def run_generation(
    request: web.Request,
    parsed: GenerationRequest,
    build_prompt: Callable[[LoadedModel], Prompt] | Callable[[LoadedModel], Awaitable[Prompt]],
    conversation_id: str | None = None,
) -> AsyncIterator[Chunk]:
    """Yield the chunks of PARSED, from the first token to the one with finish_reason. CONVERSATION_ID: the
    stored conversation it continues, whose forget also drops the KV state it leaves."""
    pool = request.app[keys.POOL]
    scheduler = await scheduler_for(request, parsed.model)
    try:
        # A client that sets no answer length leaves it to the daemon's default_max_tokens, else the context.
        default_max_tokens = request.app[keys.SETTINGS].default_max_tokens or None
        stream = await _submit(scheduler, parsed, build_prompt, conversation_id, default_max_tokens,
                               identity_of(request).name)
    finally:
        scheduler.release_lease()  # queued (so busy) by now, or failed
    try:
        timeout = request.app[keys.SETTINGS].queue_timeout_seconds
        try:
            await asyncio.wait_for(stream.started.wait(), timeout)
        except TimeoutError:
            raise APIError(503, f"The request waited {timeout:g} s for the model '{parsed.model}' without its "
                                "turn coming; retry later", code="queue_timeout", error_type="server_error",
                           headers={"Retry-After": str(RETRY_AFTER_QUEUE_TIMEOUT)}) from None
        metrics, first = request.app[keys.METRICS], True
        async for chunk in stream:
            if first:
                first = False
                metrics.observe("hoshikage_time_to_first_token_seconds", (parsed.model,),
                                time.monotonic() - request.get("started", time.monotonic()))
            if chunk.finish_reason is not None:
                if chunk.index == 0:  # the choices share one prompt
                    metrics.count("hoshikage_prompt_tokens", (parsed.model,), chunk.prompt_tokens)
                    if chunk.restored_tokens:
                        request["log_fields"] = {**request.get("log_fields", {}),
                                                 "KV_RESTORED": chunk.restored_tokens}
                metrics.count("hoshikage_generated_tokens", (parsed.model,), chunk.completion_tokens)
            yield chunk
    except GenerationFailed as error:
        if isinstance(error.__cause__, GrammarTooCostly):
            raise invalid(str(error), param=grammar_param(parsed), code="unsupported_schema") from None
        raise APIError(500, f"Generation failed: {error}", error_type="server_error") from None
    finally:
        stream.cancel()  # no-op when it finished; stops it when we leave early
        pool.touch(parsed.model)


async def _submit(scheduler, parsed: GenerationRequest, build_prompt: Callable[[LoadedModel], Prompt],
                  cache_tag: str | None = None, default_max_tokens: int | None = None, identity: str = "anonymous"):
    """Build the prompt and queue the job; each failure as the APIError the client should see."""
    try:
        if inspect.iscoroutinefunction(build_prompt):  # memory's assembly awaits its own thread
            prompt = await build_prompt(scheduler.model)
        else:
            prompt = await asyncio.to_thread(build_prompt, scheduler.model)
    except PromptTooLong as error:
        raise invalid(
            f"This model's maximum context length is {error.context_length} tokens. However, your "
            f"request has {error.prompt_tokens} prompt tokens. Please reduce the length of the prompt.",
            param=prompt_param(parsed), code="context_length_exceeded") from None
    except ValueError as error:  # a chat template's raise_exception, a bad token id
        raise invalid(str(error), param=prompt_param(parsed)) from None
    vocabulary = scheduler.model.n_vocab
    outside = next((token for token, _ in parsed.sampling.logit_bias if token >= vocabulary), None)
    if outside is not None:
        raise invalid(f"'logit_bias' names token {outside}, outside the vocabulary of '{parsed.model}' "
                      f"(0..{vocabulary - 1})", param="logit_bias")
    if parsed.sampling.grammar is not None:
        try:
            await asyncio.to_thread(check_grammar, scheduler.model.model.vocab, parsed.sampling.grammar)
        except GrammarError:
            raise invalid("The grammar made from 'response_format' is not one llama.cpp accepts",
                          param="response_format", code="unsupported_schema") from None
    max_tokens = parsed.max_tokens if parsed.max_tokens is not None else default_max_tokens
    try:
        return scheduler.submit(prompt, parsed.sampling, max_tokens, parsed.n, tag=cache_tag, identity=identity)
    except TooManyChoices as error:
        raise invalid(f"n={error.n} is more than the {error.slots} choices '{parsed.model}' can generate at once",
                      param="n") from None
    except QueueFull as full:
        if full.identity is not None:
            raise APIError(429, f"You already have {full.waiting} requests waiting for the model '{parsed.model}', "
                                "as many as one client may (max_queue_per_identity: "
                                f"{scheduler.max_waiting_per_identity}); send the next when one has started",
                           code="queue_full_for_identity",
                           headers={"Retry-After": str(RETRY_AFTER_QUEUE_FULL)}) from None
        raise APIError(429, f"The model '{parsed.model}' is busy ({full.waiting} requests waiting); retry shortly",
                       code="queue_full", headers={"Retry-After": str(RETRY_AFTER_QUEUE_FULL)}) from None


def grammar_param(parsed: GenerationRequest) -> str:
    """The request field whose schema became the grammar (a forced tool call's, or the answer's format)."""
    return "tools" if getattr(parsed, "tool_choice", "auto") not in ("auto", "none") else "response_format"


def prompt_param(parsed: GenerationRequest) -> str:
    """The request field that holds the prompt, for errors about it."""
    return getattr(parsed, "prompt_param", None) or ("messages" if hasattr(parsed, "messages") else "prompt")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(finals: list[Chunk]) -> dict[str, int]:
    """Usage of a request from the last chunk of each of its choices (they share one prompt)."""
    prompt = finals[0].prompt_tokens
    completion = sum(chunk.completion_tokens for chunk in finals)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
