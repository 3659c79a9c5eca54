"""Structured output, tool calls and logprobs on the real model, inside the batch, through the OpenAI SDK."""

from __future__ import annotations

import concurrent.futures
import json
import math

import jsonschema
import openai
import pytest

from tests.schema import assert_valid

from tests.structured_schemas import NAME, SCHEMAS

PROMPT = [{"role": "user", "content": "Answer in JSON."}]


def _structured(client, schema: dict, index: int, temperature: float = 0.0):
    return client.chat.completions.create(
        model="gemma", messages=PROMPT, max_tokens=160, temperature=temperature, seed=index,
        response_format={"type": "json_schema", "json_schema": {"name": f"s{index}", "schema": schema,
                                                                "strict": True}})


def test_every_schema_is_followed_while_other_requests_decode_in_the_same_batch(openai_tcp):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        plain = [pool.submit(openai_tcp.chat.completions.create, model="gemma", messages=PROMPT, max_tokens=40,
                             temperature=1.0, seed=index) for index in range(6)]
        answers = list(pool.map(lambda pair: _structured(openai_tcp, pair[1], pair[0], temperature=0.8),
                                enumerate(SCHEMAS)))
        assert all(future.result().choices[0].message.content is not None for future in plain)
    for schema, answer in zip(SCHEMAS, answers):
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", (schema, choice.message.content)
        jsonschema.validate(json.loads(choice.message.content), schema,
                            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_greedy_decoding_follows_the_schema_too(openai_tcp):
    answer = _structured(openai_tcp, SCHEMAS[7], 0, temperature=0.0)
    jsonschema.validate(json.loads(answer.choices[0].message.content), SCHEMAS[7])


def test_json_object_is_one_json_object(openai_tcp):
    answer = openai_tcp.chat.completions.create(model="gemma", messages=[
        {"role": "user", "content": 'Reply with the JSON {"ok": true}.'}], max_tokens=200, temperature=0.7, seed=3,
        response_format={"type": "json_object"})
    choice = answer.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
    else:  # cut off: a prefix of an object, never anything else
        assert choice.finish_reason == "length" and choice.message.content.lstrip().startswith("{")


def test_a_grammar_that_cannot_finish_in_max_tokens_ends_with_length(openai_tcp):
    answer = _structured(openai_tcp, SCHEMAS[19], 1)  # needs ~20 tokens
    short = openai_tcp.chat.completions.create(
        model="gemma", messages=PROMPT, max_tokens=3, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "m", "schema": SCHEMAS[19]}})
    assert answer.choices[0].finish_reason == "stop" and short.choices[0].finish_reason == "length"


def test_the_responses_api_takes_text_format(openai_tcp):
    response = openai_tcp.responses.create(model="gemma", input="JSON please", max_output_tokens=80, store=False,
                                           text={"format": {"type": "json_schema", "name": "n", "schema": SCHEMAS[0]}})
    jsonschema.validate(json.loads(response.output_text), SCHEMAS[0])
    assert response.text.format.type == "json_schema"


@pytest.mark.parametrize("schema", [
    {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    {"type": "object", "properties": {"mail": {"type": "string", "format": "email"}}},
    {"type": "object", "patternProperties": {"^x": {"type": "string"}}},
])
def test_a_schema_that_cannot_be_enforced_is_a_400(openai_tcp, schema):
    with pytest.raises(openai.BadRequestError) as refused:
        openai_tcp.chat.completions.create(model="gemma", messages=PROMPT, max_tokens=5, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert refused.value.code == "unsupported_schema" and refused.value.param == "response_format"


# Tools ---------------------------------------------------------------------------

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                            "parameters": {"type": "object", "properties": {
                                                "city": NAME, "unit": {"enum": ["celsius", "fahrenheit"]}},
                                                "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Local time in a time zone",
                                         "parameters": {"type": "object", "properties": {
                                             "zone": {"type": "string", "pattern": "^[A-Z]{3}$"}},
                                             "required": ["zone"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris, and the time there?"}]


def _check_calls(message, allowed):
    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in allowed}
    assert message.tool_calls
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


@pytest.mark.parametrize("seed", range(4))
def test_a_required_call_always_has_valid_arguments(openai_tcp, seed):
    answer = openai_tcp.chat.completions.create(model="gemma", messages=ASK, tools=[WEATHER, TIME],
                                                tool_choice="required", max_tokens=120, temperature=1.0, seed=seed)
    assert answer.choices[0].finish_reason == "tool_calls"
    _check_calls(answer.choices[0].message, [WEATHER, TIME])
    assert_valid("CreateChatCompletionResponse", answer.model_dump(mode="json", exclude_unset=True))


def test_a_named_function_is_the_one_called(openai_tcp):
    answer = openai_tcp.chat.completions.create(model="gemma", messages=ASK, tools=[WEATHER, TIME], max_tokens=80,
                                                tool_choice={"type": "function", "function": {"name": "get_time"}},
                                                temperature=0.9, seed=5)
    _check_calls(answer.choices[0].message, [TIME])
    assert {call.function.name for call in answer.choices[0].message.tool_calls} == {"get_time"}


def test_the_sdk_stream_helper_assembles_the_same_call_as_without_streaming(openai_tcp):
    request = dict(model="gemma", messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=80,
                   temperature=0)
    whole = openai_tcp.chat.completions.create(**request).choices[0].message.tool_calls[0]
    with openai_tcp.chat.completions.stream(**request) as stream:
        for _ in stream:
            pass
        streamed = stream.get_final_completion().choices[0]
    assert streamed.finish_reason == "tool_calls"
    (call,) = streamed.message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == (whole.function.name,
                                                                         json.loads(whole.function.arguments))


def test_a_tool_result_goes_back_to_the_model(openai_tcp):
    first = openai_tcp.chat.completions.create(model="gemma", messages=ASK, tools=[WEATHER], tool_choice="required",
                                               max_tokens=80, temperature=0)
    message = first.choices[0].message
    result = {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "18 degrees and sunny"}
    history = ASK + [message.model_dump(exclude_none=True)]
    with_result = openai_tcp.chat.completions.create(model="gemma", messages=history + [result], tools=[WEATHER],
                                                     max_tokens=8, temperature=0)
    without = openai_tcp.chat.completions.create(model="gemma", messages=history + [{**result, "content": ""}],
                                                 tools=[WEATHER], max_tokens=8, temperature=0)
    assert with_result.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert with_result.usage.prompt_tokens > without.usage.prompt_tokens  # the result is in the prompt


@pytest.mark.parametrize(("extra", "param"), [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [WEATHER]}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "format": "email"}}}}}]},
     "tools[0].function.parameters"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
])
def test_tool_mistakes_are_400s(openai_tcp, extra, param):
    with pytest.raises(openai.BadRequestError) as refused:
        openai_tcp.chat.completions.create(**{"model": "gemma", "messages": ASK, "max_tokens": 4, **extra})
    assert refused.value.param == param


# Logprobs ------------------------------------------------------------------------

def test_chat_logprobs_are_probabilities_and_greedy_picks_the_top_one(openai_tcp):
    answer = openai_tcp.chat.completions.create(model="gemma", messages=PROMPT, max_tokens=12, temperature=0,
                                                logprobs=True, top_logprobs=5)
    assert_valid("CreateChatCompletionResponse", answer.model_dump(mode="json", exclude_unset=True))
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens or answer.choices[0].finish_reason == "stop"
    assert "".join(entry.token for entry in content) == answer.choices[0].message.content
    for entry in content:
        alternatives = [top.logprob for top in entry.top_logprobs]
        assert len(alternatives) == 5 and alternatives == sorted(alternatives, reverse=True)
        assert all(value <= 0 for value in alternatives) and sum(math.exp(v) for v in alternatives) <= 1 + 1e-6
        assert entry.logprob == pytest.approx(alternatives[0], abs=1e-6)  # greedy: the likeliest
        assert bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token


def test_logprobs_stream_with_each_chunk(openai_tcp):
    chunks = list(openai_tcp.chat.completions.create(model="gemma", messages=PROMPT, max_tokens=6, temperature=0,
                                                     logprobs=True, stream=True))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    tokens = "".join(entry.token for chunk in chunks if chunk.choices and chunk.choices[0].logprobs
                     for entry in chunk.choices[0].logprobs.content)
    assert tokens == text and text


def test_completion_logprobs_have_openais_legacy_shape(openai_tcp):
    answer = openai_tcp.completions.create(model="gemma", prompt="Once upon a", max_tokens=5, temperature=0,
                                           logprobs=3)
    assert_valid("CreateCompletionResponse", answer.model_dump(mode="json", exclude_unset=True))
    logprobs = answer.choices[0].logprobs
    assert "".join(logprobs.tokens) == answer.choices[0].text
    assert all(len(top) <= 3 and max(top.values()) == pytest.approx(value, abs=1e-6)
               for top, value in zip(logprobs.top_logprobs, logprobs.token_logprobs))
    assert logprobs.text_offset[0] == 0


def test_top_logprobs_needs_logprobs(openai_tcp):
    with pytest.raises(openai.BadRequestError) as refused:
        openai_tcp.chat.completions.create(model="gemma", messages=PROMPT, max_tokens=2, top_logprobs=2)
    assert refused.value.param == "top_logprobs"


# The Responses API -----------------------------------------------------------------

FLAT_WEATHER = {"type": "function", **WEATHER["function"]}


def test_responses_function_calls_round_trip_through_memory(openai_tcp, daemon):
    first = openai_tcp.responses.create(model="gemma", input="Weather in Oslo?", tools=[FLAT_WEATHER],
                                        tool_choice="required", max_output_tokens=60, temperature=0)
    assert_valid("Response", first.model_dump(mode="json", exclude_unset=True))
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER["function"]["parameters"])
    second = openai_tcp.responses.create(model="gemma", previous_response_id=first.id, tools=[FLAT_WEATHER],
                                         input=[{"type": "function_call_output", "call_id": call.call_id,
                                                 "output": "minus 3 and snowing"}], max_output_tokens=6)
    import httpx

    messages = httpx.get(f"{daemon.base_url}/hoshikage/memory/{second.id}/context", timeout=30).json()["messages"]
    assert messages[1]["tool_calls"][0]["id"] == call.call_id
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "minus 3 and snowing"}


def test_responses_stream_function_call_events(openai_tcp):
    with openai_tcp.responses.stream(model="gemma", input="Weather in Rome?", tools=[FLAT_WEATHER],
                                     tool_choice={"type": "function", "name": "get_weather"},
                                     max_output_tokens=60, temperature=0) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[2:6] == ["response.output_item.added", "response.function_call_arguments.delta",
                          "response.function_call_arguments.done", "response.output_item.done"]
    (call,) = final.output
    jsonschema.validate(json.loads(call.arguments), WEATHER["function"]["parameters"])


def test_responses_echo_each_tools_strict_as_the_request_said(openai_tcp):
    tools = [{**FLAT_WEATHER, "strict": True}, {**FLAT_WEATHER, "name": "get_forecast", "strict": False},
             {**FLAT_WEATHER, "name": "get_wind"}]
    response = openai_tcp.responses.create(model="gemma", input="Hi", tools=tools, max_output_tokens=2,
                                           store=False)
    assert [(tool.name, tool.strict) for tool in response.tools] == [
        ("get_weather", True), ("get_forecast", False), ("get_wind", None)]


def test_n_and_seed_keep_working_with_schemas_and_logprobs(openai_tcp):
    request = dict(model="gemma", messages=PROMPT, max_tokens=60, temperature=1.0, seed=42, n=2, logprobs=True,
                   response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMAS[7]}})
    first = openai_tcp.chat.completions.create(**request)
    again = openai_tcp.chat.completions.create(**request)
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    for choice in first.choices:
        jsonschema.validate(json.loads(choice.message.content), SCHEMAS[7])
        assert "".join(entry.token for entry in choice.logprobs.content) == choice.message.content
