"""Wire types: validate OpenAI request bodies into plain dataclasses.

Pure functions, no I/O: each error names the offending ``param`` the way
OpenAI does (``messages[2].content``). Fields we do not know are ignored (and
reported to the caller so it can log them), because clients routinely send
options meant for other servers; fields we know but cannot honour yet are
rejected, since silently ignoring them would change what the client gets.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hoshikage.api.errors import invalid
from hoshikage.engine.sampling import SamplingParams

ROLES = {"system", "developer", "user", "assistant"}
MAX_STOP_SEQUENCES = 4

_COMMON_FIELDS = {
    "model", "max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty",
    "frequency_penalty", "stream", "stream_options", "user", "n", "logit_bias",
    "ignore_eos",  # llama-server's extension: generate to max_tokens, past end-of-generation tokens
}
CHAT_FIELDS = _COMMON_FIELDS | {"messages", "max_completion_tokens"}
COMPLETION_FIELDS = _COMMON_FIELDS | {"prompt"}
# Known to OpenAI, not implemented here: reject rather than silently differ.
UNSUPPORTED = {"tools", "tool_choice", "functions", "function_call", "logprobs", "top_logprobs",
               "response_format", "best_of", "echo", "suffix", "audio", "modalities"}
# Harmless when left at their neutral value.
NEUTRAL = {"logprobs": (None, False), "top_logprobs": (None, 0), "response_format": (None, {"type": "text"}),
           "echo": (None, False), "best_of": (None, 1), "tools": (None, []),
           "tool_choice": (None, "none", "auto"), "suffix": (None, ""), "functions": (None, []),
           "function_call": (None, "none", "auto"), "modalities": (None, ["text"]), "audio": (None,)}


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


@dataclasses.dataclass(frozen=True)
class CompletionRequest(GenerationRequest):
    prompt: str | tuple[int, ...]


def parse_chat_request(body: Any) -> ChatRequest:
    body = _require_object(body)
    common = _parse_common(body, CHAT_FIELDS)
    max_tokens = _optional_int(body, "max_completion_tokens", minimum=1)
    if max_tokens is None:
        max_tokens = common.pop("max_tokens")
    else:
        common.pop("max_tokens")
    return ChatRequest(**common, max_tokens=max_tokens, messages=_parse_messages(body.get("messages")))


def parse_completion_request(body: Any) -> CompletionRequest:
    body = _require_object(body)
    common = _parse_common(body, COMPLETION_FIELDS)
    return CompletionRequest(**common, prompt=_parse_prompt(body.get("prompt")))


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object")
    return body


def _parse_common(body: dict[str, Any], known: set[str]) -> dict[str, Any]:
    for name in UNSUPPORTED & body.keys():
        if body[name] not in NEUTRAL.get(name, (None,)):
            raise invalid(f"'{name}' is not supported by this server", param=name, code="unsupported_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required and must be a non-empty string", param="model")
    n = _optional_int(body, "n", minimum=1) or 1  # at most the model's slots: checked when it is known
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("'stream' must be a boolean", param="stream")
    include_usage = _parse_stream_options(body.get("stream_options"), stream)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("'user' must be a string", param="user")
    seed = _optional_int(body, "seed")
    sampling = SamplingParams(
        temperature=_optional_number(body, "temperature", 0.0, 2.0, default=1.0),
        top_p=_optional_number(body, "top_p", 0.0, 1.0, default=1.0),
        presence_penalty=_optional_number(body, "presence_penalty", -2.0, 2.0, default=0.0),
        frequency_penalty=_optional_number(body, "frequency_penalty", -2.0, 2.0, default=0.0),
        seed=seed,
        logit_bias=_parse_logit_bias(body.get("logit_bias")),
        ignore_eos=_optional_bool(body, "ignore_eos"),
    )
    return {
        "model": model,
        "sampling": sampling,
        "max_tokens": _optional_int(body, "max_tokens", minimum=1),
        "n": n,
        "stop": _parse_stop(body.get("stop")),
        "stream": stream,
        "include_usage": include_usage,
        "user": user,
        "ignored_fields": tuple(sorted(body.keys() - known - UNSUPPORTED)),
    }


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


def _optional_int(body: dict[str, Any], name: str, minimum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"'{name}' must be an integer", param=name)
    if minimum is not None and value < minimum:
        raise invalid(f"'{name}' must be at least {minimum}, got {value}", param=name)
    return value


def _optional_number(body: dict[str, Any], name: str, low: float, high: float, *, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"'{name}' must be a number", param=name)
    if not low <= value <= high:
        raise invalid(f"'{name}' must be between {low:g} and {high:g}, got {value}", param=name)
    return float(value)


def _optional_bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"'{name}' must be a boolean", param=name)
    return value


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
            raise invalid(f"'{where}.role' must be one of system, developer, user, assistant; got {role!r}",
                          param=f"{where}.role")
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
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, list) and value and all(isinstance(item, int) and not isinstance(item, bool)
                                                 for item in value):
        return tuple(value)
    if isinstance(value, list) and len(value) > 1:
        raise invalid("Only one prompt per request is supported", param="prompt",
                      code="unsupported_parameter")
    raise invalid("'prompt' must be a string or an array of token ids", param="prompt")

