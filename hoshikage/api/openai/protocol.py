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

from hoshikage.api.http.errors import invalid
from hoshikage.engine.sampling import SamplingParams

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOP_SEQUENCES = 4


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


# A JSON Schema that is always enforceable: an object of typed, optionally enumerated properties.
# (Much more is accepted: see engine/structured.py; this is what the API document promises.)
_PROPERTY = {"type": "object", "additionalProperties": False, "required": ["type"], "properties": {
    "type": {"enum": ["string", "integer", "boolean", "null"]}, "description": {"type": "string"}}}
RESPONSE_SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
    "type": {"const": "object"},
    "properties": {"type": "object", "additionalProperties": _PROPERTY, "maxProperties": 8},
    "additionalProperties": {"const": False}}}

TEXT_PART = {"type": "object", "required": ["type", "text"],
             "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
_CONTENT = {"anyOf": [{"type": "string"}, {"type": "array", "items": TEXT_PART}]}
_TOOL_CALL = {"type": "object", "required": ["id", "type", "function"], "properties": {
    "id": {"type": "string"}, "type": {"const": "function"},
    "function": {"type": "object", "required": ["name", "arguments"],
                 "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}}}}}
MESSAGE = {"oneOf": [
    {"type": "object", "required": ["role", "content"],
     "properties": {"role": {"enum": ["system", "developer", "user"]}, "content": _CONTENT}},
    {"type": "object", "required": ["role"],
     "properties": {"role": {"const": "assistant"}, "content": {"anyOf": [*_CONTENT["anyOf"], {"type": "null"}]},
                    "tool_calls": {"type": "array", "items": _TOOL_CALL}}},
    {"type": "object", "required": ["role", "content", "tool_call_id"],
     "properties": {"role": {"const": "tool"}, "content": _CONTENT,
                    "tool_call_id": {"type": "string", "minLength": 1}}},
]}
_FUNCTION = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"}, "description": {"type": "string"},
    "parameters": RESPONSE_SCHEMA, "strict": {"type": ["boolean", "null"]}}}

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
    "response_format": {"anyOf": [
        {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["text", "json_object"]}}},
        {"type": "object", "required": ["type", "json_schema"], "properties": {
            "type": {"const": "json_schema"},
            "json_schema": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                "description": {"type": "string"}, "strict": {"type": ["boolean", "null"]},
                "schema": RESPONSE_SCHEMA}}}},
        {"type": "null"}],
        "description": "json_object: one JSON object; json_schema: output that validates against the schema, "
                       "enforced by a grammar. Keywords a grammar cannot enforce are refused (400); this document "
                       "shows a subset that is always accepted"},
    "logprobs": _nullable({"type": "boolean", "default": False,
                           "description": "each output token's log probability (raw model distribution)"}),
    "top_logprobs": _nullable({"type": "integer", "minimum": 0, "maximum": 20,
                               "description": "alternatives per token; needs logprobs: true"}),
    "tools": {"anyOf": [{"type": "array", "maxItems": 128, "items": {
        "type": "object", "required": ["type", "function"],
        "properties": {"type": {"const": "function"}, "function": _FUNCTION}}}, {"type": "null"}],
        "description": "functions the model may call; their parameters are enforced by a grammar when a call "
                       "is required"},
    # Also {"type": "function", "function": {"name": N}} with N among the tools, which a schema cannot say.
    "tool_choice": {"enum": ["none", "auto", "required", None],
                    "description": "or {\"type\": \"function\", \"function\": {\"name\": ...}} naming one of "
                                   "'tools'; required and a named function need tools"},
    "parallel_tool_calls": _nullable({"type": "boolean", "default": True}),
    "memory_overflow": {"type": ["string", "null"], "enum": ["off", "summarize", None],
                        "description": "Hoshikage's extension: a conversation longer than the context is refused "
                                       "(off) or compressed by memory's summary and recall (summarize); default: "
                                       "the daemon's memory_overflow setting"},
}
_COMMON = ("model", "max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty",
           "stream", "stream_options", "user", "n", "logit_bias", "ignore_eos", "top_k", "min_p", "repeat_penalty",
           "response_format")
CHAT_FIELDS = (*_COMMON, "messages", "max_completion_tokens", "memory_overflow", "logprobs", "top_logprobs",
               "tools", "tool_choice", "parallel_tool_calls")
COMPLETION_FIELDS = (*_COMMON, "prompt", "logprobs")
# Completions' logprobs is a count, not a flag (OpenAI's legacy shape).
COMPLETION_SCHEMAS = {"logprobs": _nullable({"type": "integer", "minimum": 0, "maximum": 5,
                                             "description": "log probabilities of each token and this many "
                                                            "alternatives"})}
REQUIRED = {"chat": ("model", "messages"), "completion": ("model", "prompt")}
# Known to OpenAI, not implemented here: only their neutral values are accepted.
NEUTRAL = {"echo": (None, False), "best_of": (None, 1), "suffix": (None, ""), "functions": (None, []),
           "function_call": (None, "none", "auto"), "modalities": (None, ["text"]), "audio": (None,)}
UNSUPPORTED = frozenset(NEUTRAL)


def request_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a chat ("chat") or completion ("completion") request body, as validated here."""
    names = CHAT_FIELDS if kind == "chat" else COMPLETION_FIELDS
    properties = {name: FIELDS[name] for name in names}
    if kind == "completion":
        properties.update(COMPLETION_SCHEMAS)
    properties.update({name: {"enum": list(values), "description": "not supported: only this neutral value"}
                       for name, values in NEUTRAL.items()})
    dependent = {  # OpenAI forbids stream_options without streaming; so do we.
        "stream_options": {"anyOf": [{"properties": {"stream_options": {"type": "null"}}},
                                     {"properties": {"stream": {"const": True}}, "required": ["stream"]}]}}
    if kind == "chat":
        dependent["tool_choice"] = {"anyOf": [{"properties": {"tool_choice": {"enum": ["none", "auto", None]}}},
                                              {"properties": {"tools": {"type": "array", "minItems": 1}},
                                               "required": ["tools"]}]}
        dependent["top_logprobs"] = {"anyOf": [{"properties": {"top_logprobs": {"enum": [None, 0]}}},
                                               {"properties": {"logprobs": {"const": True}}, "required": ["logprobs"]}]}
    return {"type": "object", "required": list(REQUIRED[kind]), "properties": properties,
            "dependentSchemas": dependent}


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
    tools: tuple = ()  # engine.tools.Tool
    tool_choice: str = "auto"  # none, auto, required, or "function:NAME"
    parallel_tool_calls: bool = True

    @property
    def calls_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def forced_call(self) -> bool:
        return bool(self.tools) and (self.tool_choice == "required" or self.tool_choice.startswith("function:"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChatRequest(GenerationRequest):
    messages: tuple[dict[str, Any], ...]
    memory_overflow: str | None = None  # None: the daemon's setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompletionRequest(GenerationRequest):
    prompt: str | tuple[int, ...]


def parse_chat_request(body: Any) -> ChatRequest:
    body = _require_object(body)
    common = _parse_common(body, CHAT_FIELDS)
    top = scalar(body, "top_logprobs")
    if scalar(body, "logprobs"):
        common["sampling"] = dataclasses.replace(common["sampling"], logprobs=top or 0)
    elif top:
        raise invalid("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    max_tokens = scalar(body, "max_completion_tokens")
    if max_tokens is not None:
        common["max_tokens"] = max_tokens
    common.update(parse_tools(body, common["sampling"]))
    return ChatRequest(**common, messages=_parse_messages(body.get("messages")),
                       memory_overflow=scalar(body, "memory_overflow"))


def parse_tools(body: dict[str, Any], sampling: SamplingParams) -> dict[str, Any]:
    """tools, tool_choice (none/auto/required/function:NAME), parallel_tool_calls, and the sampling with the
    grammar of a forced call (Chat Completions' shapes; the Responses API converts to them)."""
    tools, choice, parallel = _parse_tools(body)
    if choice == "required" or choice.startswith("function:"):
        if sampling.grammar is not None:
            raise invalid("A required tool call and 'response_format' cannot be combined", param="tool_choice")
        chosen = [tool for tool in tools if choice == "required" or f"function:{tool.name}" == choice]
        sampling = dataclasses.replace(sampling, grammar=_forced_call_grammar(chosen, parallel))
    return {"tools": tools, "tool_choice": choice, "parallel_tool_calls": parallel, "sampling": sampling}


def _parse_tools(body: dict[str, Any]) -> tuple[tuple, str, bool]:
    """(tools, tool_choice as none/auto/required/function:NAME, parallel_tool_calls)."""
    from hoshikage.engine.structured import SchemaNotSupported, json_schema_grammar
    from hoshikage.engine.tools import Tool

    value = body.get("tools")
    if value is not None and not isinstance(value, list):
        raise invalid("'tools' must be an array of functions", param="tools")
    tools = []
    for index, entry in enumerate(value or []):
        where = f"tools[{index}]"
        function = entry.get("function") if isinstance(entry, dict) and entry.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise invalid(f"'{where}' must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}",
                          param=where)
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        try:
            json_schema_grammar(parameters)  # what cannot be enforced is refused up front
        except SchemaNotSupported as error:
            raise invalid(f"'{where}.function.parameters': {error}", param=f"{where}.function.parameters",
                          code="unsupported_schema") from None
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise invalid(f"'{where}.function.description' must be a string", param=f"{where}.function.description")
        strict = function.get("strict")
        tools.append(Tool(function["name"], description, parameters, strict if isinstance(strict, bool) else None))
    choice = body.get("tool_choice")
    if choice is None:
        choice = "auto"
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if not any(tool.name == name for tool in tools):
            raise invalid(f"'tool_choice' names the function {name!r}, which is not among 'tools'",
                          param="tool_choice")
        choice = f"function:{name}"
    elif choice not in ("none", "auto", "required"):
        raise invalid("'tool_choice' must be none, auto, required or {\"type\": \"function\", ...}",
                      param="tool_choice")
    if choice == "required" and not tools:
        raise invalid("'tool_choice' is required but no 'tools' are given", param="tool_choice")
    parallel = scalar(body, "parallel_tool_calls")
    return tuple(tools), choice, parallel


def _forced_call_grammar(tools, parallel: bool) -> str:
    from hoshikage.engine.structured import json_schema_grammar
    from hoshikage.engine.tools import forced_call_schema

    return json_schema_grammar(forced_call_schema(list(tools), parallel))


def parse_completion_request(body: Any) -> CompletionRequest:
    body = _require_object(body)
    common = _parse_common(body, COMPLETION_FIELDS)
    count = scalar(body, "logprobs", COMPLETION_SCHEMAS["logprobs"])
    if count is not None:
        common["sampling"] = dataclasses.replace(common["sampling"], logprobs=count)
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
        grammar=parse_response_format(body.get("response_format")),
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


def whole_number(value: Any) -> int | None:
    """VALUE as an integer when it is one; JSON has one number type, so 3.0 is the integer 3 (JSON Schema agrees)
    and 3.5, true or "3" are not: None."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def scalar(body: dict[str, Any], name: str, schema: dict[str, Any] | None = None) -> Any:
    """BODY[NAME] checked against SCHEMA, by default FIELDS[NAME] (type, bounds, minLength); its default when
    absent."""
    schema = schema or FIELDS[name]
    value = body.get(name)
    if value is None:
        return schema.get("default")
    kind = schema["type"][0] if isinstance(schema["type"], list) else schema["type"]
    if kind == "integer":
        value = whole_number(value)
        if value is None:
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


def parse_response_format(value: Any) -> str | None:
    """The grammar RESPONSE_FORMAT asks for (None: plain text); a 400 naming it when it cannot be enforced."""
    from hoshikage.engine.structured import SchemaNotSupported, json_object_grammar, json_schema_grammar

    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return json_object_grammar()
    if kind != "json_schema":
        raise invalid("'response_format' must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or "
                      "{\"type\": \"json_schema\", \"json_schema\": {...}}", param="response_format")
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise invalid("'response_format.json_schema' must be an object with a 'name' and a 'schema'",
                      param="response_format.json_schema")
    try:
        return json_schema_grammar(spec.get("schema", {}))
    except SchemaNotSupported as error:
        raise invalid(f"'response_format': {error}", param="response_format", code="unsupported_schema") from None


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
        parsed: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": content}
        if role == "assistant" and message.get("tool_calls") is not None:
            parsed["tool_calls"] = _parse_tool_calls(message["tool_calls"], f"{where}.tool_calls")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise invalid(f"'{where}.tool_call_id' is required for a tool message", param=f"{where}.tool_call_id")
            parsed["tool_call_id"] = call_id
        messages.append(parsed)
    return tuple(messages)


def _parse_tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise invalid(f"'{where}' must be an array", param=where)
    calls = []
    for index, call in enumerate(value):
        function = call.get("function") if isinstance(call, dict) else None
        if (not isinstance(function, dict) or not isinstance(function.get("name"), str)
                or not isinstance(function.get("arguments"), str) or not isinstance(call.get("id"), str)):
            raise invalid(f"'{where}[{index}]' must be {{\"id\", \"type\": \"function\", \"function\": "
                          "{\"name\", \"arguments\": JSON text}}", param=f"{where}[{index}]")
        calls.append({"id": call["id"], "type": "function",
                      "function": {"name": function["name"], "arguments": function["arguments"]}})
    return calls


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
