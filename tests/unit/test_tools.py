"""Tool calls: reading each family's syntax back, rendering for the built-in formats, the forced form."""

from __future__ import annotations

import json

from hoshikage.engine.tools import (HERMES, LLAMA3, MISTRAL, Tool, family_of, forced_call_schema, hermes_messages,
                                    parse_calls, parse_forced)

NAMES = {"get_weather", "get_time"}
# What each family's template renders for an assistant turn that calls tools, which is what the
# model was tuned to produce (Qwen 2.5 / Hermes 2 Pro, Llama 3.1/3.2, Mistral v0.3 and Mistral Small 3.1+).
QWEN = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>')
LLAMA = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
LLAMA_PYTHON_TAG = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}'
MISTRAL_V3 = '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]'
MISTRAL_V11 = '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{"zone": "CET"}'


def _pairs(calls):
    return [(call.name, json.loads(call.arguments)) for call in calls]


def test_hermes_and_qwen_calls():
    content, calls = parse_calls("Let me check.\n" + QWEN, HERMES, NAMES)
    assert content == "Let me check."
    assert _pairs(calls) == [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "CET"})]
    assert len({call.id for call in calls}) == 2 and all(call.id.startswith("call_") for call in calls)


def test_llama3_calls_with_and_without_python_tag():
    for text in (LLAMA, LLAMA_PYTHON_TAG):
        content, calls = parse_calls(text, LLAMA3, NAMES)
        assert content == "" and _pairs(calls) == [("get_weather", {"city": "Paris"})]


def test_mistral_calls_in_both_syntaxes():
    assert _pairs(parse_calls(MISTRAL_V3, MISTRAL, NAMES)[1]) == [("get_weather", {"city": "Paris"})]
    assert _pairs(parse_calls(MISTRAL_V11, MISTRAL, NAMES)[1]) == [("get_weather", {"city": "Paris"}),
                                                                   ("get_time", {"zone": "CET"})]


def test_text_without_a_call_or_with_an_unknown_function_is_content():
    for text, family in (("It is sunny.", HERMES), ('{"name": "rm_rf", "parameters": {}}', LLAMA3),
                         ('<tool_call>{"name": "get_weather", "arguments": {"ci', HERMES),
                         ("[TOOL_CALLS] not json", MISTRAL)):
        assert parse_calls(text, family, NAMES) == (text, [])


def test_the_family_follows_the_template():
    assert family_of(None) == HERMES  # built-in formats are taught Hermes's syntax
    assert family_of("{% for m in messages %}<tool_call>{% endfor %}") == HERMES
    assert family_of("[AVAILABLE_TOOLS] ... [TOOL_CALLS]") == MISTRAL
    assert family_of("<|start_header_id|>ipython<|end_header_id|>") == LLAMA3


def test_forced_calls_parse_as_one_object_or_an_array():
    assert _pairs(parse_forced('{"name": "get_time", "arguments": {"zone": "UTC"}}')) == [("get_time", {"zone": "UTC"})]
    assert len(parse_forced('[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]')) == 2


def test_forced_schema_allows_only_the_given_functions():
    tools = [Tool("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}}),
             Tool("get_time", "", {"type": "object", "properties": {}})]
    single = forced_call_schema(tools[:1], parallel=True)
    assert single["properties"]["name"] == {"const": "get_weather"}
    several = forced_call_schema(tools, parallel=True)
    assert several["type"] == "array" and several["maxItems"] == 2
    assert [option["properties"]["name"]["const"] for option in several["items"]["anyOf"]] == ["get_weather",
                                                                                              "get_time"]


def test_builtin_formats_render_tools_calls_and_results_the_hermes_way():
    tools = [Tool("get_weather", "Weather for a city", {"type": "object"})]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}]
    rendered = hermes_messages(messages, tools)
    assert rendered[0]["content"].startswith("Be brief.") and '"name": "get_weather"' in rendered[0]["content"]
    assert rendered[2] == {"role": "assistant",
                           "content": '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'}
    assert rendered[3] == {"role": "user", "content": "<tool_response>\n18 C\n</tool_response>"}
