"""Wire types of OpenAI's Responses API (and the Open Responses spec): validate bodies into dataclasses.

Input is a string or a list of items: messages, whose content is text
(input_text, output_text, or a plain string), function calls and their
outputs. Images, files and item references are refused with a 400 naming the
item, never dropped silently. A
``compaction`` item (what /v1/responses/compact returns) is read back as the
memory note it carries, so a client can reuse a compacted window as input.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hoshikage.api.http.errors import APIError, invalid
from hoshikage.api.openai.protocol import GenerationRequest, parse_response_format, parse_tools, scalar, whole_number
from hoshikage.api.responses.items import text_part
from hoshikage.engine.sampling import SamplingParams

INPUT_ROLES = ("user", "system", "developer", "assistant")
TEXT_PARTS = ("input_text", "output_text", "text")
MAX_METADATA_KEYS = 16
# What stopped an answer that ran out of room (incomplete_details.cause, beside OpenAI's one reason
# "max_output_tokens"): the request's max_output_tokens, the daemon's default_max_tokens, the model's context.
LENGTH_CAUSES = ("max_output_tokens", "default_max_tokens", "context_window")

# Accepted at their neutral value only.
NEUTRAL = {"background": (None, False),
           "top_logprobs": (None, 0), "max_tool_calls": (None,), "prompt": (None,),
           "reasoning": (None, {}, {"effort": None}, {"effort": None, "summary": None})}
# Known and harmless: accepted and not acted on.
IGNORED = ("include", "service_tier", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options",
           "safety_identifier", "stream_options", "user", "truncation")


@dataclasses.dataclass(frozen=True)
class InputMessage:
    role: str  # user, system, assistant (developer reads as system), tool
    text: str
    item: dict[str, Any]  # as stored and listed: type, role, content parts
    message: dict[str, Any] | None = None  # the chat message of a function call or its output


def item_message(role: str, text: str, item: dict[str, Any]) -> dict[str, Any]:
    """The chat message a stored or given item stands for (tool calls and results included)."""
    kind = item.get("type")
    if kind == "function_call":
        return {"role": "assistant", "content": "", "tool_calls": [{
            "id": item["call_id"], "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]}}]}
    if kind == "function_call_output":
        return {"role": "tool", "tool_call_id": item["call_id"], "content": text}
    return {"role": role, "content": text}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResponsesRequest(GenerationRequest):
    input: tuple[InputMessage, ...]
    instructions: str | None
    previous_response_id: str | None
    conversation_id: str | None
    store: bool
    metadata: dict[str, str]
    truncation: str
    text_format: dict[str, Any] = dataclasses.field(default_factory=lambda: {"type": "text"})
    prompt_param: str = "input"


def parse_responses_request(body: Any) -> ResponsesRequest:
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object")
    for name, values in NEUTRAL.items():
        if name in body and body[name] not in values:
            raise invalid(f"'{name}' is not supported by this server yet", param=name, code="unsupported_parameter")
    text = body.get("text")
    if text is not None and not isinstance(text, dict):
        raise invalid("'text' must be an object", param="text")
    text_format = (text or {}).get("format")
    if body.get("model") is None:
        raise invalid("'model' is required and must be a non-empty string", param="model")
    previous = _optional_string(body, "previous_response_id")
    conversation = _conversation(body.get("conversation"))
    if previous and conversation:
        raise invalid("'previous_response_id' and 'conversation' cannot be used together",
                      param="previous_response_id")
    truncation = body.get("truncation") or "disabled"
    if truncation not in ("auto", "disabled"):
        raise invalid("'truncation' must be 'auto' or 'disabled'", param="truncation")
    store = body.get("store", True)
    if store is None:
        store = True
    if not isinstance(store, bool):
        raise invalid("'store' must be a boolean", param="store")
    stream = scalar(body, "stream")
    sampling = SamplingParams(
        temperature=scalar(body, "temperature"), top_p=scalar(body, "top_p"),
        presence_penalty=scalar(body, "presence_penalty"), frequency_penalty=scalar(body, "frequency_penalty"),
        top_k=scalar(body, "top_k"), min_p=scalar(body, "min_p"), repeat_penalty=scalar(body, "repeat_penalty"),
        seed=scalar(body, "seed"), ignore_eos=scalar(body, "ignore_eos"), grammar=_grammar(text_format))
    tool_fields = parse_tools(_as_chat_tools(body), sampling)
    sampling = tool_fields.pop("sampling")
    max_output = body.get("max_output_tokens")
    if max_output is not None:
        max_output = whole_number(max_output)
        if max_output is None or max_output < 1:
            raise invalid("'max_output_tokens' must be a positive integer", param="max_output_tokens")
    known = {"model", "input", "instructions", "previous_response_id", "conversation", "store", "metadata",
             "max_output_tokens", "temperature", "top_p", "stream", "text", "presence_penalty", "frequency_penalty",
             "top_k", "min_p", "repeat_penalty", "seed", "ignore_eos", "tools", "tool_choice", "parallel_tool_calls",
             *NEUTRAL,
             *IGNORED}
    return ResponsesRequest(
        model=scalar(body, "model"), sampling=sampling, max_tokens=max_output, n=1, stop=(), stream=stream,
        include_usage=False, user=None, ignored_fields=tuple(sorted(body.keys() - known)),
        input=parse_input(body.get("input"), required=not (previous or conversation)),
        instructions=_optional_string(body, "instructions"), previous_response_id=previous,
        conversation_id=conversation, store=store, metadata=parse_metadata(body.get("metadata")),
        truncation=truncation, text_format=text_format or {"type": "text"}, **tool_fields)


def _as_chat_tools(body: dict[str, Any]) -> dict[str, Any]:
    """The Responses API's flat function tools and tool_choice, in Chat Completions' shape."""
    tools = body.get("tools")
    if isinstance(tools, list):
        tools = [{"type": "function", "function": {key: value for key, value in tool.items() if key != "type"}}
                 if isinstance(tool, dict) and tool.get("type") == "function" else tool for tool in tools]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        choice = {"type": "function", "function": {"name": choice["name"]}}
    return {"tools": tools, "tool_choice": choice, "parallel_tool_calls": body.get("parallel_tool_calls")}


def _grammar(text_format: Any) -> str | None:
    """text.format as Chat Completions' response_format (the Responses API flattens json_schema)."""
    if isinstance(text_format, dict) and text_format.get("type") == "json_schema":
        text_format = {"type": "json_schema", "json_schema": {key: value for key, value in text_format.items()
                                                              if key != "type"}}
    try:
        return parse_response_format(text_format)
    except APIError as error:
        error.param = "text.format"
        raise


def parse_input(value: Any, *, required: bool = True, param: str = "input") -> tuple[InputMessage, ...]:
    if value is None or value == "" or value == []:
        if required:
            raise invalid(f"'{param}' is required: a string or a list of message items", param=param)
        return ()
    if isinstance(value, str):
        return (_message("user", value),)
    if not isinstance(value, list):
        raise invalid(f"'{param}' must be a string or a list of items", param=param)
    # An empty compaction note (a history that needed none) says nothing: no empty system message beside other
    # input. Alone it stays what it was, an empty system message, so the request is still answered.
    empty_notes = {index for index, item in enumerate(value) if isinstance(item, dict)
                   and item.get("type") == "compaction" and item.get("encrypted_content") == ""}
    skipped = empty_notes if len(empty_notes) < len(value) else set()
    return tuple(_parse_item(item, f"{param}[{index}]") for index, item in enumerate(value) if index not in skipped)


def format_echo(text_format: dict[str, Any]) -> dict[str, Any]:
    """text.format as the response object carries it: a json_schema format with every field OpenAI echoes
    (description null and strict false when the request left them out), the others as given."""
    if text_format.get("type") != "json_schema":
        return text_format
    return {"type": "json_schema", "name": text_format.get("name"), "description": text_format.get("description"),
            "schema": text_format.get("schema"), "strict": bool(text_format.get("strict"))}


def parse_metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS:
        raise invalid(f"'metadata' must be an object of at most {MAX_METADATA_KEYS} string values",
                      param="metadata")
    for key, item in value.items():
        if len(key) > 64 or not isinstance(item, str) or len(item) > 512:
            raise invalid("'metadata' keys are at most 64 characters and values strings of at most 512",
                          param=f"metadata.{key}")
    return dict(value)


def _parse_item(item: Any, where: str) -> InputMessage:
    if not isinstance(item, dict):
        raise invalid(f"'{where}' must be an object", param=where)
    kind = item.get("type", "message")
    if kind == "function_call":
        for field in ("call_id", "name", "arguments"):
            if not isinstance(item.get(field), str):
                raise invalid(f"'{where}.{field}' must be a string", param=f"{where}.{field}")
        shaped = {"type": "function_call", "call_id": item["call_id"], "name": item["name"],
                  "arguments": item["arguments"], "status": "completed"}
        text = f"{item['name']}({item['arguments']})"
        return InputMessage("assistant", text, shaped, item_message("assistant", text, shaped))
    if kind == "function_call_output":
        output = item.get("output")
        if not isinstance(item.get("call_id"), str) or not isinstance(output, str):
            raise invalid(f"'{where}' needs a 'call_id' and an 'output' string", param=where)
        shaped = {"type": "function_call_output", "call_id": item["call_id"], "output": output,
                  "status": "completed"}
        return InputMessage("tool", output, shaped, item_message("tool", output, shaped))
    if kind == "compaction":
        note = item.get("encrypted_content")
        if not isinstance(note, str):
            raise invalid(f"'{where}.encrypted_content' must be a string", param=f"{where}.encrypted_content")
        return _message("system", note)
    if kind != "message":
        raise invalid(f"'{where}' is a {kind!r} item; message, function_call, function_call_output and "
                      "compaction items are supported",
                      param=where, code="unsupported_parameter")
    role = item.get("role")
    if role not in INPUT_ROLES:
        raise invalid(f"'{where}.role' must be one of {', '.join(INPUT_ROLES)}; got {role!r}", param=f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return _message(role, content)
    if not isinstance(content, list):
        raise invalid(f"'{where}.content' must be a string or a list of content parts", param=f"{where}.content")
    texts = []
    for index, part in enumerate(content):
        part_where = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind not in TEXT_PARTS:
            raise invalid(f"Only text content is supported by this model; '{part_where}' is {kind!r}",
                          param=part_where, code="unsupported_content")
        if not isinstance(part.get("text"), str):
            raise invalid(f"'{part_where}.text' must be a string", param=f"{part_where}.text")
        texts.append(part["text"])
    return _message(role, "".join(texts))


def _message(role: str, text: str) -> InputMessage:
    return InputMessage("system" if role == "developer" else role, text,
                        {"type": "message", "role": role, "content": [text_part(role, text)]})


def _optional_string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise invalid(f"'{name}' must be a non-empty string", param=name)
    return value


def _conversation(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise invalid("'conversation' must be a conversation id or {\"id\": ...}", param="conversation")
    return value

