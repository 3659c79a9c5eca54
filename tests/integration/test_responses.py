"""OpenAI's Responses and Conversations APIs with memory, through the real SDK and daemon."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import openai
import pytest

from tests.conftest import Daemon, register
from tests.memory_corpus import FACTS, conversation
from tests.schema import assert_valid

SHORT = {"model": "gemma", "max_output_tokens": 8, "temperature": 0}


def _context(daemon, some_id: str) -> dict:
    response = httpx.get(f"{daemon.base_url}/hoshikage/memory/{some_id}/context", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _prompt_text(report: dict) -> str:
    return "\n".join(message["content"] for message in report["messages"])


def test_a_chain_of_three_sends_only_the_new_message_and_the_model_sees_the_history(client, daemon):
    first = client.responses.create(input="My name is Aiko.", **SHORT)
    second = client.responses.create(input="I live in Kyoto.", previous_response_id=first.id, **SHORT)
    third = client.responses.create(input="Where do I live?", previous_response_id=second.id, **SHORT)
    for response in (first, second, third):
        assert_valid("Response", response.model_dump(mode="json", exclude_unset=True))
    report = _context(daemon, third.id)
    roles = [message["role"] for message in report["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    prompt = _prompt_text(report)
    assert "My name is Aiko." in prompt and "I live in Kyoto." in prompt
    assert first.output_text in prompt and second.output_text in prompt
    assert not report["compressed"]
    assert third.previous_response_id == second.id
    # As at OpenAI, a chained response's input items are the whole context it was given (issue 23).
    listed = client.responses.input_items.list(third.id, order="asc")
    assert [item.content[0].text for item in listed.data] == [
        "My name is Aiko.", first.output_text, "I live in Kyoto.", second.output_text, "Where do I live?"]
    assert client.responses.retrieve(third.id).output_text == third.output_text
    # Deleting a response in the middle keeps the chain for those continued from it.
    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    fourth = client.responses.create(input="And my name?", previous_response_id=third.id, **SHORT)
    assert "My name is Aiko." in _prompt_text(_context(daemon, fourth.id))
    assert len(client.responses.input_items.list(fourth.id).data) == 7
    with pytest.raises(openai.BadRequestError):  # continuing from the deleted one itself is not possible
        client.responses.create(input="x", previous_response_id=second.id, **SHORT)


def test_a_streamed_response_follows_openais_event_sequence_and_is_stored_before_it_completes(openai_tcp, daemon):
    first = openai_tcp.responses.create(input="Remember the colour teal.", **SHORT)
    body = {**SHORT, "input": "Which colour?", "previous_response_id": first.id, "stream": True}
    events = []
    with httpx.stream("POST", f"{daemon.base_url}/v1/responses", json=body, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line.removeprefix("data: "))
                events.append(event)
                if event["type"] in ("response.completed", "response.incomplete"):
                    # The stream is still open: the turn must already be on disk.
                    stored = httpx.get(f"{daemon.base_url}/v1/responses/{event['response']['id']}", timeout=30)
                    assert stored.status_code == 200
                    assert stored.json()["output"] == event["response"]["output"]
    kinds = [event["type"] for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    for event in events:
        assert_valid("ResponseStreamEvent", event)
    text = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == text


def test_the_sdk_stream_helper_sees_the_text_that_is_stored(openai_tcp):
    with openai_tcp.responses.stream(input="Say something.", model="gemma", max_output_tokens=6) as stream:
        events = list(stream)
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas and deltas == openai_tcp.responses.retrieve(events[0].response.id).output_text


def test_conversations_hold_items_and_responses_append_to_them(client):
    created = client.conversations.create(metadata={"project": "test"},
                                          items=[{"role": "user", "content": "Our code word is heron."}])
    assert_valid("ConversationResource", created.model_dump(mode="json"))
    response = client.responses.create(input="What is the code word?", conversation=created.id, **SHORT)
    assert response.conversation.id == created.id
    items = client.conversations.items.list(created.id, order="asc")
    assert_valid("ConversationItemList", items.model_dump(mode="json", exclude_unset=True))
    assert [(item.role, item.content[0].text) for item in items.data] == [
        ("user", "Our code word is heron."), ("user", "What is the code word?"),
        ("assistant", response.output_text)]
    assert client.conversations.retrieve(created.id).metadata == {"project": "test"}
    deleted = client.conversations.delete(created.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(created.id)


def test_one_item_of_a_conversation_is_retrieved_by_id(openai_tcp):
    created = openai_tcp.conversations.create(items=[{"role": "user", "content": "Our code word is egret."}])
    response = openai_tcp.responses.create(input="And the code word?", conversation=created.id, **SHORT)
    items = openai_tcp.conversations.items.list(created.id, order="asc").data
    for item in items:
        fetched = openai_tcp.conversations.items.retrieve(item.id, conversation_id=created.id)
        assert fetched.model_dump() == item.model_dump()
    assert items[-1].id == response.output[0].id
    with pytest.raises(openai.NotFoundError):
        openai_tcp.conversations.items.retrieve("msg_nope", conversation_id=created.id)
    with pytest.raises(openai.NotFoundError):
        openai_tcp.conversations.items.retrieve(items[0].id, conversation_id="conv_" + "2" * 32)


def test_two_concurrent_turns_on_one_conversation_are_both_stored_each_in_one_piece(openai_tcp):
    created = openai_tcp.conversations.create()
    questions = ["First question?", "Second question?"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda text: openai_tcp.responses.create(
            input=text, conversation=created.id, **SHORT), questions))
    items = openai_tcp.conversations.items.list(created.id, order="asc").data
    assert len(items) == 4
    pairs = [(items[0].content[0].text, items[1].content[0].text), (items[2].content[0].text,
                                                                     items[3].content[0].text)]
    expected = {(question, answer.output_text) for question, answer in zip(questions, answers)}
    assert set(pairs) == expected


def test_store_false_keeps_nothing(openai_tcp):
    response = openai_tcp.responses.create(input="Do not remember this.", store=False, **SHORT)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        openai_tcp.responses.retrieve(response.id)


def test_delete_response(openai_tcp):
    response = openai_tcp.responses.create(input="Short-lived.", **SHORT)
    openai_tcp.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        openai_tcp.responses.retrieve(response.id)


@pytest.mark.parametrize("stream", [False, True])
def test_an_unknown_previous_response_is_400_previous_response_not_found(openai_tcp, stream):
    with pytest.raises(openai.BadRequestError) as raised:
        openai_tcp.responses.create(input="x", previous_response_id="resp_unknown", stream=stream, **SHORT)
    assert (raised.value.code, raised.value.param) == ("previous_response_not_found", "previous_response_id")


@pytest.mark.parametrize(("call", "status", "param"), [
    (lambda c: c.responses.retrieve("resp_" + "0" * 48), 404, None),
    (lambda c: c.responses.create(input="x", previous_response_id="resp_unknown", **SHORT), 400,
     "previous_response_id"),  # OpenAI: 400 previous_response_not_found (issue 23)
    (lambda c: c.responses.create(input="x", conversation="conv_" + "1" * 32, **SHORT), 404, "conversation"),
    (lambda c: c.conversations.retrieve("conv_unknown"), 404, None),
    (lambda c: c.responses.create(input="x", previous_response_id="resp_a", conversation="conv_b", **SHORT), 400,
     "previous_response_id"),
    (lambda c: c.responses.create(model="gemma", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}]), 400, "input[0].content[1]"),
    (lambda c: c.responses.create(model="gemma"), 400, "input"),
    (lambda c: c.responses.create(model="gemma", input="x", tools=[{"type": "web_search"}]), 400, "tools[0]"),
    (lambda c: c.responses.create(model="gemma", input="x", tool_choice="required"), 400, "tool_choice"),
    (lambda c: c.responses.create(model="nope", input="x"), 404, "model"),
])
def test_errors_are_openai_shaped(openai_tcp, call, status, param):
    with pytest.raises(openai.APIStatusError) as raised:
        call(openai_tcp)
    assert raised.value.status_code == status
    assert_valid("ErrorResponse", raised.value.response.json())
    assert raised.value.response.json()["error"]["param"] == param


def test_a_chat_ten_times_the_context_is_summarised_when_asked_and_refused_otherwise(openai_tcp):
    messages = conversation(300) + [{"role": "user", "content": FACTS[0].question}]
    with pytest.raises(openai.BadRequestError) as refused:
        openai_tcp.chat.completions.create(model="gemma", messages=messages, max_tokens=8)
    assert refused.value.code == "context_length_exceeded"
    answered = openai_tcp.chat.completions.create(model="gemma", messages=messages, max_tokens=8,
                                                  extra_body={"memory_overflow": "summarize"})
    assert answered.choices[0].finish_reason in ("stop", "length")
    assert 1000 < answered.usage.prompt_tokens < 2048


def test_a_fact_stated_early_is_recalled_when_asked_in_other_words(openai_tcp, daemon):
    history = conversation(300)  # ten times the 2048-token context
    fact = FACTS[2]
    created = openai_tcp.conversations.create(items=history[:100])
    openai_tcp.conversations.items.create(created.id, items=history[100:])
    response = openai_tcp.responses.create(input=fact.question, conversation=created.id, **SHORT)
    report = _context(daemon, response.id)
    assert report["compressed"] and report["response_id"] == response.id
    assert report["prompt_tokens"] <= report["budget_tokens"]
    assert any(fact.answer in passage for passage in report["recalled_passages"])
    assert fact.answer in _prompt_text(report)
    assert not any(fact.answer in message["content"] for message in history[-40:])  # not just verbatim
    assert 0 < len(report["summary_sentences"]) <= 20
    # One log line per request says how its context was made (journald fields under systemd).
    line = next(line for line in daemon.log_text().splitlines() if created.id in line and "POST /v1/responses" in line)
    assert f"memory_summary_sentences={len(report['summary_sentences'])}" in line
    assert f"memory_recalled_passages={len(report['recalled_passages'])}" in line
    assert f"memory_verbatim_turns={report['verbatim_turns']}" in line


def test_compact_on_a_history_that_fits_returns_an_empty_note_that_adds_nothing(openai_tcp):
    first = openai_tcp.responses.create(input="Our code word is ibis.", **SHORT)
    ask = [{"role": "user", "content": "And the code word?"}]
    compacted = openai_tcp.responses.with_raw_response.compact(
        model="gemma", previous_response_id=first.id, input=ask).http_response.json()
    # As at OpenAI (and in the Open Responses suite), the window starts with its compaction item; nothing was
    # compressed, so its note is empty and the items all follow.
    assert [item["type"] for item in compacted["output"]] == ["compaction", "message", "message", "message"]
    assert compacted["output"][0]["encrypted_content"] == ""
    # Sent back, the empty note adds nothing to the prompt: the window reads as its items alone.
    plain = openai_tcp.responses.create(input=compacted["output"][1:], store=False, **SHORT)
    noted = openai_tcp.responses.create(input=compacted["output"], store=False, **SHORT)
    assert noted.usage.input_tokens == plain.usage.input_tokens
    alone = openai_tcp.responses.create(input=[{"type": "compaction", "encrypted_content": ""}], store=False, **SHORT)
    assert alone.status in ("completed", "incomplete")  # nothing else to read: still answered, as before


def test_compact_returns_the_window_memory_would_give_the_model(openai_tcp):
    history = conversation(300)
    first = openai_tcp.responses.create(input=history, **SHORT)
    raw = openai_tcp.responses.with_raw_response.compact(
        model="gemma", previous_response_id=first.id, input=[{"role": "user", "content": FACTS[4].question}])
    compacted = raw.http_response.json()  # the SDK's models would read user items as output messages
    assert_valid("CompactResource", compacted)
    note, *rest = compacted["output"]
    assert note["type"] == "compaction" and FACTS[4].answer in note["encrypted_content"]
    assert rest[-1]["content"][0]["text"] == FACTS[4].question
    assert len(rest) < len(history)
    # The compacted window is usable as the next input as it is.
    reused = openai_tcp.responses.create(input=compacted["output"], store=False, **SHORT)
    assert reused.status in ("completed", "incomplete")


def test_the_echoed_text_format_has_every_field_openai_echoes(openai_tcp):
    schema = {"type": "object", "properties": {"word": {"type": "string", "maxLength": 8}}, "required": ["word"],
              "additionalProperties": False}
    answer = openai_tcp.responses.create(input="A word?", store=False, text={"format": {
        "type": "json_schema", "name": "word", "schema": schema}}, **SHORT)
    assert answer.to_dict()["text"]["format"] == {"type": "json_schema", "name": "word", "description": None,
                                                  "schema": schema, "strict": False}
    described = openai_tcp.responses.create(input="A word?", store=False, text={"format": {
        "type": "json_schema", "name": "word", "schema": schema, "description": "one word", "strict": True}}, **SHORT)
    assert (described.text.format.description, described.text.format.strict) == ("one word", True)


def test_an_answer_cut_by_its_limit_says_which_limit(openai_tcp):
    cut = openai_tcp.responses.create(input="Tell me a long story.", store=False, model="gemma", max_output_tokens=3,
                                      extra_body={"ignore_eos": True})
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.incomplete_details.model_extra["cause"] == "max_output_tokens"


def test_a_function_call_output_must_answer_a_call(openai_tcp):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_tcp.responses.create(input=[{"type": "function_call_output", "call_id": "call_x", "output": "42"}],
                                    store=False, **SHORT)
    assert caught.value.body["param"] == "input[0]" and "call_x" in caught.value.body["message"]
    answered = openai_tcp.responses.create(input=[
        {"type": "function_call", "call_id": "call_x", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_x", "output": "42"}], store=False, **SHORT)
    assert answered.status in ("completed", "incomplete")


def test_an_answer_cut_by_the_context_or_the_daemons_default_says_so(tmp_path, gemma_path):
    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "256")
    running = Daemon(tmp_path, {"HOSHIKAGE_DEFAULT_MAX_TOKENS": "200"}, "--no-embedded-model")
    try:
        with openai.OpenAI(base_url=f"{running.base_url}/v1", api_key="unused", max_retries=0) as client:
            endless = {"model": "gemma", "store": False, "extra_body": {"ignore_eos": True}}
            short = client.responses.create(input="Tell me a story.", **endless)
            # About 100 prompt tokens: fewer than 200 left in the context, and within memory's prompt budget.
            long = client.responses.create(input="Tell me a story. " + "Once upon a time. " * 16, **endless)
    finally:
        running.stop()
    assert short.usage.output_tokens == 200 and short.incomplete_details.model_extra["cause"] == "default_max_tokens"
    assert 56 < long.usage.input_tokens
    assert long.usage.input_tokens + long.usage.output_tokens == 256  # the context ran out before the default
    assert long.incomplete_details.reason == "max_output_tokens"  # what OpenAI's clients know
    assert long.incomplete_details.model_extra["cause"] == "context_window"
