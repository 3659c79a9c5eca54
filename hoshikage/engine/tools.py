"""Function calling: how tools reach the prompt, how a forced call is constrained, how calls are read back.

Prompt: a model's own Jinja template gets ``tools`` and the tool-call history
as templates expect them. The built-in formats (gemma, chatml, llama-3, for
models without a template) get the Hermes convention most small models were
tuned on: the tools as JSON in a system preamble, calls as
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, results as
``<tool_response>...</tool_response>``.

Forced calls (tool_choice "required" or a named function) are decoded under a
grammar: a JSON object ``{"name": <one of the tools>, "arguments": <its
parameters' schema>}``, or, when parallel calls are allowed among several
tools, an array of one to that many of them. The arguments therefore always
parse and validate.

Free calls (tool_choice "auto") are read from the model's own syntax, by
family: Hermes/Qwen ``<tool_call>{json}</tool_call>``, Llama 3.x
``{"name": ..., "parameters": {...}}`` (optionally after ``<|python_tag|>``),
Mistral ``[TOOL_CALLS][{...}]`` and ``[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}`` (the id
optional). Text
that holds no call is content.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from typing import Any

HERMES = "hermes"
LLAMA3 = "llama3"
MISTRAL = "mistral"
JSON_CALLS = "json"  # the constrained form


@dataclasses.dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    strict: bool | None = None  # as the request said (echoed by the Responses API)

    def as_openai(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclasses.dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    id: str = dataclasses.field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])


def family_of(template: str | None) -> str:
    """Which syntax a model's template teaches (the built-in formats teach Hermes's)."""
    if not template:
        return HERMES
    if "[TOOL_CALLS]" in template:
        return MISTRAL
    if "<tool_call>" in template:
        return HERMES
    if "<|python_tag|>" in template or "ipython" in template:
        return LLAMA3
    return HERMES


# Prompt (built-in formats) -------------------------------------------------------

def hermes_preamble(tools: list[Tool]) -> str:
    listed = "\n".join(json.dumps(tool.as_openai(), ensure_ascii=False) for tool in tools)
    return ("You may call one or more functions to answer. The functions are:\n<tools>\n" + listed
            + "\n</tools>\nTo call a function, answer with one line per call:\n"
            '<tool_call>{"name": "function name", "arguments": {...}}</tool_call>')


def hermes_messages(messages: list[dict[str, Any]], tools: list[Tool]) -> list[dict[str, str]]:
    """Plain role/content messages carrying tools, calls and results the Hermes way."""
    rendered: list[dict[str, str]] = []
    if tools:
        preamble = hermes_preamble(tools)
        if messages and messages[0]["role"] == "system":
            rendered.append({"role": "system", "content": f"{messages[0]['content']}\n\n{preamble}"})
            messages = messages[1:]
        else:
            rendered.append({"role": "system", "content": preamble})
    for message in messages:
        if message["role"] == "assistant" and message.get("tool_calls"):
            calls = "\n".join(
                "<tool_call>" + json.dumps({"name": call["function"]["name"],
                                            "arguments": _arguments_object(call["function"]["arguments"])},
                                           ensure_ascii=False) + "</tool_call>"
                for call in message["tool_calls"])
            content = f"{message['content']}\n{calls}" if message.get("content") else calls
            rendered.append({"role": "assistant", "content": content})
        elif message["role"] == "tool":
            rendered.append({"role": "user", "content": f"<tool_response>\n{message['content']}\n</tool_response>"})
        else:
            rendered.append({"role": message["role"], "content": message["content"]})
    return rendered


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: tool-call arguments as objects, not JSON text."""
    shaped = []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {**call, "function": {**call["function"], "arguments": _arguments_object(call["function"]["arguments"])}}
                for call in message["tool_calls"]]
        shaped.append(message)
    return shaped


def _arguments_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


# Forced calls -------------------------------------------------------------------

def forced_call_schema(tools: list[Tool], parallel: bool) -> dict[str, Any]:
    """The JSON Schema a forced tool call is decoded under (see the module's docstring)."""
    options = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                "properties": {"name": {"const": tool.name}, "arguments": tool.parameters or {"type": "object"}}}
               for tool in tools]
    one = options[0] if len(options) == 1 else {"anyOf": options}
    # At most one call per tool: a small model would otherwise repeat calls until max_tokens.
    return {"type": "array", "items": one, "minItems": 1, "maxItems": len(tools)} if parallel and len(tools) > 1 \
        else one


# Reading calls back ---------------------------------------------------------------

def parse_forced(text: str) -> list[ToolCall]:
    """Calls from the constrained form (a call object or an array of them)."""
    value = json.loads(text)
    return [_call(item.get("name"), item.get("arguments")) for item in (value if isinstance(value, list) else [value])]


def parse_calls(text: str, family: str, names: set[str]) -> tuple[str, list[ToolCall]]:
    """(content, calls) of a free answer TEXT in FAMILY's syntax; only calls to NAMES count.

    The content is everything the model wrote outside the calls it made: text before, between and after them,
    and whatever looked like a call but was not one (an unknown function, JSON cut off by max_tokens), joined
    at the seams. Without a call the content is TEXT as written."""
    finder = {HERMES: _hermes_spans, LLAMA3: _llama3_spans, MISTRAL: _mistral_spans}.get(family, _hermes_spans)
    spans = [(begin, end, call) for begin, end, call in finder(text) if call.name in names]
    if not spans:
        return text, []
    outside, position = [], 0
    for begin, end, _ in spans:
        outside.append(text[position:begin])
        position = end
    outside.append(text[position:])
    content = outside[0].rstrip()  # a streamed answer has sent a prefix of the first piece (engine/tool_stream.py)
    for piece in outside[1:]:
        if piece.strip():
            content += ("\n" if content else "") + piece.strip()
    return content, [call for _, _, call in spans]


# Each finder gives (begin, end, call) for every span of TEXT that is a well-formed call.
_HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def _hermes_spans(text: str) -> list[tuple[int, int, ToolCall]]:
    spans = []
    for match in _HERMES_CALL.finditer(text):
        value = _json_or_none(match.group(1))
        if isinstance(value, dict):
            spans.append((match.start(), match.end(),
                          _call(value.get("name"), value.get("arguments", value.get("parameters")))))
    return spans


def _llama3_spans(text: str) -> list[tuple[int, int, ToolCall]]:
    """Calls after <|python_tag|>, or an answer that is nothing but call objects."""
    tag = text.find("<|python_tag|>")
    begin = tag if tag >= 0 else 0
    body_start = tag + len("<|python_tag|>") if tag >= 0 else 0
    values, end = _json_values(text, body_start)
    if tag < 0 and text[body_start:].lstrip()[:1] != "{":
        return []
    calls = [_call(value.get("name"), value.get("parameters", value.get("arguments")))
             for value in values if isinstance(value, dict) and "name" in value]
    if not calls:
        return []
    # One span for the tag and all its calls: what follows them is text.
    return [(begin, end, calls[0])] + [(end, end, call) for call in calls[1:]]


def _mistral_spans(text: str) -> list[tuple[int, int, ToolCall]]:
    marker = text.find("[TOOL_CALLS]")
    if marker < 0:
        return []
    rest = marker + len("[TOOL_CALLS]")
    while rest < len(text) and text[rest].isspace():
        rest += 1
    if text.startswith("[", rest):
        values, end = _json_values(text, rest)
        calls = [_call(item.get("name"), item.get("arguments"))
                 for value in values for item in (value if isinstance(value, list) else [value])
                 if isinstance(item, dict)]
        return [(marker, end, calls[0])] + [(end, end, call) for call in calls[1:]] if calls else []
    # Newer templates: name[ARGS]{...} or name[CALL_ID]id[ARGS]{...}, repeated.
    spans, position = [], marker
    for match in _MISTRAL_CALL.finditer(text, rest):
        if text[position:match.start()].strip() and text[position:match.start()].strip() != "[TOOL_CALLS]":
            break  # text between calls ends them
        arguments = _json_or_none(match.group(2))
        if arguments is None:
            break
        spans.append((position if not spans else match.start(), match.end(), _call(match.group(1), arguments)))
        position = match.end()
    return spans


_MISTRAL_CALL = re.compile(r"(?:\[TOOL_CALLS\])?\s*([A-Za-z0-9_.-]+)(?:\[CALL_ID\][A-Za-z0-9]+)?\[ARGS\]"
                           r"(\{.*?\})(?=\s*(?:\[TOOL_CALLS\]|$))", re.DOTALL)


def _call(name: Any, arguments: Any) -> ToolCall:
    if isinstance(arguments, str):
        text = arguments
    else:
        text = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    return ToolCall(str(name), text)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _json_values(text: str, index: int = 0) -> tuple[list[Any], int]:
    """Consecutive JSON values in TEXT from INDEX (separated by whitespace, ';' or ','), as far as they parse,
    and where the last one ends."""
    decoder, values, end = json.JSONDecoder(), [], index
    while index < len(text):
        while index < len(text) and text[index] in " \t\r\n;,":
            index += 1
        if index >= len(text):
            break
        try:
            value, index = decoder.raw_decode(text, index)
        except ValueError:
            break
        values.append(value)
        end = index
    return values, end
