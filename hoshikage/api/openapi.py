"""The OpenAPI document of Hoshikage's own API, built from the schemas the code validates with.

Every operation the daemon serves is here: OpenAI's Chat Completions, Completions, Embeddings and
Models, the Responses API (with compact) and Conversations on conversation memory, the memory
context view, Ollama's API, and the status endpoints. Chat and completion request bodies come from
api/openai/protocol.py's declared FIELDS, the same schemas its validation reads; the rest are in
api/openapi_schemas.py, written from the handlers' validation. Streams are described per item with
OpenAPI 3.2's ``itemSchema`` (SSE events, NDJSON lines). schemathesis checks in the suite that the
daemon keeps to all of it. Served at ``GET /openapi.json``; ``docs/openapi.json`` is the same text
(render()), kept equal by a test.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from hoshikage import __version__
from hoshikage.api import openapi_schemas as s
from hoshikage.api.openai import embeddings
from hoshikage.api.openai.protocol import request_schema

NDJSON = "application/x-ndjson"
_FINISH = {"enum": ["stop", "length", "tool_calls"]}
USAGE = s.obj(["prompt_tokens", "completion_tokens", "total_tokens"],
              {name: s.COUNT for name in ("prompt_tokens", "completion_tokens", "total_tokens")})
_ENVELOPE = {"id": s.STRING, "created": s.INTEGER, "model": s.STRING, "system_fingerprint": s.STRING}
_TOOL_CALL = s.obj(["id", "type", "function"], {"id": s.STRING, "type": {"const": "function"}, "function": s.obj(
    ["name", "arguments"], {"name": s.STRING, "arguments": s.STRING})})
_TOKEN = {"token": s.STRING, "logprob": {"type": "number"}, "bytes": {"type": "array", "items": s.COUNT}}
_CHAT_LOGPROBS = s.nullable(s.obj(["content"], {"content": {"type": "array", "items": s.obj(
    ["token", "logprob", "bytes", "top_logprobs"], {**_TOKEN, "top_logprobs": {"type": "array", "items": s.obj(
        ["token", "logprob", "bytes"], _TOKEN)}})}, "refusal": s.NULL}))
_COMPLETION_LOGPROBS = s.nullable(s.obj(["tokens", "token_logprobs", "top_logprobs", "text_offset"], {
    "tokens": {"type": "array", "items": s.STRING}, "token_logprobs": {"type": "array", "items": {"type": "number"}},
    "top_logprobs": {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "number"}}},
    "text_offset": {"type": "array", "items": s.COUNT}}))
CHAT_COMPLETION = s.obj(["id", "object", "created", "model", "choices", "usage"], {
    **_ENVELOPE, "object": {"const": "chat.completion"}, "usage": USAGE, "choices": {"type": "array", "items": s.obj(
        ["index", "message", "finish_reason"], {
            "index": s.COUNT, "logprobs": _CHAT_LOGPROBS, "finish_reason": _FINISH,
            "message": s.obj(["role", "content"], {
                "role": {"const": "assistant"}, "content": {"type": ["string", "null"]}, "refusal": s.NULL,
                "tool_calls": {"type": "array", "items": _TOOL_CALL}})})}})
CHAT_CHUNK = s.obj(["id", "object", "created", "model", "choices"], {
    **_ENVELOPE, "object": {"const": "chat.completion.chunk"}, "usage": s.nullable(USAGE),
    "choices": {"type": "array", "items": s.obj(["index", "delta", "finish_reason"], {
        "index": s.COUNT, "logprobs": _CHAT_LOGPROBS, "finish_reason": {"anyOf": [_FINISH, s.NULL]},
        "delta": s.obj([], {"role": {"const": "assistant"}, "content": {"type": ["string", "null"]},
                            "tool_calls": {"type": "array", "items": {"allOf": [
                                _TOOL_CALL, s.obj(["index"], {"index": s.COUNT})]}}})})}},
    description="one event of a streamed chat completion (the last, with stream_options.include_usage, has "
                "no choices and the usage)")
COMPLETION = s.obj(["id", "object", "created", "model", "choices", "usage"], {
    **_ENVELOPE, "object": {"const": "text_completion"}, "usage": USAGE, "choices": {"type": "array", "items": s.obj(
        ["index", "text", "finish_reason"], {"index": s.COUNT, "text": s.STRING, "logprobs": _COMPLETION_LOGPROBS,
                                             "finish_reason": _FINISH})}})
COMPLETION_CHUNK = s.obj(["id", "object", "created", "model", "choices"], {
    **_ENVELOPE, "object": {"const": "text_completion"}, "usage": s.nullable(USAGE),
    "choices": {"type": "array", "items": s.obj(["index", "text", "finish_reason"], {
        "index": s.COUNT, "text": s.STRING, "logprobs": _COMPLETION_LOGPROBS,
        "finish_reason": {"anyOf": [_FINISH, s.NULL]}})}},
    description="one event of a streamed completion")
MODEL = s.obj(["id", "object", "created", "owned_by"], {
    "id": s.STRING, "object": {"const": "model"}, "created": s.INTEGER, "owned_by": s.STRING})
MODEL_LIST = s.obj(["object", "data"], {"object": {"const": "list"},
                                        "data": {"type": "array", "items": s.ref("Model")}})
STATUS = s.obj(["status", "version", "uptime_seconds", "loaded_models", "queue", "idle"], {
    "status": {"const": "ok"}, "version": s.STRING, "uptime_seconds": {"type": "number"},
    "loaded_models": {"type": "array"}, "registered_models": {"type": "array", "items": s.STRING},
    "devices": {"type": "array"}, "queue": {"type": "object"}, "idle": {"type": "object"},
    "connections": {"type": "object"}, "requests_served": s.INTEGER, "memory": {"type": "object"}})

_REASONS = {
    400: "invalid request (names the param)", 401: "a bearer key is required on TCP",
    403: "a local user outside the unix socket's group on TCP without a key, or a registry the daemon may not "
         "change", 404: "unknown model, id or URL",
    408: "the body did not arrive in time", 413: "body too large", 415: "unsupported Content-Encoding",
    426: "GET /v1/responses without 'Upgrade: websocket' (it opens the WebSocket mode)",
    429: "queue full (Retry-After)",
    503: "queue timeout, memory budget busy, conversation memory unavailable, or a model that cannot be loaded "
         "(the message says why and how to fix it)"}
_BODY = (400, 408, 413, 415)  # what reading and validating any body can answer
_MODEL = (404, 429, 503)  # what finding, loading and queueing for a model can answer
_MEMORY = (404, 503)  # what the conversation store can answer


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int, ollama: bool = False) -> dict[str, Any]:
    prefix = "Ollama" if ollama else ""
    return {str(status): {"$ref": f"#/components/responses/{prefix}{status}"}
            for status in sorted({401, 403, *statuses})}


def error_responses() -> dict[str, Any]:
    return {f"{prefix}{status}": _json(s.ref(f"{prefix or ''}Error"), reason)
            for status, reason in _REASONS.items() for prefix in ("", "Ollama")}


def _sse(chunk: str) -> dict[str, Any]:
    return {"itemSchema": s.ref(chunk)}


def _body(schema: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": s.ref(schema)}}}


def _op(summary: str, answer: dict[str, Any], *errors: int, body: dict[str, Any] | None = None,
        parameters: list[dict[str, Any]] | None = None, ollama: bool = False, tag: str = "OpenAI") -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "tags": [tag]}
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = body
    operation["responses"] = {"200": answer, **_errors(*errors, ollama=ollama)} if answer else _errors(
        *errors, ollama=ollama)
    return operation


def _generating(kind: str, answer: str, chunk: str, summary: str) -> dict[str, Any]:
    return {"post": _op(summary, {
        "description": "the answer; with stream: true, server-sent events ending in data: [DONE]",
        "content": {"application/json": {"schema": s.ref(answer)}, "text/event-stream": _sse(chunk)}},
        *_BODY, *_MODEL, body=_body(f"{kind.title()}Request"))}


def _path_id(name: str, pattern: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "pattern": pattern}}


CONVERSATION_ID = _path_id("conversation_id", "^conv_[0-9a-f]{32}$", "a conversation id")
RESPONSE_ID = _path_id("response_id", "^resp_[0-9a-f]{48}$", "a stored response's id")
MEMORY_ID = _path_id("id", "^(conv_[0-9a-f]{32}|resp_[0-9a-f]{48})$", "a conversation id, or a response id (its "
                                                                      "conversation)")
ITEM_ID = {"name": "item_id", "in": "path", "required": True, "description": "an item's id (msg_..., fc_..., ...)",
           "schema": {"type": "string", "minLength": 1}}


def _chat_request() -> dict[str, Any]:
    """Chat's schema, with the one rule its FIELDS cannot say: a required tool call takes no response_format."""
    schema = request_schema("chat")
    rule = schema["dependentSchemas"]["tool_choice"]["anyOf"][1]
    rule["properties"]["response_format"] = {"anyOf": [s.NULL, s.obj(["type"], {"type": {"const": "text"}})]}
    return schema


def openai_paths() -> dict[str, Any]:
    return {
        "/v1/chat/completions": _generating("chat", "ChatCompletion", "ChatCompletionChunk",
                                            "Chat completion (OpenAI)"),
        "/v1/completions": _generating("completion", "Completion", "CompletionChunk", "Text completion (OpenAI)"),
        "/v1/embeddings": {"post": _op(
            "Embeddings (OpenAI): registered GGUF embedding models and memory's sentence model",
            _json(s.ref("EmbeddingList"), "one vector per input"), *_BODY, *_MODEL, body=_body("EmbeddingRequest"))},
        "/v1/models": {"get": _op("Registered models", _json(s.ref("ModelList"), "models"))},
        "/v1/models/{model}": {"get": _op(
            "One registered model", _json(s.ref("Model"), "the model"), 404,
            parameters=[{"name": "model", "in": "path", "required": True, "schema": {"type": "string",
                                                                                     "minLength": 1}}])},
        "/v1/responses": {"get": {
            "summary": "The Responses API's WebSocket mode: send response.create messages (a POST body with "
                       "\"type\": \"response.create\"), get each response's events, one response at a time",
            "tags": ["Responses"], "responses": {
                "101": {"description": "switching to the WebSocket; the messages are described in the README"},
                **_errors(426)}}, "post": _op(
            "Create a response (OpenAI's Responses API), stateful through conversation memory", {
                "description": "the response, stored (store: true) before it is sent; with stream: true, "
                               "server-sent events named by their type, ending in data: [DONE]",
                "content": {"application/json": {"schema": s.ref("Response")},
                            "text/event-stream": {"itemSchema": s.sse_event(s.ref("ResponseStreamEvent"))}}},
            *_BODY, *_MODEL, body=_body("ResponsesRequest"), tag="Responses")},
        "/v1/responses/compact": {"post": _op(
            "The window memory would give the model for this history: a compaction item, then the verbatim items",
            _json(s.ref("Compaction"), "the compacted window; its items can be sent back as input"),
            *_BODY, *_MODEL, body=_body("CompactRequest"), tag="Responses")},
        "/v1/responses/{response_id}": {
            "get": _op("A stored response", _json(s.ref("Response"), "the response"), *_MEMORY,
                       parameters=[RESPONSE_ID], tag="Responses"),
            "delete": _op("Forget a stored response (its turns stay in their conversation)",
                          _json(s.ref("ResponseDeleted"), "deleted"), *_MEMORY, parameters=[RESPONSE_ID],
                          tag="Responses")},
        "/v1/responses/{response_id}/input_items": {"get": _op(
            "The input items of a stored response", _json(s.ref("ItemList"), "one page of items"), 400, *_MEMORY,
            parameters=[RESPONSE_ID, *s.LIST_QUERY], tag="Responses")},
        "/v1/conversations": {"post": _op(
            "Create a conversation", _json(s.ref("Conversation"), "the conversation"), *_BODY, 503,
            body=_body("ConversationCreate", required=False), tag="Conversations")},
        "/v1/conversations/{conversation_id}": {
            "get": _op("A conversation", _json(s.ref("Conversation"), "the conversation"), *_MEMORY,
                       parameters=[CONVERSATION_ID], tag="Conversations"),
            "post": _op("Replace a conversation's metadata", _json(s.ref("Conversation"), "the conversation"),
                        *_BODY, *_MEMORY, parameters=[CONVERSATION_ID], body=_body("ConversationUpdate"),
                        tag="Conversations"),
            "delete": _op("Forget a conversation for good (nothing stays on disk)",
                          _json(s.ref("ConversationDeleted"), "deleted"), *_MEMORY, parameters=[CONVERSATION_ID],
                          tag="Conversations")},
        "/v1/conversations/{conversation_id}/items": {
            "get": _op("A conversation's items", _json(s.ref("ItemList"), "one page of items"), 400, *_MEMORY,
                       parameters=[CONVERSATION_ID, *s.LIST_QUERY],
                       tag="Conversations"),
            "post": _op("Append items to a conversation", _json(s.ref("ItemList"), "the items added, oldest first"),
                        *_BODY, *_MEMORY, parameters=[CONVERSATION_ID], body=_body("ItemsCreate"),
                        tag="Conversations")},
        "/v1/conversations/{conversation_id}/items/{item_id}": {
            "get": _op("One item of a conversation", _json(s.ref("Item"), "the item"), 400, *_MEMORY,
                       parameters=[CONVERSATION_ID, ITEM_ID], tag="Conversations")},
        "/hoshikage/memory/{id}/context": {"get": _op(
            "What a response's model was given: verbatim turns, summary sentences, recalled passages, token counts",
            _json(s.ref("MemoryContext"), "the context report"), *_MEMORY, tag="Conversations",
            parameters=[_path_id("id", "^(conv_[0-9a-f]{32}|resp_[0-9a-f]{48})$",
                                 "a response id, or a conversation id (its latest response)")])},
        "/hoshikage/memory": {
            "get": _op("The caller's conversations (an admin's: everyone's); hoshikage memory list",
                       _json(s.ref("MemoryList"), "one entry per conversation"), 503, tag="Conversations"),
            "delete": _op("Forget every conversation of the caller (an admin: every one) for good",
                          _json(s.ref("MemoryForgotten"), "how many were forgotten"), 503, tag="Conversations")},
        "/hoshikage/memory/{id}": {
            "get": _op("A conversation's turns as text; hoshikage memory show",
                       _json(s.ref("MemoryConversation"), "the conversation and its turns"), *_MEMORY,
                       parameters=[MEMORY_ID], tag="Conversations"),
            "delete": _op("Forget a conversation (or a response's) for good; hoshikage memory forget",
                          _json(s.ref("ConversationDeleted"), "deleted"), *_MEMORY, parameters=[MEMORY_ID],
                          tag="Conversations")},
    }


def ollama_paths() -> dict[str, Any]:
    def post(summary: str, answer: dict[str, Any], schema: str, *errors: int) -> dict[str, Any]:
        return {"post": _op(summary, answer, *_BODY, *errors, body=_body(schema), ollama=True, tag="Ollama")}

    def streaming(summary: str, final: str, line: str, schema: str) -> dict[str, Any]:
        return post(summary, {
            "description": "the answer (stream: false, or a load/unload); else NDJSON lines, the last with done: "
                           "true, or an {\"error\"} line when generation fails after the first",
            "content": {"application/json": {"schema": s.ref(final)},
                        NDJSON: {"schema": {"type": "array", "items": s.ref(line)}, "itemSchema": s.ref(line)}}},
            schema, *_MODEL)

    refused = {"post": _op("Not supported: Hoshikage never downloads, builds or copies models (the message says "
                           "how to register one)", {}, 400, ollama=True, tag="Ollama")}
    return {
        "/": {"get": {"summary": "Whether the daemon is running (Ollama's probe)", "tags": ["Ollama"],
                      "responses": {"200": {"description": "a line of text", "content": {
                          "text/plain": {"schema": s.STRING}}}, **_errors()}}},
        "/api/version": {"get": _op("The daemon's version", _json(s.ref("OllamaVersion"), "the version"),
                                    ollama=True, tag="Ollama")},
        "/api/tags": {"get": _op("Registered models, in Ollama's shape", _json(s.ref("OllamaTags"), "models"),
                                 ollama=True, tag="Ollama")},
        "/api/ps": {"get": _op("Loaded models and when they are released", _json(s.ref("OllamaPs"), "models"),
                               ollama=True, tag="Ollama")},
        "/api/show": post("One model's details", _json(s.ref("OllamaShow"), "the model"), "OllamaModelRequest", 404),
        "/api/chat": streaming("Chat (Ollama)", "OllamaChat", "OllamaChatLine", "OllamaChatRequest"),
        "/api/generate": streaming("Generate (Ollama)", "OllamaGenerate", "OllamaGenerateLine",
                                   "OllamaGenerateRequest"),
        "/api/embed": post("Embeddings (Ollama)", _json(s.ref("OllamaEmbed"), "one vector per input"),
                           "OllamaEmbedRequest", *_MODEL),
        "/api/embeddings": post("One embedding (Ollama's older endpoint)",
                                _json(s.ref("OllamaEmbeddings"), "the vector"), "OllamaEmbeddingsRequest", *_MODEL),
        "/api/delete": {"delete": _op("Remove a model from the registry (its file too when the daemon imported it)",
                                      _json({"type": "object", "maxProperties": 0}, "removed"), *_BODY, 403, 404,
                                      body=_body("OllamaModelRequest"), ollama=True, tag="Ollama")},
        **{f"/api/{name}": refused for name in ("pull", "push", "create", "copy")},
    }


def status_paths() -> dict[str, Any]:
    return {
        "/v1/status": {"get": _op("What is loaded, queued and when it goes idle (never counts as use)",
                                  _json(s.ref("Status"), "status"), tag="Status")},
        "/health": {"get": {"summary": "Liveness (never needs a key)", "tags": ["Status"], "responses": {
            "200": _json(s.obj(["status"], {"status": {"const": "ok"}}), "alive")}}},
        "/openapi.json": {"get": _op("This document", _json({"type": "object"}, "the OpenAPI document"),
                                     tag="Status")},
    }


def components() -> dict[str, Any]:
    return {
        "ChatRequest": _chat_request(), "CompletionRequest": request_schema("completion"),
        "ChatCompletion": CHAT_COMPLETION, "ChatCompletionChunk": s.sse_event(
            {"anyOf": [s.ref("ChatCompletionChunkData"), s.ref("Error")]}),
        "ChatCompletionChunkData": CHAT_CHUNK, "Completion": COMPLETION,
        "CompletionChunk": s.sse_event({"anyOf": [s.ref("CompletionChunkData"), s.ref("Error")]}),
        "CompletionChunkData": COMPLETION_CHUNK, "Model": MODEL, "ModelList": MODEL_LIST, "Status": STATUS,
        "Error": s.ERROR, "EmbeddingRequest": embeddings.REQUEST_SCHEMA, "EmbeddingList": embeddings.RESPONSE_SCHEMA,
        "ResponsesRequest": s.RESPONSES_REQUEST, "Response": s.RESPONSE, "ResponseDeleted": s.RESPONSE_DELETED,
        "ResponseStreamEvent": s.RESPONSE_EVENT, "MessageItem": s.MESSAGE_ITEM,
        "FunctionCallItem": s.FUNCTION_CALL_ITEM, "FunctionCallOutputItem": s.FUNCTION_OUTPUT_ITEM,
        "CompactionItem": s.COMPACTION_ITEM, "Item": s.ITEM, "ItemList": s.ITEM_LIST,
        "CompactRequest": s.COMPACT_REQUEST,
        "Compaction": s.COMPACTION, "Conversation": s.CONVERSATION, "ConversationDeleted": s.CONVERSATION_DELETED,
        "ConversationCreate": s.CONVERSATION_CREATE, "ConversationUpdate": s.CONVERSATION_UPDATE,
        "ItemsCreate": s.ITEMS_CREATE, "MemoryContext": s.MEMORY_CONTEXT,
        "MemoryList": s.MEMORY_LIST, "MemoryConversation": s.MEMORY_CONVERSATION, "MemoryForgotten": s.MEMORY_FORGOTTEN,
        "OllamaError": s.OLLAMA_ERROR, "OllamaVersion": s.OLLAMA_VERSION, "OllamaTags": s.OLLAMA_TAGS,
        "OllamaPs": s.OLLAMA_PS, "OllamaShow": s.OLLAMA_SHOW, "OllamaModelRequest": s.OLLAMA_MODEL_REQUEST,
        "OllamaChatRequest": s.OLLAMA_CHAT_REQUEST, "OllamaChat": s.OLLAMA_CHAT, "OllamaChatLine": s.OLLAMA_CHAT_LINE,
        "OllamaGenerateRequest": s.OLLAMA_GENERATE_REQUEST, "OllamaGenerate": s.OLLAMA_GENERATE,
        "OllamaGenerateLine": s.OLLAMA_GENERATE_LINE, "OllamaEmbedRequest": s.OLLAMA_EMBED_REQUEST,
        "OllamaEmbed": s.OLLAMA_EMBED, "OllamaEmbeddingsRequest": s.OLLAMA_EMBEDDINGS_REQUEST,
        "OllamaEmbeddings": s.OLLAMA_EMBEDDINGS, **s.SHARED,
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.2 document."""
    return {
        "openapi": "3.2.0",
        "info": {"title": "Hoshikage", "version": __version__,
                 "description": "Local GGUF models behind an OpenAI-compatible API (with the Responses and "
                                "Conversations APIs on conversation memory) and Ollama's API, run by systemd. "
                                "Errors are OpenAI's {\"error\": {...}}; under /api/, Ollama's {\"error\": "
                                "\"message\"}. 500 means a bug."},
        "tags": [{"name": name} for name in ("OpenAI", "Responses", "Conversations", "Ollama", "Status")],
        "paths": {**openai_paths(), **ollama_paths(), **status_paths()},
        "components": {
            "schemas": components(), "responses": error_responses(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "required on TCP when api_key or api_keys is set "
                                                          "(except /health), and names the caller; never on the "
                                                          "unix socket, which knows the caller's uid"}},
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


async def serve_document(request: web.Request) -> web.Response:
    return web.Response(text=render(), content_type="application/json")


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", serve_document)
