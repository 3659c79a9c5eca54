"""The OpenAPI document of Hoshikage's own API, built from the schemas the code validates with.

Request bodies come from api/protocol.py's declared FIELDS, the same
schemas its validation reads, so the document cannot drift from what is
accepted; responses are described here, and schemathesis checks in the suite
that every answer matches them. Served at ``GET /openapi.json``;
``docs/openapi.json`` is the same text (render()), kept equal by a test.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from hoshikage import __version__
from hoshikage.api import embeddings
from hoshikage.api.protocol import request_schema

_NULL = {"type": "null"}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "param", "code"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
USAGE = {"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
         "properties": {name: {"type": "integer", "minimum": 0}
                        for name in ("prompt_tokens", "completion_tokens", "total_tokens")}}
_FINISH = {"enum": ["stop", "length"]}
_ENVELOPE = {"id": {"type": "string"}, "created": {"type": "integer"}, "model": {"type": "string"},
             "system_fingerprint": {"type": "string"}, "usage": USAGE}
CHAT_COMPLETION = {
    "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {**_ENVELOPE, "object": {"const": "chat.completion"}, "choices": {"type": "array", "items": {
        "type": "object", "required": ["index", "message", "finish_reason"],
        "properties": {"index": {"type": "integer"}, "logprobs": _NULL, "finish_reason": _FINISH,
                       "message": {"type": "object", "required": ["role", "content"],
                                   "properties": {"role": {"const": "assistant"}, "content": {"type": "string"},
                                                  "refusal": _NULL}}}}}}}
COMPLETION = {
    "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {**_ENVELOPE, "object": {"const": "text_completion"}, "choices": {"type": "array", "items": {
        "type": "object", "required": ["index", "text", "finish_reason"],
        "properties": {"index": {"type": "integer"}, "text": {"type": "string"}, "logprobs": _NULL,
                       "finish_reason": _FINISH}}}}}
MODEL = {"type": "object", "required": ["id", "object", "created", "owned_by"],
         "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                        "owned_by": {"type": "string"}}}
MODEL_LIST = {"type": "object", "required": ["object", "data"],
              "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": MODEL}}}
STATUS = {"type": "object", "required": ["status", "version", "uptime_seconds", "loaded_models", "queue", "idle"],
          "properties": {"status": {"const": "ok"}, "version": {"type": "string"},
                         "uptime_seconds": {"type": "number"}, "loaded_models": {"type": "array"},
                         "registered_models": {"type": "array", "items": {"type": "string"}},
                         "devices": {"type": "array"}, "queue": {"type": "object"}, "idle": {"type": "object"},
                         "connections": {"type": "object"},
                         "requests_served": {"type": "integer"}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {400: "invalid request (names the param)", 401: "a bearer key is required on TCP",
               404: "unknown model or URL", 413: "body too large", 415: "unsupported Content-Encoding",
               429: "queue full (Retry-After)", 503: "queue timeout, memory budget busy, or a model that cannot "
                                                      "be loaded (the message says why and how to fix it)"}
    return {**{str(status): _json({"$ref": "#/components/schemas/Error"}, reasons[status]) for status in statuses},
            "default": _json({"$ref": "#/components/schemas/Error"}, "any other error; 500 only for a bug")}


def _generating(kind: str, answer: str, summary: str) -> dict[str, Any]:
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{kind.title()}Request"}}}},
        "responses": {"200": {"description": "the answer; with stream: true, server-sent events ending in "
                                             "data: [DONE]",
                              "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{answer}"}},
                                          "text/event-stream": {"schema": {"type": "string"}}}},
                      **_errors(400, 401, 404, 413, 415, 429, 503)}}}


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Hoshikage", "version": __version__,
                 "description": "Local GGUF models behind an OpenAI-compatible API, run by systemd."},
        "paths": {
            "/v1/chat/completions": _generating("chat", "ChatCompletion", "Chat completion (OpenAI)"),
            "/v1/completions": _generating("completion", "Completion", "Text completion (OpenAI)"),
            "/v1/embeddings": {"post": {
                "summary": "Embeddings (OpenAI): registered GGUF embedding models and memory's sentence model",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/EmbeddingRequest"}}}},
                "responses": {"200": _json({"$ref": "#/components/schemas/EmbeddingList"}, "one vector per input"),
                              **_errors(400, 401, 404, 413, 415, 503)}}},
            "/v1/models": {"get": {"summary": "Registered models",
                                   "responses": {"200": _json({"$ref": "#/components/schemas/ModelList"}, "models"),
                                                 **_errors(401)}}},
            "/v1/models/{model}": {"get": {
                "summary": "One registered model",
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json({"$ref": "#/components/schemas/Model"}, "the model"), **_errors(401, 404)}}},
            "/v1/status": {"get": {"summary": "What is loaded, queued and when it goes idle (never counts as use)",
                                   "responses": {"200": _json({"$ref": "#/components/schemas/Status"}, "status"),
                                                 **_errors(401)}}},
            "/health": {"get": {"summary": "Liveness", "responses": {"200": _json(
                {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}, "alive"),
                **_errors(401)}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {
                "200": _json({"type": "object"}, "the OpenAPI document"), **_errors(401)}}},
        },
        "components": {
            "schemas": {"ChatRequest": request_schema("chat"), "CompletionRequest": request_schema("completion"),
                        "ChatCompletion": CHAT_COMPLETION, "Completion": COMPLETION, "Model": MODEL,
                        "ModelList": MODEL_LIST, "Status": STATUS, "Error": ERROR,
                        "EmbeddingRequest": embeddings.REQUEST_SCHEMA, "EmbeddingList": embeddings.RESPONSE_SCHEMA},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "required on TCP when api_key is set; never on the "
                                                          "unix socket"}},
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


async def serve_document(request: web.Request) -> web.Response:
    return web.Response(text=render(), content_type="application/json")


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", serve_document)
