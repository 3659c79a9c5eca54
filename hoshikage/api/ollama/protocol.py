"""Ollama's wire format in Hoshikage's terms: names, durations, options, messages, model details.

Pure translation, no I/O: a chat or generate body becomes the OpenAI body
api/openai/protocol.py validates (so both surfaces accept exactly the same sampling
values and give the same errors), and our answers become Ollama's fields.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
from typing import Any

from hoshikage.api.http.errors import invalid
from hoshikage.api.openai.protocol import whole_number
from hoshikage.registry import LATEST

# options that map onto a request field (Ollama's name -> ours)
SAMPLING_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                    "seed": "seed", "repeat_penalty": "repeat_penalty", "presence_penalty": "presence_penalty",
                    "frequency_penalty": "frequency_penalty"}
# options about how Ollama runs a model; here the registry and the daemon's settings decide them
RUNNER_OPTIONS = frozenset({"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep", "use_mmap",
                            "use_mlock", "low_vram", "f16_kv", "vocab_only", "numa", "logits_all",
                            "embedding_only", "repeat_last_n", "typical_p", "tfs_z", "mirostat", "mirostat_tau",
                            "mirostat_eta", "penalize_newline"})
FOREVER_SECONDS = 100 * 365 * 86400
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


# Names ---------------------------------------------------------------------------

def ollama_name(alias: str) -> str:
    """ALIAS as Ollama shows it: name:tag, with :latest for an alias that has no tag."""
    return alias if ":" in alias else alias + LATEST


# Times ---------------------------------------------------------------------------

def timestamp(seconds: float | None = None) -> str:
    """RFC 3339 in UTC, as Ollama writes created_at and modified_at."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc) if seconds is not None \
        else datetime.datetime.now(datetime.timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


def nanoseconds(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


def parse_keep_alive(value: Any) -> float | None:
    """Ollama's keep_alive as seconds: None (absent: the daemon's default), math.inf (negative: while the daemon
    runs), or a duration: a number of seconds or a Go duration such as "5m", "1h30m", "0"."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise invalid("'keep_alive' must be a duration such as \"5m\" or a number of seconds", param="keep_alive")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        text = text.lstrip("+-")
        try:
            seconds = sign * float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not text or "".join(number + unit for number, unit in parts) != text:
                raise invalid(f"'keep_alive' {value!r} is not a duration: use \"5m\", \"1h\", \"30s\", \"0\" or "
                              "\"-1\" (forever)", param="keep_alive") from None
            seconds = sign * sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    else:
        raise invalid("'keep_alive' must be a duration such as \"5m\" or a number of seconds", param="keep_alive")
    if math.isnan(seconds):
        raise invalid("'keep_alive' must be a number", param="keep_alive")
    # Negative is Ollama's "forever"; so is anything past a century (no date could say when it ends).
    return math.inf if seconds < 0 or seconds > FOREVER_SECONDS else seconds


# Requests ----------------------------------------------------------------------

def _object(body: Any, name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"'{name}' must be an object", param=name)
    return value


def request_body(body: dict[str, Any], alias: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The OpenAI fields of an Ollama chat or generate BODY (options, format, stream), and its stop strings
    (Ollama allows more than OpenAI's four, so they travel apart)."""
    options = _object(body, "options")
    openai: dict[str, Any] = {"model": alias, "stream": False}
    for ours_name, field in SAMPLING_OPTIONS.items():
        if options.get(ours_name) is not None:
            openai[field] = options[ours_name]
    predict = options.get("num_predict")
    if predict is not None:
        predict = whole_number(predict)
        if predict is None:
            raise invalid("'options.num_predict' must be an integer", param="options.num_predict")
        if predict > 0:  # -1 (no limit) and -2 (fill the context): up to the context, as without it
            openai["max_tokens"] = predict
    stop = options.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(item, str) for item in stop)):
        raise invalid("'options.stop' must be a list of strings", param="options.stop")
    format_value = body.get("format")
    if format_value == "json":
        openai["response_format"] = {"type": "json_object"}
    elif isinstance(format_value, dict):
        openai["response_format"] = {"type": "json_schema", "json_schema": {"name": "format", "schema": format_value}}
    elif format_value not in (None, ""):
        raise invalid("'format' must be \"json\" or a JSON schema", param="format")
    if body.get("think") not in (None, False):
        raise invalid(f"'think' is not supported: '{alias}' is served without a thinking mode", param="think")
    return openai, tuple(item for item in (stop or []) if item)


def unknown_options(body: dict[str, Any]) -> list[str]:
    """Options neither applied nor runner settings (logged, as Ollama warns of them)."""
    options = _object(body, "options")
    return sorted(options.keys() - SAMPLING_OPTIONS.keys() - RUNNER_OPTIONS - {"num_predict", "stop"})


def chat_messages(messages: Any) -> list[dict[str, Any]]:
    """Ollama's messages as OpenAI's: tool calls get ids (Ollama's have none), arguments become JSON text, and
    a tool's answer is matched to the call it answers by the function's name."""
    if not isinstance(messages, list):
        raise invalid("'messages' must be a list", param="messages")
    converted: list[dict[str, Any]] = []
    open_calls: list[tuple[str, str]] = []  # (id, function name) of calls not answered yet
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid(f"'{where}' must be an object", param=where)
        if message.get("images"):
            raise invalid(f"'{where}.images': images are not supported (no vision model is served)",
                          param=f"{where}.images")
        role, content = message.get("role"), message.get("content")
        out: dict[str, Any] = {"role": role, "content": "" if content is None else content}
        if role == "assistant" and message.get("tool_calls"):
            calls = message["tool_calls"]
            if not isinstance(calls, list):
                raise invalid(f"'{where}.tool_calls' must be a list", param=f"{where}.tool_calls")
            out["tool_calls"] = []
            for number, call in enumerate(calls):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise invalid(f"'{where}.tool_calls[{number}]' must have a function with a name",
                                  param=f"{where}.tool_calls[{number}]")
                arguments = function.get("arguments", {})
                call_id = f"call_{index}_{number}"
                open_calls.append((call_id, function["name"]))
                out["tool_calls"].append({"id": call_id, "type": "function", "function": {
                    "name": function["name"],
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}})
        elif role == "tool":
            name = message.get("tool_name") or message.get("name")
            match = next((pair for pair in open_calls if pair[1] == name), open_calls[0] if open_calls else None)
            if match is not None:
                open_calls.remove(match)
            out["tool_call_id"] = match[0] if match else f"call_{name or 'tool'}"
        converted.append(out)
    return converted


def tool_calls_out(calls) -> list[dict[str, Any]]:
    """Our parsed tool calls as Ollama's: arguments as an object, not JSON text."""
    shaped = []
    for index, call in enumerate(calls):
        try:
            arguments = json.loads(call.arguments)
        except ValueError:
            arguments = {}
        shaped.append({"function": {"index": index, "name": call.name, "arguments": arguments}})
    return shaped


def done_reason(finish_reason: str | None) -> str:
    return "length" if finish_reason == "length" else "stop"


# Models -------------------------------------------------------------------------

def human_parameters(count: int | None) -> str:
    """A parameter count the way Ollama's details show it: 268.10M, 8.0B."""
    if not count:
        return ""
    if count >= 1e9:
        return f"{count / 1e9:.1f}B"
    if count >= 1e6:
        return f"{count / 1e6:.2f}M"
    return f"{count / 1e3:.2f}K"


def digest(entry) -> str:
    """A sha256 identifying the registration (path, size, when it was added), not the weights' hash: hashing a
    multi-gigabyte file on every listing would take seconds; this changes whenever the model is re-added."""
    gguf = entry.gguf or {}
    identity = f"{entry.path}\0{gguf.get('size_bytes')}\0{entry.added_at}"
    return hashlib.sha256(identity.encode()).hexdigest()


def details(entry) -> dict[str, Any]:
    gguf = entry.gguf or {}
    family = gguf.get("architecture", "")
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family] if family else None,
            "parameter_size": human_parameters(gguf.get("parameters")),
            "quantization_level": gguf.get("quantization", "")}


def model_summary(entry) -> dict[str, Any]:
    """One model of /api/tags."""
    name = ollama_name(entry.alias)
    return {"name": name, "model": name, "modified_at": timestamp(entry.added_at),
            "size": (entry.gguf or {}).get("size_bytes", 0), "digest": digest(entry), "details": details(entry)}
