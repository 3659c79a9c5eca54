"""Embeddings: OpenAI's /v1/embeddings, and the work Ollama's /api/embed shares with it.

Two kinds of model answer: GGUF embedding models from the registry (batched
through llama.cpp, engine/embedding.py), and the sentence-transformers model
conversation memory uses, under its name (Settings.sentence_model_name), run
on memory's thread. Vectors are unit length; ``dimensions`` keeps the first
components and renormalises (how Matryoshka-trained models are meant to be cut,
and what OpenAI and Ollama do).
"""

from __future__ import annotations

import base64
import dataclasses
import time
from typing import Any

from aiohttp import web

from hoshikage.api.generation import RETRY_AFTER_QUEUE_FULL, scheduler_for, sentence_model_available
from hoshikage.api.http import keys
from hoshikage.api.http.body import read_json_object
from hoshikage.api.http.errors import APIError, invalid
from hoshikage.engine.embedding import EmptyInput, TokenOutOfVocabulary
from hoshikage.engine.llama import PromptTooLong
from hoshikage.engine.scheduler import QueueFull

MAX_INPUTS = 2048  # OpenAI's limit per request

INPUT_SCHEMA = {"anyOf": [
    {"type": "string", "minLength": 1},
    {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS, "items": {"type": "string", "minLength": 1}},
    {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
    {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS,
     "items": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}},
], "description": "a text, texts, token ids, or lists of token ids"}
REQUEST_SCHEMA = {"type": "object", "required": ["model", "input"], "properties": {
    "model": {"type": "string", "minLength": 1,
              "description": "a registered embedding model, or the memory's sentence model"},
    "input": INPUT_SCHEMA,
    "encoding_format": {"enum": ["float", "base64"], "default": "float"},
    "dimensions": {"type": "integer", "minimum": 1,
                   "description": "keep this many leading components (renormalised); at most the model's size"},
    "user": {"type": "string"}}}
RESPONSE_SCHEMA = {"type": "object", "required": ["object", "data", "model", "usage"], "properties": {
    "object": {"const": "list"}, "model": {"type": "string"},
    "data": {"type": "array", "items": {"type": "object", "required": ["object", "index", "embedding"], "properties": {
        "object": {"const": "embedding"}, "index": {"type": "integer", "minimum": 0},
        "embedding": {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]}}}},
    "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"],
              "properties": {"prompt_tokens": {"type": "integer", "minimum": 0},
                             "total_tokens": {"type": "integer", "minimum": 0}}}}}


@dataclasses.dataclass(frozen=True)
class EmbedOutcome:
    vectors: list  # numpy float32, unit length
    prompt_tokens: int
    load_seconds: float  # spent loading the model for this request


async def embed(request: web.Request, model: str, inputs: list[str | list[int]], *, truncate: bool,
                dimensions: int | None = None, param: str = "input") -> EmbedOutcome:
    """INPUTS embedded by MODEL; every failure as the APIError a client should see."""
    settings = request.app[keys.SETTINGS]
    entry = request.app[keys.REGISTRY].get(model)
    started = time.monotonic()
    try:
        if entry is None and model == settings.sentence_model_name and sentence_model_available(request):
            from hoshikage.api.memory_access import memory_errors
            from hoshikage.memory.embed import Embedder

            with memory_errors():
                vectors, tokens = await request.app[keys.MEMORY].call_embedder(Embedder.encode_inputs, inputs,
                                                                                truncate)
            request.app[keys.METRICS].count("hoshikage_prompt_tokens", (model,), tokens)
            return _cut(EmbedOutcome(vectors, tokens, 0.0), dimensions)
        runner = await scheduler_for(request, model, embedding=True)  # 404 unknown, 400 a chat model
        load_seconds = time.monotonic() - started
        try:
            outcome = await runner.embed(inputs, truncate)
        finally:
            runner.release_lease()
            request.app[keys.POOL].touch(model)
        request.app[keys.METRICS].count("hoshikage_prompt_tokens", (model,), outcome.prompt_tokens)
        return _cut(EmbedOutcome(outcome.vectors, outcome.prompt_tokens, load_seconds), dimensions)
    except PromptTooLong as error:
        ollama = request.path.startswith("/api/")  # where a client may ask for truncation instead
        raise invalid(f"This model's maximum context length is {error.context_length} tokens; an input has "
                      f"{error.prompt_tokens}. Shorten it{' or send truncate: true' if ollama else ''}.",
                      param=param, code="context_length_exceeded") from None
    except EmptyInput as error:
        raise invalid(f"{error}: empty inputs cannot be embedded", param=param) from None
    except TokenOutOfVocabulary as error:
        raise invalid(str(error), param=param) from None
    except QueueFull as full:
        raise APIError(429, f"The model '{model}' is busy ({full.args[0]} requests waiting); retry shortly",
                       code="queue_full", headers={"Retry-After": str(RETRY_AFTER_QUEUE_FULL)}) from None


def _cut(outcome: EmbedOutcome, dimensions: int | None) -> EmbedOutcome:
    if dimensions is None or not outcome.vectors:
        return outcome
    import numpy as np

    size = len(outcome.vectors[0])
    if dimensions > size:
        raise invalid(f"'dimensions' is {dimensions}, more than this model's {size}", param="dimensions")
    cut = [vector[:dimensions] / max(float(np.linalg.norm(vector[:dimensions])), 1e-12) for vector in outcome.vectors]
    return dataclasses.replace(outcome, vectors=cut)


def parse_inputs(value: Any, param: str = "input") -> list[str | list[int]]:
    """The input field as a list of texts and token lists, or a 400 naming what is wrong."""
    if isinstance(value, str):
        value = [value]
    elif isinstance(value, list) and value and all(_is_token(item) for item in value):
        value = [value]  # one list of token ids
    if not isinstance(value, list) or not value:
        raise invalid(f"'{param}' must be a non-empty string, a list of strings, or token ids", param=param)
    if len(value) > MAX_INPUTS:
        raise invalid(f"'{param}' holds {len(value)} inputs; at most {MAX_INPUTS} per request", param=param)
    inputs: list[str | list[int]] = []
    for index, item in enumerate(value):
        if isinstance(item, str) and item:
            inputs.append(item)
        elif isinstance(item, list) and item and all(_is_token(token) for token in item):
            inputs.append([int(token) for token in item])  # JSON's 3.0 is the integer 3
        else:
            raise invalid(f"'{param}[{index}]' must be a non-empty string or a non-empty list of token ids",
                          param=f"{param}[{index}]")
    return inputs


def _is_token(value: Any) -> bool:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _encoded(vector, encoding: str):
    import numpy as np

    if encoding == "base64":  # little-endian float32, as the OpenAI SDK decodes it
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(value) for value in vector]


async def create_embeddings(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    model = request["model"] = body["model"]
    if "input" not in body:
        raise invalid("'input' is required", param="input")
    inputs = parse_inputs(body["input"])
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise invalid("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if not (_is_token(dimensions) and dimensions >= 1):
            raise invalid("'dimensions' must be a positive integer", param="dimensions")
        dimensions = int(dimensions)
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise invalid("'user' must be a string", param="user")
    outcome = await embed(request, model, inputs, truncate=False, dimensions=dimensions)
    request["tokens"] = outcome.prompt_tokens
    return web.json_response({
        "object": "list", "model": model,
        "data": [{"object": "embedding", "index": index, "embedding": _encoded(vector, encoding)}
                 for index, vector in enumerate(outcome.vectors)],
        "usage": {"prompt_tokens": outcome.prompt_tokens, "total_tokens": outcome.prompt_tokens}})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/embeddings", create_embeddings)
