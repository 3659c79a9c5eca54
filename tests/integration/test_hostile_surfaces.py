"""One request never kills, wedges or garbles the daemon, on the newer surfaces too (issue 21).

Each case here once took the daemon down (a schema whose grammar overflowed
llama.cpp's parser stack), wedged a model (an enum of thousands of values), or
answered 500 (schema keywords of the wrong type, lone surrogates, a query's
``limit=²``, ChromaDB asked to embed with its own model). Through the clients
people use (the OpenAI SDK, the ollama client) and raw requests where the
bytes are the point; after each, the daemon must still answer.
"""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest

# Greedy: a sampled first token may end the answer at once (0 tokens), which says nothing about health.
HEALTHY = {"model": "gemma", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}

# Schemas whose grammar would be too large or too slow, or that are no JSON Schema at all.
COSTLY = {
    "maxItems 30000": ({"type": "array", "items": {"type": "string"}, "maxItems": 30000}, "maxItems"),
    "maxItems 1e9": ({"type": "array", "items": {"type": "string"}, "maxItems": 1000000000}, "maxItems"),
    "maxLength 100000": ({"type": "string", "maxLength": 100000}, "maxLength"),
    "pattern a{1,50000}": ({"type": "string", "pattern": "^a{1,50000}$"}, "pattern"),
    "enum of 10000": ({"type": "string", "enum": [f"value number {index}" for index in range(10000)]}, "enum"),
    "1000 optional properties": ({"type": "object", "properties": {f"p{index}": {"type": "string"}
                                                                   for index in range(1000)}}, "properties"),
    "nested 40 deep": (json.loads('{"type": "array", "items": ' * 40 + '{"type": "string"}' + "}" * 40),
                       "levels deep"),
}
NOT_A_SCHEMA = {
    "properties: x": {"type": "object", "properties": "x"},
    "anyOf: 5": {"anyOf": 5},
    "prefixItems: 5": {"type": "array", "prefixItems": 5},
    "items: [1]": {"type": "array", "items": [1]},
    "pattern: 5": {"type": "string", "pattern": 5},
    "required: 7": {"type": "object", "required": 7},
}
ALL_BAD = {**{name: schema for name, (schema, _) in COSTLY.items()}, **NOT_A_SCHEMA}


def assert_healthy(openai_tcp) -> None:
    answer = openai_tcp.chat.completions.create(**HEALTHY)
    assert answer.usage.completion_tokens >= 1


@pytest.mark.parametrize("name", list(COSTLY))
def test_a_costly_schema_is_refused_naming_the_keyword_and_the_limit(openai_tcp, name):
    schema, keyword = COSTLY[name]
    with pytest.raises(openai.BadRequestError) as caught:
        openai_tcp.responses.create(model="gemma", input="Hi", max_output_tokens=2, store=False, text={
            "format": {"type": "json_schema", "name": "x", "schema": schema}})
    error = caught.value.body
    assert error["code"] == "unsupported_schema" and error["param"] == "text.format", error
    assert keyword in error["message"] and ("limit" in error["message"] or "deep" in error["message"]), error
    assert_healthy(openai_tcp)


@pytest.mark.parametrize("name", list(ALL_BAD))
def test_every_surface_that_takes_a_schema_refuses_it_with_a_400(openai_tcp, daemon, name):
    schema = ALL_BAD[name]
    with pytest.raises(openai.BadRequestError) as caught:
        openai_tcp.chat.completions.create(**HEALTHY, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert caught.value.body["code"] == "unsupported_schema"
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    with pytest.raises(openai.BadRequestError) as caught:
        openai_tcp.chat.completions.create(**HEALTHY, tools=[tool])
    assert caught.value.body["code"] == "unsupported_schema"
    with pytest.raises(openai.BadRequestError) as caught:
        openai_tcp.responses.create(model="gemma", input="Hi", max_output_tokens=2, store=False, tools=[
            {"type": "function", "name": "f", "parameters": schema}])
    assert caught.value.body["code"] == "unsupported_schema"
    with ollama.Client(host=daemon.base_url) as client, pytest.raises(ollama.ResponseError) as refused:
        client.chat(model="gemma", messages=[{"role": "user", "content": "Hi"}], format=schema,
                    options={"num_predict": 2})
    assert refused.value.status_code == 400
    assert_healthy(openai_tcp)


def test_not_a_schema_names_the_place_in_it(openai_tcp):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_tcp.chat.completions.create(**HEALTHY, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {
                "type": "object", "properties": {"a": {"type": "string", "pattern": 5}}}}})
    assert "schema.properties.a" in caught.value.body["message"] and "not valid JSON Schema" in \
        caught.value.body["message"]


# A lone surrogate as a JSON escape, and as the raw bytes Python's JSON parser lets through.
SURROGATES = {"escaped": b'"a\\ud800"', "raw bytes": b'"a\xed\xa0\x80"'}
SURROGATE_BODIES = {
    "/v1/responses metadata (stream)": ("/v1/responses", b'{"model":"gemma","input":"Hi","max_output_tokens":2,'
                                                         b'"stream":true,"metadata":{"k":%s}}', "metadata.k"),
    "/v1/responses input": ("/v1/responses", b'{"model":"gemma","input":%s,"max_output_tokens":2}', "input"),
    "/v1/chat/completions": ("/v1/chat/completions",
                             b'{"model":"gemma","messages":[{"role":"user","content":%s}],"max_tokens":2}',
                             "messages[0].content"),
    "/v1/embeddings": ("/v1/embeddings", b'{"model":"gemma","input":[%s]}', "input[0]"),
    "/api/embed": ("/api/embed", b'{"model":"gemma","input":%s}', "input"),
    "/v1/conversations": ("/v1/conversations", b'{"metadata":{"topic":%s}}', "metadata.topic"),
    "/v1/responses/compact": ("/v1/responses/compact", b'{"model":"gemma","input":%s}', "input"),
    "a key": ("/v1/chat/completions", b'{"model":"gemma","messages":[],%s:1}', "body (a key)"),
}


@pytest.mark.parametrize("how", list(SURROGATES))
@pytest.mark.parametrize("case", list(SURROGATE_BODIES))
def test_a_lone_surrogate_is_a_400_naming_the_field_on_every_surface(daemon, openai_tcp, case, how):
    path, template, field = SURROGATE_BODIES[case]
    answer = httpx.post(daemon.base_url + path, content=template % SURROGATES[how],
                        headers={"Content-Type": "application/json"}, timeout=60)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    if path.startswith("/api/"):  # Ollama's shape
        assert "lone surrogate" in error
    else:
        assert error["code"] == "invalid_unicode" and error["param"] == field, error
    assert_healthy(openai_tcp)


@pytest.mark.parametrize("limit", ["%C2%B2", "0", "101", "-1", "1e3", "9" * 5000, "x"])
def test_a_bad_limit_is_a_400(daemon, openai_tcp, limit):
    conversation = openai_tcp.conversations.create()
    answer = httpx.get(f"{daemon.base_url}/v1/conversations/{conversation.id}/items?limit={limit}", timeout=30)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "limit", answer.text
    assert httpx.get(f"{daemon.base_url}/v1/conversations/{conversation.id}/items?limit=5",
                     timeout=30).status_code == 200


def test_updating_a_conversations_metadata_works(openai_tcp):
    conversation = openai_tcp.conversations.create(metadata={"topic": "lighthouses"})
    updated = openai_tcp.conversations.update(conversation.id, metadata={"topic": "harbours"})
    assert updated.metadata == {"topic": "harbours"}
    assert openai_tcp.conversations.retrieve(conversation.id).metadata == {"topic": "harbours"}
