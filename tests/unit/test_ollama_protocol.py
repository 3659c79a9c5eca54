"""Ollama's wire format in our terms: names, keep_alive durations, options, messages (pure logic)."""

from __future__ import annotations

import json
import math

import pytest

from hoshikage.api.http.errors import APIError
from hoshikage.api.ollama.protocol import (chat_messages, human_parameters, ollama_name, parse_keep_alive,
                                           request_body, tool_calls_out)
from hoshikage.engine.tools import ToolCall
from hoshikage.registry import resolve_name


def test_names_take_and_give_the_latest_tag():
    known = {"gemma", "qwen:7b", "tagged:latest"}
    assert ollama_name("gemma") == "gemma:latest" and ollama_name("qwen:7b") == "qwen:7b"
    assert resolve_name("gemma:latest", known) == "gemma"
    assert resolve_name("gemma", known) == "gemma"
    assert resolve_name("tagged", known) == "tagged:latest"
    assert resolve_name("qwen:7b", known) == "qwen:7b"
    assert resolve_name("qwen", known) is None and resolve_name("gemma:2b", known) is None


@pytest.mark.parametrize(("value", "seconds"), [
    (None, None), (0, 0.0), ("0", 0.0), (300, 300.0), ("5m", 300.0), ("1h30m", 5400.0), ("1.5s", 1.5),
    ("300ms", 0.3), (-1, math.inf), ("-1", math.inf), ("-5m", math.inf), (2.5, 2.5), (1e12, math.inf),
    ("87600h", 87600 * 3600.0), ("1000000h", math.inf)])
def test_keep_alive_reads_numbers_and_go_durations(value, seconds):
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "", "m", True, [1], {"s": 1}])
def test_keep_alive_refuses_what_is_not_a_duration(value):
    with pytest.raises(APIError) as raised:
        parse_keep_alive(value)
    assert raised.value.status == 400 and raised.value.param == "keep_alive"


def test_options_become_request_fields_and_stop_strings_travel_apart():
    body = {"options": {"temperature": 0.2, "top_k": 5, "seed": 7, "num_predict": 12, "repeat_penalty": 1.1,
                        "stop": ["a", "b", "c", "d", "e"], "num_ctx": 8192, "num_thread": 3},
            "format": "json"}
    openai, stop = request_body(body, "gemma")
    assert openai == {"model": "gemma", "stream": False, "temperature": 0.2, "top_k": 5, "seed": 7,
                      "repeat_penalty": 1.1, "max_tokens": 12, "response_format": {"type": "json_object"}}
    assert stop == ("a", "b", "c", "d", "e")  # more than OpenAI's four
    unlimited, _ = request_body({"options": {"num_predict": -1}}, "gemma")
    assert "max_tokens" not in unlimited
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    shaped, _ = request_body({"format": schema}, "gemma")
    assert shaped["response_format"] == {"type": "json_schema", "json_schema": {"name": "format", "schema": schema}}


@pytest.mark.parametrize("body", [{"format": "yaml"}, {"options": "fast"}, {"options": {"stop": [1]}},
                                  {"options": {"num_predict": "many"}}, {"think": True}])
def test_request_bodies_we_cannot_honour_are_refused(body):
    with pytest.raises(APIError) as raised:
        request_body(body, "gemma")
    assert raised.value.status == 400


def test_tool_calls_get_ids_and_answers_find_their_call_by_name():
    messages = chat_messages([
        {"role": "user", "content": "Weather and time?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"name": "get_time", "arguments": {"zone": "CET"}}}]},
        {"role": "tool", "content": "12:00", "tool_name": "get_time"},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ])
    calls = messages[1]["tool_calls"]
    assert [call["function"]["name"] for call in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert messages[2]["tool_call_id"] == calls[1]["id"] and messages[3]["tool_call_id"] == calls[0]["id"]
    with pytest.raises(APIError):
        chat_messages([{"role": "user", "content": "look", "images": ["aGVsbG8="]}])


def test_our_tool_calls_go_out_with_object_arguments():
    out = tool_calls_out([ToolCall("get_weather", '{"city": "Paris"}')])
    assert out == [{"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}]


def test_parameter_counts_read_like_ollamas():
    assert human_parameters(268_098_176) == "268.10M" and human_parameters(8_030_261_248) == "8.0B"
    assert human_parameters(None) == ""
