"""Wire types: validate OpenAI request bodies into plain dataclasses, from declared schemas.

Every request field is declared once, in FIELDS, as the JSON Schema that
``GET /openapi.json`` publishes (api/openapi.py). Scalar fields are validated
by reading that very schema (type, bounds, default); the structured ones
(messages, prompt, stop, logit_bias, stream_options) have a parser next to
their schema, and schemathesis checks in the suite that every body the
document allows is accepted and every one it forbids is refused. Errors name
the offending ``param`` the way OpenAI does (``messages[2].content``).

Fields we do not know are ignored (and reported to the caller so it can log
them), because clients routinely send options meant for other servers; fields
we know but cannot honour yet are rejected unless they hold their neutral
value, since silently ignoring them would change what the client gets.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hoshikage.api.errors import invalid
from hoshikage.engine.sampling import SamplingParams

ROLES = ("system", "developer", "user", "assistant")
MAX_STOP_SEQUENCES = 4


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


TEXT_PART = {"type": "object", "required": ["type", "text"],
             "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
_CONTENT = {"anyOf": [{"type": "string"}, {"type": "array", "items": TEXT_PART}]}
MESSAGE = {"oneOf": [
    {"type": "object", "required": ["role", "content"],
     "properties": {"role": {"enum": ["system", "developer", "user"]}, "content": _CONTENT}},
    {"type": "object", "required": ["role"],
     "properties": {"role": {"const": "assistant"}, "content": {"anyOf": [*_CONTENT["anyOf"], {"type": "null"}]}}},
]}

FIELDS: dict[str, dict[str, Any]] = {
    "model": {"type": "string", "minLength": 1, "description": "a registered model's alias"},
    "messages": {"type": "array", "minItems": 1, "items": MESSAGE,
                 "description": "text only; developer is read as system"},
    "prompt": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1,
                                              "maxItems": 1},
                         {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}],
               "description": "one prompt: a string, or token ids"},
    "max_tokens": _nullable({"type": "integer", "minimum": 1}),
    "max_completion_tokens": _nullable({"type": "integer", "minimum": 1}),
    "temperature": _nullable({"type": "number", "minimum": 0, "maximum": 2, "default": 1.0}),
    "top_p": _nullable({"type": "number", "minimum": 0, "maximum": 1, "default": 1.0}),
    "presence_penalty": _nullable({"type": "number", "minimum": -2, "maximum": 2, "default": 0.0}),
    "frequency_penalty": _nullable({"type": "number", "minimum": -2, "maximum": 2, "default": 0.0}),
    "seed": _nullable({"type": "integer"}),
    "n": _nullable({"type": "integer", "minimum": 1, "default": 1,
                    "description": "at most the model's slots"}),
    "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                            "maxItems": MAX_STOP_SEQUENCES}, {"type": "null"}]},
    "stream": _nullable({"type": "boolean", "default": False}),
    "stream_options": {"anyOf": [{"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
                                 {"type": "null"}],
                       "description": "only with stream: true"},
    "user": _nullable({"type": "string"}),
    "logit_bias": {"anyOf": [{"type": "object", "propertyNames": {"pattern": "^[0-9]+$"},
                              "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}},
                             {"type": "null"}],
                   "description": "token id -> bias; ids must be in the model's vocabulary"},
    "top_k": _nullable({"type": "integer", "minimum": 0, "default": 0,
                        "description": "llama.cpp's extension: sample from the k likeliest tokens (0: all)"}),
    "min_p": _nullable({"type": "number", "minimum": 0, "maximum": 1, "default": 0.0,
                        "description": "llama.cpp's extension: drop tokens less likely than min_p x the likeliest"}),
    "repeat_penalty": _nullable({"type": "number", "exclusiveMinimum": 0, "maximum": 2, "default": 1.0,
                                 "description": "llama.cpp's extension: divide the logits of the last 64 "
                                                "tokens by it (1: off)"}),
    "ignore_eos": _nullable({"type": "boolean", "default": False,
                             "description": "llama-server's extension: generate to max_tokens, past "
                                            "end-of-generation tokens"}),
    "memory_overflow": {"type": ["string", "null"], "enum": ["off", "summarize", None],
                        "description": "Hoshikage's extension: a conversation longer than the context is refused "
                                       "(off) or compressed by memory's summary and recall (summarize); default: "
                                       "the daemon's memory_overflow setting"},
}
_COMMON = ("model", "max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty",
           "stream", "stream_options", "user", "n", "logit_bias", "ignore_eos", "top_k", "min_p", "repeat_penalty")
CHAT_FIELDS = (*_COMMON, "messages", "max_completion_tokens", "memory_overflow")
COMPLETION_FIELDS = (*_COMMON, "prompt")
REQUIRED = {"chat": ("model", "messages"), "completion": ("model", "prompt")}
# Known to OpenAI, not implemented here: only their neutral values are accepted.
NEUTRAL = {"logprobs": (None, False), "top_logprobs": (None, 0), "response_format": (None, {"type": "text"}),
           "echo": (None, False), "best_of": (None, 1), "tools": (None, []),
           "tool_choice": (None, "none", "auto"), "suffix": (None, ""), "functions": (None, []),
           "function_call": (None, "none", "auto"), "modalities": (None, ["text"]), "audio": (None,)}
UNSUPPORTED = frozenset(NEUTRAL)


def request_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a chat ("chat") or completion ("completion") request body, as validated here."""
    names = CHAT_FIELDS if kind == "chat" else COMPLETION_FIELDS
    properties = {name: FIELDS[name] for name in names}
    properties.update({name: {"enum": list(values), "description": "not supported: only this neutral value"}
                       for name, values in NEUTRAL.items()})
    return {"type": "object", "required": list(REQUIRED[kind]), "properties": properties,
            # OpenAI forbids stream_options without streaming; so do we.
            "dependentSchemas": {"stream_options": {"anyOf": [
                {"properties": {"stream_options": {"type": "null"}}},
                {"properties": {"stream": {"const": True}}, "required": ["stream"]}]}}}


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    model: str
    sampling: SamplingParams
    max_tokens: int | None
    n: int
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    user: str | None
    ignored_fields: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ChatRequest(GenerationRequest):
    messages: tuple[dict[str, str], ...]
    memory_overflow: str | None = None  # None: the daemon's setting


@dataclasses.dataclass(frozen=True)
class CompletionRequest(GenerationRequest):
    prompt: str | tuple[int, ...]


def parse_chat_request(body: Any) -> ChatRequest:
    body = _require_object(body)
    common = _parse_common(body, CHAT_FIELDS)
    max_tokens = scalar(body, "max_completion_tokens")
    if max_tokens is not None:
        common["max_tokens"] = max_tokens
    return ChatRequest(**common, messages=_parse_messages(body.get("messages")),
                       memory_overflow=scalar(body, "memory_overflow"))


def parse_completion_request(body: Any) -> CompletionRequest:
    body = _require_object(body)
    common = _parse_common(body, COMPLETION_FIELDS)
    return CompletionRequest(**common, prompt=_parse_prompt(body.get("prompt")))


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object")
    return body


def _parse_common(body: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    for name in UNSUPPORTED & body.keys():
        if body[name] not in NEUTRAL[name]:
            raise invalid(f"'{name}' is not supported by this server", param=name, code="unsupported_parameter")
    if body.get("model") is None:
        raise invalid("'model' is required and must be a non-empty string", param="model")
    stream = scalar(body, "stream")
    sampling = SamplingParams(
        temperature=scalar(body, "temperature"),
        top_p=scalar(body, "top_p"),
        presence_penalty=scalar(body, "presence_penalty"),
        frequency_penalty=scalar(body, "frequency_penalty"),
        top_k=scalar(body, "top_k"),
        min_p=scalar(body, "min_p"),
        repeat_penalty=scalar(body, "repeat_penalty"),
        seed=scalar(body, "seed"),
        logit_bias=_parse_logit_bias(body.get("logit_bias")),
        ignore_eos=scalar(body, "ignore_eos"),
    )
    return {
        "model": scalar(body, "model"),
        "sampling": sampling,
        "max_tokens": scalar(body, "max_tokens"),
        "n": scalar(body, "n"),  # at most the model's slots: checked when the model is known
        "stop": _parse_stop(body.get("stop")),
        "stream": stream,
        "include_usage": _parse_stream_options(body.get("stream_options"), stream),
        "user": scalar(body, "user"),
        "ignored_fields": tuple(sorted(body.keys() - set(known) - UNSUPPORTED)),
    }


def scalar(body: dict[str, Any], name: str) -> Any:
    """BODY[NAME] checked against FIELDS[NAME] (type, bounds, minLength); its default when absent."""
    schema = FIELDS[name]
    value = body.get(name)
    if value is None:
        return schema.get("default")
    kind = schema["type"][0] if isinstance(schema["type"], list) else schema["type"]
    if kind == "integer":
        # JSON has one number type: 3.0 is the integer 3 (JSON Schema agrees), 3.5 is not.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(f"'{name}' must be an integer", param=name)
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(f"'{name}' must be a number", param=name)
        value = float(value)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise invalid(f"'{name}' must be a boolean", param=name)
    elif not isinstance(value, str) or len(value) < schema.get("minLength", 0):
        required = " non-empty" if schema.get("minLength") else ""
        raise invalid(f"'{name}' must be a{required} string", param=name)
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(repr(choice) for choice in schema["enum"] if choice is not None)
        raise invalid(f"'{name}' must be one of {choices}; got {value!r}", param=name)
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None and not low <= value <= high:
        raise invalid(f"'{name}' must be between {low:g} and {high:g}, got {value}", param=name)
    if low is not None and value < low:
        raise invalid(f"'{name}' must be at least {low}, got {value}", param=name)
    above = schema.get("exclusiveMinimum")
    if above is not None and not (value > above and value <= schema.get("maximum", value)):
        raise invalid(f"'{name}' must be greater than {above:g} and at most {schema['maximum']:g}, got {value}",
                      param=name)
    return value


def _parse_stream_options(value: Any, stream: bool) -> bool:
    if value is None:
        return False
    if not stream:
        raise invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled",
                      param="stream_options")
    if not isinstance(value, dict):
        raise invalid("'stream_options' must be an object", param="stream_options")
    include_usage = value.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise invalid("'include_usage' must be a boolean", param="stream_options.include_usage")
    return include_usage


def _parse_logit_bias(value: Any) -> tuple[tuple[int, float], ...]:
    """OpenAI's {"token id": bias in [-100, 100]}; whether each id is in the vocabulary is checked later."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise invalid("'logit_bias' must be an object mapping token ids to numbers", param="logit_bias")
    biases = []
    for key, bias in value.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit()):
            raise invalid(f"'logit_bias' keys must be token ids (non-negative integers), got {key!r}",
                          param="logit_bias")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not -100 <= bias <= 100:
            raise invalid(f"'logit_bias[{key}]' must be a number between -100 and 100, got {bias!r}",
                          param="logit_bias")
        biases.append((int(key), float(bias)))
    return tuple(sorted(biases))


def _parse_stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise invalid("'stop' must be a string or a list of strings", param="stop")
    if len(items) > MAX_STOP_SEQUENCES:
        raise invalid(f"'stop' accepts at most {MAX_STOP_SEQUENCES} sequences", param="stop")
    return tuple(item for item in items if item)


def _parse_messages(value: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise invalid("'messages' must be a non-empty array", param="messages")
    messages = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid(f"'{where}' must be an object", param=where)
        role = message.get("role")
        if role not in ROLES:
            raise invalid(f"'{where}.role' must be one of {', '.join(ROLES)}; got {role!r}", param=f"{where}.role")
        content = _message_text(message.get("content"), f"{where}.content", allow_null=role == "assistant")
        messages.append({"role": "system" if role == "developer" else role, "content": content})
    return tuple(messages)


def _message_text(content: Any, where: str, *, allow_null: bool) -> str:
    if content is None and allow_null:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            part_where = f"{where}[{index}]"
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise invalid(f"Only text content parts are supported; '{part_where}' is {kind!r}",
                              param=part_where)
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"'{part_where}.text' must be a string", param=f"{part_where}.text")
            texts.append(text)
        return "".join(texts)
    raise invalid(f"'{where}' must be a string or an array of text parts", param=where)


def _parse_prompt(value: Any) -> str | tuple[int, ...]:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # token ids: 3.0 is the integer 3, as in scalar
        value = [int(item) if isinstance(item, float) and item.is_integer() else item for item in value]
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, list) and value and all(isinstance(item, int) and not isinstance(item, bool)
                                                 for item in value):
        if any(item < 0 for item in value):
            raise invalid("Token ids in 'prompt' must not be negative", param="prompt")
        return tuple(value)
    if isinstance(value, list) and len(value) > 1 and all(isinstance(item, str) for item in value):
        raise invalid("Only one prompt per request is supported", param="prompt",
                      code="unsupported_parameter")
    raise invalid("'prompt' must be a string or an array of token ids", param="prompt")
