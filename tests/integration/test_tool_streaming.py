"""Text streams while tools are offered, on all three surfaces, and says what the answer unstreamed says (issue 24).

Open WebUI sends its built-in tools with every chat; before, an answer to a request with tools arrived as one
chunk at the end. The model here answers in words (greedy), so its text must come in many chunks, before the
answer ends, and add up to the same content as the whole answer.
"""

from __future__ import annotations

import ollama
import pytest

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string"}}, "required": ["city"]}}}
ASK = [{"role": "user", "content": "Write two sentences about the history of bread."}]
TOKENS = 40


@pytest.fixture(scope="module")
def whole(openai_tcp):
    """The same request unstreamed: plain text, no call (else this test's premise is wrong)."""
    answer = openai_tcp.chat.completions.create(model="gemma", messages=ASK, tools=[WEATHER], max_tokens=TOKENS,
                                                temperature=0)
    message = answer.choices[0].message
    assert not message.tool_calls and len(message.content) > 40, message
    return message.content


def test_chat_completions_streams_text_beside_tools(openai_tcp, whole):
    stream = openai_tcp.chat.completions.create(model="gemma", messages=ASK, tools=[WEATHER], max_tokens=TOKENS,
                                                temperature=0, stream=True)
    deltas, finish = [], []
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                assert not finish, "text after the finish"
                deltas.append(choice.delta.content)
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    assert len(deltas) >= 10, deltas  # token by token, not one chunk at the end
    assert "".join(deltas) == whole and finish == ["length"]


def test_responses_streams_text_beside_tools(openai_tcp, whole):
    tool = {"type": "function", **WEATHER["function"]}
    events = list(openai_tcp.responses.create(model="gemma", input=ASK, tools=[tool], max_output_tokens=TOKENS,
                                              temperature=0, store=False, stream=True))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    kinds = [event.type for event in events]
    assert len(deltas) >= 10, kinds
    assert kinds.index("response.output_item.added") < kinds.index("response.output_text.delta")
    assert "".join(deltas) == whole == events[-1].response.output_text


def test_ollama_chat_streams_text_beside_tools(daemon, whole):
    with ollama.Client(host=daemon.base_url) as client:
        parts = list(client.chat(model="gemma", messages=ASK, tools=[WEATHER], stream=True,
                                 options={"temperature": 0, "num_predict": TOKENS}))
    texts = [part.message.content for part in parts if part.message.content]
    assert len(texts) >= 10 and all(not part.done for part in parts[:-1]) and parts[-1].done
    assert "".join(texts) == whole and not parts[-1].message.tool_calls
