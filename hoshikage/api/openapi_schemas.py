"""JSON Schemas of the newer surfaces for the OpenAPI document: Responses, Conversations, memory, Ollama.

Each request schema says what the handler's validation accepts (api/responses/protocol.py,
api/responses/conversations.py, api/responses/items.py, api/ollama/protocol.py), tightly enough that a body
the schema allows is accepted and one it forbids is refused; where the code accepts more (any JSON
Schema in ``text.format``, any keep_alive Go duration), the schema shows a subset that is always
accepted and the description says so. Response schemas are what the handlers return; streams
are described per item (OpenAPI 3.2's ``itemSchema``): an SSE event's JSON ``data`` through
``contentMediaType``/``contentSchema``, an NDJSON line as one object.
"""

from __future__ import annotations

from typing import Any

from hoshikage.api.openai.protocol import FIELDS, RESPONSE_SCHEMA
from hoshikage.api.responses.items import DEFAULT_PAGE, MAX_PAGE
from hoshikage.api.responses.protocol import INPUT_ROLES, LENGTH_CAUSES, MAX_METADATA_KEYS

NULL = {"type": "null"}
STRING = {"type": "string"}
INTEGER = {"type": "integer"}
COUNT = {"type": "integer", "minimum": 0}
NAME = {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, NULL]}


def obj(required: list[str], properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties, **extra}


# Errors -----------------------------------------------------------------------------

ERROR = obj(["error"], {"error": obj(["message", "type", "param", "code"], {
    "message": STRING, "type": STRING, "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}})})
OLLAMA_ERROR = obj(["error"], {"error": STRING}, description="Ollama's error shape, used for everything under /api/")


def sse_event(data: dict[str, Any], event: dict[str, Any] | None = None) -> dict[str, Any]:
    """One server-sent event whose data is JSON matching DATA, or the closing ``data: [DONE]``."""
    return obj(["data"], {
        "event": event or STRING, "id": STRING,
        "data": {"type": "string", "if": {"const": "[DONE]"},
                 "else": {"contentMediaType": "application/json", "contentSchema": data}}})


# Items (Responses input and output, conversation items) ---------------------------

_INPUT_PART = obj(["type", "text"], {"type": {"enum": ["input_text", "output_text", "text"]}, "text": STRING})
INPUT_ITEM = {"anyOf": [
    obj(["role", "content"], {"type": {"const": "message"}, "role": {"enum": list(INPUT_ROLES)},
                              "content": {"anyOf": [STRING, {"type": "array", "items": _INPUT_PART}]}},
        description="a message (type may be left out); developer is read as system"),
    obj(["type", "call_id", "name", "arguments"], {"type": {"const": "function_call"}, "call_id": STRING,
                                                   "name": STRING, "arguments": STRING}),
    obj(["type", "call_id", "output"], {"type": {"const": "function_call_output"}, "call_id": STRING,
                                        "output": STRING}),
    obj(["type", "encrypted_content"], {"type": {"const": "compaction"}, "encrypted_content": STRING},
        description="what /v1/responses/compact returns, read back as a memory note"),
], "description": "text only: images, files and item references are refused with a 400 naming the item"}
INPUT_ITEMS = {"type": "array", "minItems": 1, "items": ref("InputItem")}
INPUT = {"anyOf": [{"type": "string", "minLength": 1}, INPUT_ITEMS],
         "description": "a user message as a string, or a list of items"}

_STATUS = {"enum": ["completed", "incomplete", "in_progress"]}
OUTPUT_TEXT = obj(["type", "text", "annotations", "logprobs"], {
    "type": {"const": "output_text"}, "text": STRING, "annotations": {"type": "array"}, "logprobs": {"type": "array"}})
_MESSAGE_CONTENT = {"type": "array", "items": {"anyOf": [
    ref("OutputText"), obj(["type", "text"], {"type": {"const": "input_text"}, "text": STRING})]}}
MESSAGE_ITEM = obj(["id", "type", "status", "role", "content"], {
    "id": STRING, "type": {"const": "message"}, "status": _STATUS, "role": {"enum": list(INPUT_ROLES)},
    "content": _MESSAGE_CONTENT})
FUNCTION_CALL_ITEM = obj(["id", "type", "status", "call_id", "name", "arguments"], {
    "id": STRING, "type": {"const": "function_call"}, "status": _STATUS, "call_id": STRING, "name": STRING,
    "arguments": STRING})
FUNCTION_OUTPUT_ITEM = obj(["id", "type", "status", "call_id", "output"], {
    "id": STRING, "type": {"const": "function_call_output"}, "status": _STATUS, "call_id": STRING,
    "output": STRING})
COMPACTION_ITEM = obj(["id", "type", "encrypted_content"], {
    "id": STRING, "type": {"const": "compaction"}, "encrypted_content": STRING})
ITEM = {"anyOf": [ref("MessageItem"), ref("FunctionCallItem"), ref("FunctionCallOutputItem")]}
ITEM_LIST = obj(["object", "data", "first_id", "last_id", "has_more"], {
    "object": {"const": "list"}, "data": {"type": "array", "items": ITEM},
    "first_id": {"type": ["string", "null"]}, "last_id": {"type": ["string", "null"]}, "has_more": {"type": "boolean"}})

METADATA = {"type": "object", "maxProperties": MAX_METADATA_KEYS, "propertyNames": {"maxLength": 64},
            "additionalProperties": {"type": "string", "maxLength": 512},
            "description": f"at most {MAX_METADATA_KEYS} keys of at most 64 characters, string values of at most "
                           "512"}


LIST_QUERY = [  # OpenAI's list parameters (api/responses/items.py list_page)
    {"name": "limit", "in": "query", "required": False, "description": "items per page",
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE}},
    {"name": "order", "in": "query", "required": False, "description": "newest first (desc) or oldest first",
     "schema": {"enum": ["asc", "desc"], "default": "desc"}},
    {"name": "after", "in": "query", "required": False, "schema": STRING,
     "description": "an item id of this list: the page starts after it (400 when it names no item)"},
]


# Responses -------------------------------------------------------------------------

_TEXT_FORMAT = {"anyOf": [
    obj(["type"], {"type": {"enum": ["text", "json_object"]}}),
    obj(["type", "name"], {"type": {"const": "json_schema"}, "name": NAME, "description": STRING,
                           "strict": {"type": ["boolean", "null"]}, "schema": ref("JsonSchema")}),
    NULL], "description": "json_schema: output that validates against the schema, enforced by a grammar "
                          "(Chat Completions' response_format, flattened); keywords a grammar cannot enforce are "
                          "refused (400); this document shows a subset that is always accepted"}
_NO_GRAMMAR = nullable(obj([], {"format": nullable(obj(["type"], {"type": {"const": "text"}}))}))
_RESPONSES_TOOL = obj(["type", "name"], {"type": {"const": "function"}, "name": NAME, "description": STRING,
                                         "parameters": ref("JsonSchema"), "strict": {"type": ["boolean", "null"]}})
_SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "top_k", "min_p", "repeat_penalty",
             "seed", "stream", "parallel_tool_calls", "ignore_eos")
_IGNORED = {"include": {"type": "array", "items": STRING}, "service_tier": STRING, "prompt_cache_key": STRING,
            "prompt_cache_retention": STRING, "prompt_cache_options": {"type": "object"},
            "safety_identifier": STRING, "stream_options": {"type": "object"}, "user": STRING}
RESPONSES_REQUEST = {
    "type": "object", "required": ["model"],
    "properties": {
        "model": FIELDS["model"], "input": INPUT,
        "instructions": nullable({"type": "string", "minLength": 1}),
        "previous_response_id": nullable({"type": "string", "minLength": 1,
                                          "description": "continue the chain of this stored response"}),
        "conversation": {"anyOf": [{"type": "string", "minLength": 1}, obj(["id"], {"id": {"type": "string",
                                                                                           "minLength": 1}}),
                                   NULL], "description": "a conversation id (or {\"id\": ...}): its items are the "
                                                         "history, and this turn is appended to it"},
        "store": {"type": ["boolean", "null"], "default": True},
        "metadata": nullable(ref("Metadata")),
        "max_output_tokens": nullable({"type": "integer", "minimum": 1}),
        **{name: FIELDS[name] for name in _SAMPLING},
        "text": nullable(obj([], {"format": _TEXT_FORMAT})),
        "tools": nullable({"type": "array", "maxItems": 128, "items": _RESPONSES_TOOL}),
        "tool_choice": {"enum": ["none", "auto", "required", None],
                        "description": "or {\"type\": \"function\", \"name\": ...} naming one of 'tools'; required "
                                       "needs tools and no text.format grammar"},
        "truncation": {"enum": ["auto", "disabled", None], "description": "accepted; memory decides what fits"},
        "background": {"enum": [False, None], "description": "not supported: only this neutral value"},
        "top_logprobs": {"enum": [0, None], "description": "not supported: only this neutral value"},
        "max_tool_calls": {"type": "null", "description": "not supported: only this neutral value"},
        "prompt": {"type": "null", "description": "not supported: only this neutral value"},
        "reasoning": {"enum": [None, {}, {"effort": None}, {"effort": None, "summary": None}],
                      "description": "not supported: only these neutral values"},
        **{name: {**schema, "description": "accepted and ignored"} for name, schema in _IGNORED.items()},
    },
    # input, unless the history comes from previous_response_id or conversation (not both)
    "anyOf": [{"required": ["input"]},
              {"required": ["previous_response_id"], "properties": {"previous_response_id": STRING}},
              {"required": ["conversation"], "properties": {"conversation": {"not": NULL}}}],
    "dependentSchemas": {
        "previous_response_id": {"anyOf": [{"properties": {"previous_response_id": NULL}},
                                           {"properties": {"conversation": NULL}}]},
        "tool_choice": {"anyOf": [{"properties": {"tool_choice": {"enum": ["none", "auto", None]}}},
                                  {"required": ["tools"], "properties": {
                                      "tools": {"type": "array", "minItems": 1}, "text": _NO_GRAMMAR}}]}},
}

_USAGE = obj(["input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details", "total_tokens"], {
    "input_tokens": COUNT, "output_tokens": COUNT, "total_tokens": COUNT,
    "input_tokens_details": obj(["cached_tokens"], {"cached_tokens": COUNT, "cache_write_tokens": COUNT}),
    "output_tokens_details": obj(["reasoning_tokens"], {"reasoning_tokens": COUNT})})
_NUMBER_OR_NULL = {"type": ["number", "null"]}
RESPONSE = obj(
    ["id", "object", "created_at", "status", "error", "incomplete_details", "instructions", "model", "output",
     "previous_response_id", "conversation", "max_output_tokens", "parallel_tool_calls", "store", "temperature",
     "top_p", "text", "tool_choice", "tools", "truncation", "usage", "metadata"],
    {"id": STRING, "object": {"const": "response"}, "created_at": INTEGER,
     "completed_at": {"type": ["integer", "null"]},
     "status": {"enum": ["completed", "incomplete", "in_progress", "failed"]},
     "error": nullable(obj(["code", "message"], {"code": STRING, "message": STRING})),
     "incomplete_details": nullable(obj(["reason"], {"reason": STRING, "cause": {
         "enum": list(LENGTH_CAUSES),
         "description": "which limit ended an answer that ran out of room (reason max_output_tokens, as at "
                        "OpenAI): the request's, the daemon's default_max_tokens, or the model's context"}})),
     "instructions": {"type": ["string", "null"]}, "model": STRING,
     "output": {"type": "array", "items": {"anyOf": [ref("MessageItem"), ref("FunctionCallItem")]}},
     "previous_response_id": {"type": ["string", "null"]}, "conversation": nullable(obj(["id"], {"id": STRING})),
     "max_output_tokens": {"type": ["integer", "null"]}, "max_tool_calls": NULL,
     "parallel_tool_calls": {"type": "boolean"}, "reasoning": NULL, "store": {"type": "boolean"},
     "background": {"const": False}, "service_tier": STRING, "temperature": _NUMBER_OR_NULL,
     "top_p": _NUMBER_OR_NULL, "presence_penalty": _NUMBER_OR_NULL, "frequency_penalty": _NUMBER_OR_NULL,
     "top_logprobs": INTEGER, "text": obj(["format"], {"format": obj(["type"], {"type": STRING})}),
     "tool_choice": {"anyOf": [{"enum": ["none", "auto", "required"]},
                               obj(["type", "name"], {"type": {"const": "function"}, "name": STRING})]},
     "tools": {"type": "array", "items": obj(["type", "name", "parameters"], {
         "type": {"const": "function"}, "name": STRING, "description": {"type": ["string", "null"]},
         "parameters": {"type": "object"}})},
     "truncation": {"enum": ["auto", "disabled"]}, "usage": ref("ResponseUsage"),
     "metadata": {"type": "object", "additionalProperties": STRING},
     "safety_identifier": NULL, "prompt_cache_key": NULL})
RESPONSE_DELETED = obj(["id", "object", "deleted"], {"id": STRING, "object": {"const": "response.deleted"},
                                                     "deleted": {"const": True}})


def _event(kind: str | list[str], **fields: Any) -> dict[str, Any]:
    kinds = {"const": kind} if isinstance(kind, str) else {"enum": kind}
    return obj(["type", "sequence_number", *fields], {"type": kinds, "sequence_number": COUNT, **fields})


_PART_FIELDS = {"item_id": STRING, "output_index": COUNT, "content_index": COUNT}
RESPONSE_EVENT = {"anyOf": [
    _event(["response.created", "response.in_progress", "response.completed", "response.incomplete",
            "response.failed"], response=ref("Response")),
    _event(["response.output_item.added", "response.output_item.done"], output_index=COUNT,
           item={"anyOf": [ref("MessageItem"), ref("FunctionCallItem")]}),
    _event(["response.content_part.added", "response.content_part.done"], **_PART_FIELDS, part=ref("OutputText")),
    _event("response.output_text.delta", **_PART_FIELDS, delta=STRING, logprobs={"type": "array"}),
    _event("response.output_text.done", **_PART_FIELDS, text=STRING, logprobs={"type": "array"}),
    _event("response.function_call_arguments.delta", item_id=STRING, output_index=COUNT, delta=STRING),
    _event("response.function_call_arguments.done", item_id=STRING, output_index=COUNT, name=STRING,
           arguments=STRING),
], "description": "the data of one event of a streamed response; the SSE event name is its type"}

COMPACT_REQUEST = {
    "type": "object", "required": ["model"],
    "properties": {"model": FIELDS["model"], "input": INPUT, "instructions": {"type": ["string", "null"]},
                   "previous_response_id": nullable({"type": "string", "minLength": 1})},
    "anyOf": [{"required": ["input"]},
              {"required": ["previous_response_id"], "properties": {"previous_response_id": STRING}}],
}
COMPACTION = obj(["id", "object", "created_at", "output", "usage"], {
    "id": STRING, "object": {"const": "response.compaction"}, "created_at": INTEGER,
    "output": {"type": "array", "items": {"anyOf": [
        ref("CompactionItem"), ref("MessageItem"), ref("FunctionCallItem"), ref("FunctionCallOutputItem")]},
               "description": "a compaction item (memory's summary and recalled passages; empty when the history "
                              "fits whole), then the items kept verbatim"},
    "usage": ref("ResponseUsage")})

# Conversations and memory ---------------------------------------------------------

CONVERSATION = obj(["id", "object", "created_at", "metadata"], {
    "id": STRING, "object": {"const": "conversation"}, "created_at": INTEGER,
    "metadata": {"type": "object", "additionalProperties": STRING}})
CONVERSATION_DELETED = obj(["id", "object", "deleted"], {
    "id": STRING, "object": {"const": "conversation.deleted"}, "deleted": {"const": True}})
CONVERSATION_CREATE = obj([], {
    "metadata": nullable(ref("Metadata")),
    "items": {"anyOf": [STRING, {"type": "array", "items": ref("InputItem")}, NULL],
              "description": "initial items; a string is one user message"}},
    description="the body may be left out")
CONVERSATION_UPDATE = obj(["metadata"], {"metadata": nullable(ref("Metadata"))},
                          description="replaces the metadata (null: none)")
ITEMS_CREATE = obj(["items"], {"items": INPUT})
MEMORY_CONTEXT = obj(["object", "conversation_id", "response_id"], {
    "object": {"const": "hoshikage.memory.context"}, "conversation_id": STRING, "response_id": STRING,
    "compressed": {"type": "boolean"}, "budget_tokens": COUNT, "prompt_tokens": COUNT, "verbatim_turns": COUNT,
    "verbatim_positions": {"type": "array", "items": {"type": ["integer", "null"], "minimum": 0},
                           "description": "positions of the turns kept verbatim; null for the request's own input"},
    "summary_sentences": {"type": "array", "items": STRING}, "recalled_passages": {"type": "array", "items": STRING},
    "messages": {"type": "array", "items": obj(["role"], {"role": STRING})}},
    description="what the model was given: the report's fields are absent for a response stored without one")

_OWNER = {"type": "string", "description": "the identity that created it: uid:N, key:NAME or anonymous; empty for "
                                         "conversations stored before owners were recorded (the admins')"}
MEMORY_ENTRY = obj(["id", "owner", "turns", "responses", "last_used", "size", "origin"], {
    "id": STRING, "owner": _OWNER, "turns": COUNT, "responses": COUNT, "last_used": INTEGER,
    "size": {**COUNT, "description": "bytes of text"}, "origin": {"enum": ["responses", "conversations"]}})
MEMORY_LIST = obj(["object", "data"], {"object": {"const": "list"}, "data": {"type": "array", "items": MEMORY_ENTRY}},
                  description="the caller's conversations (an admin's: everyone's), most recently used first")
MEMORY_CONVERSATION = obj(["id", "object", "created_at", "metadata", "owner", "last_used", "turns"], {
    **CONVERSATION["properties"], "owner": _OWNER, "last_used": INTEGER,
    "turns": {"type": "array", "items": obj(["position", "role", "text"], {
        "position": COUNT, "role": STRING, "text": STRING})}})
MEMORY_FORGOTTEN = obj(["object", "forgotten"], {"object": {"const": "hoshikage.memory.forgotten"},
                                                 "forgotten": COUNT})

# Ollama -------------------------------------------------------------------------------

_OLLAMA_NAME = {"type": "string", "minLength": 1,
                "description": "a registered alias, also as name:tag with :latest"}
_KEEP_ALIVE = {"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^-?(\d+(\.\d+)?(h|m|s|ms))+$"}, NULL],
               "description": "how long the model stays loaded after this request: seconds, or a Go duration "
                              "(\"5m\", \"1h30m\"); 0 unloads it, negative keeps it while the daemon runs"}
_OPTION_NAMES = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "seed": "seed",
                 "repeat_penalty": "repeat_penalty", "presence_penalty": "presence_penalty",
                 "frequency_penalty": "frequency_penalty"}
_OPTIONS = nullable({"type": "object", "properties": {
    **{name: FIELDS[field] for name, field in _OPTION_NAMES.items()},
    "num_predict": {"type": "integer", "description": "tokens to generate at most; -1 and -2: up to the context"},
    "stop": {"anyOf": [STRING, {"type": "array", "items": STRING}]}},
    "description": "sampling options; runner options (num_ctx, num_gpu, ...) are the registry's and the "
                   "daemon's, and are ignored"})
_FORMAT = {"anyOf": [{"enum": ["json", ""]}, ref("JsonSchema"), NULL],
           "description": "\"json\", or a JSON schema the answer follows (enforced by a grammar; this document "
                          "shows a subset that is always accepted)"}
_OLLAMA_MODEL = {"anyOf": [{"required": ["model"], "properties": {"model": _OLLAMA_NAME}},
                           {"required": ["name"], "properties": {"model": {"enum": ["", None]},
                                                                "name": _OLLAMA_NAME}}]}
_GENERATING = {"format": _FORMAT, "options": ref("OllamaOptions"),
               "stream": {"type": ["boolean", "null"], "default": True}, "keep_alive": ref("OllamaKeepAlive"),
               "think": {"enum": [False, None], "description": "not supported"}}
_OLLAMA_TOOL_CALL = obj(["function"], {"function": obj(["name"], {"name": STRING, "arguments": {
    "anyOf": [{"type": "object"}, STRING]}})})
_OLLAMA_MESSAGE = {"anyOf": [
    obj(["role", "content"], {"role": {"enum": ["system", "developer", "user", "tool"]},
                              "content": STRING, "tool_name": STRING, "images": {"type": "array", "maxItems": 0}}),
    obj(["role"], {"role": {"const": "assistant"}, "content": {"type": ["string", "null"]},
                   "tool_calls": {"type": "array", "items": _OLLAMA_TOOL_CALL},
                   "images": {"type": "array", "maxItems": 0}})],
    "description": "text only: images are refused"}
OLLAMA_CHAT_REQUEST = {
    "type": "object", "properties": {
        "model": _OLLAMA_NAME, "name": _OLLAMA_NAME,
        "messages": {"type": "array", "items": _OLLAMA_MESSAGE,
                     "description": "left out or empty: load the model (unload with keep_alive 0)"},
        "tools": {"type": "array", "maxItems": 128, "items": obj(["type", "function"], {
            "type": {"const": "function"}, "function": obj(["name"], {
                "name": NAME, "description": STRING, "parameters": ref("JsonSchema")})})},
        **_GENERATING},
    **_OLLAMA_MODEL}
OLLAMA_GENERATE_REQUEST = {
    "type": "object", "properties": {
        "model": _OLLAMA_NAME, "name": _OLLAMA_NAME,
        "prompt": {"type": ["string", "null"], "description": "left out or empty: load the model (unload with "
                                                               "keep_alive 0)"},
        "system": {"type": ["string", "null"]}, "raw": {"type": ["boolean", "null"],
                                                        "description": "the prompt as written, no chat template"},
        **{name: {"enum": ["", None], "description": "not supported"}
           for name in ("suffix", "template")},
        "context": {"anyOf": [{"type": "array", "maxItems": 0}, NULL], "description": "not supported"},
        "images": {"anyOf": [{"type": "array", "maxItems": 0}, NULL], "description": "not supported"},
        **_GENERATING},
    **_OLLAMA_MODEL}
_DURATIONS = {name: {"type": "integer", "minimum": 0, "description": "nanoseconds"}
              for name in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")}
_COUNTS = {"prompt_eval_count": COUNT, "eval_count": COUNT}
_OLLAMA_ANSWER = obj(["role", "content"], {"role": {"const": "assistant"}, "content": STRING,
                                           "tool_calls": {"type": "array", "items": _OLLAMA_TOOL_CALL}})


def _ollama_final(text_field: str, text_schema: dict[str, Any]) -> dict[str, Any]:
    return obj(["model", "created_at", text_field, "done", "done_reason"], {
        "model": STRING, "created_at": STRING, text_field: text_schema, "done": {"const": True},
        "done_reason": {"enum": ["stop", "length", "load", "unload"]}, **_DURATIONS, **_COUNTS},
        description="the answer (stream: false), the last line of a stream, or the answer to a load or unload")


def _ollama_line(text_field: str, text_schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [
        obj(["model", "created_at", text_field, "done"], {"model": STRING, "created_at": STRING,
                                                          text_field: text_schema, "done": {"const": False}}),
        _ollama_final(text_field, text_schema), ref("OllamaError")]}


OLLAMA_CHAT = _ollama_final("message", _OLLAMA_ANSWER)
OLLAMA_CHAT_LINE = _ollama_line("message", _OLLAMA_ANSWER)
OLLAMA_GENERATE = _ollama_final("response", STRING)
OLLAMA_GENERATE_LINE = _ollama_line("response", STRING)
OLLAMA_EMBED_REQUEST = {
    "type": "object", "properties": {
        "model": _OLLAMA_NAME, "name": _OLLAMA_NAME,
        "input": {"anyOf": [{"type": "string", "minLength": 1},
                            {"type": "array", "maxItems": 2048, "items": {"type": "string", "minLength": 1}}, NULL],
                  "description": "a text or texts (empty: no vectors)"},
        "truncate": {"type": "boolean", "default": True,
                     "description": "cut inputs longer than the context (false: 400)"},
        "dimensions": {"type": ["integer", "null"], "minimum": 1,
                       "description": "keep this many leading components (renormalised); at most the model's size"},
        "keep_alive": ref("OllamaKeepAlive")},
    **_OLLAMA_MODEL}
OLLAMA_EMBED = obj(["model", "embeddings"], {
    "model": STRING, "embeddings": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
    **{name: _DURATIONS[name] for name in ("total_duration", "load_duration")},
    "prompt_eval_count": COUNT})
OLLAMA_EMBEDDINGS_REQUEST = {
    "type": "object", "properties": {"model": _OLLAMA_NAME, "name": _OLLAMA_NAME,
                                     "prompt": {"type": ["string", "null"], "description": "empty: no vector"},
                                     "keep_alive": ref("OllamaKeepAlive")},
    **_OLLAMA_MODEL}
OLLAMA_EMBEDDINGS = obj(["embedding"], {"embedding": {"type": "array", "items": {"type": "number"}}})
OLLAMA_MODEL_REQUEST = {"type": "object", "properties": {"model": _OLLAMA_NAME, "name": _OLLAMA_NAME,
                                                         "verbose": {"type": "boolean"}},
                        **_OLLAMA_MODEL}
_DETAILS = obj(["format", "family", "parameter_size", "quantization_level"], {
    "parent_model": STRING, "format": STRING, "family": STRING,
    "families": {"anyOf": [{"type": "array", "items": STRING}, NULL]}, "parameter_size": STRING,
    "quantization_level": STRING})
OLLAMA_TAGS = obj(["models"], {"models": {"type": "array", "items": obj(
    ["name", "model", "modified_at", "size", "digest", "details"], {
        "name": STRING, "model": STRING, "modified_at": STRING, "size": COUNT, "digest": STRING,
        "details": ref("OllamaDetails")})}})
OLLAMA_PS = obj(["models"], {"models": {"type": "array", "items": obj(
    ["name", "model", "size", "digest", "details", "expires_at", "size_vram"], {
        "name": STRING, "model": STRING, "size": COUNT, "digest": STRING, "details": ref("OllamaDetails"),
        "expires_at": STRING, "size_vram": COUNT, "context_length": COUNT})}})
OLLAMA_SHOW = obj(["modelfile", "parameters", "template", "details", "model_info", "capabilities"], {
    "license": STRING, "modelfile": STRING, "parameters": STRING, "template": STRING, "details": ref("OllamaDetails"),
    "model_info": {"type": "object"}, "capabilities": {"type": "array", "items": {
        "enum": ["completion", "tools", "embedding"]}}, "modified_at": STRING})
OLLAMA_VERSION = obj(["version"], {"version": STRING})

# Shared pieces, referenced by name from the schemas above.
SHARED = {"JsonSchema": RESPONSE_SCHEMA, "InputItem": INPUT_ITEM, "Metadata": METADATA, "ResponseUsage": _USAGE,
          "OutputText": OUTPUT_TEXT, "OllamaDetails": _DETAILS, "OllamaKeepAlive": _KEEP_ALIVE,
          "OllamaOptions": _OPTIONS}
