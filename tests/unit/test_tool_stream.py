"""Streaming text beside tools: what is sent early is the finished answer's content, never part of a call."""

from __future__ import annotations

import random

import pytest

from hoshikage.engine.tool_stream import ToolTextSplitter
from hoshikage.engine.tools import HERMES, LLAMA3, MISTRAL, parse_calls

NAMES = {"get_weather", "search"}
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
ANSWERS = [
    (HERMES, "The weather in Paris is mild, about 12 °C."),
    (HERMES, "Let me check.\n" + CALL),
    (HERMES, "Let me check. \n\n" + CALL + "\nOne moment.\n" + CALL.replace("Paris", "Lyon")),
    (HERMES, CALL),
    (HERMES, "Use <tool_ a tag like this? No: " + CALL),
    (HERMES, "Checking.\n" + CALL + "\nAnd " + '<tool_call>{"name": "get_weather", "argu'),  # cut by max_tokens
    (HERMES, "I would call <tool_call>nothing useful</tool_call> here."),
    (HERMES, "  \n Leading space, then text.  "),
    (LLAMA3, '{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    (LLAMA3, '{not a call} but text'),
    (LLAMA3, 'Sure.<|python_tag|>{"name": "search", "parameters": {"q": "x"}}'),
    (LLAMA3, "Plain words."),
    (MISTRAL, 'Here.[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]'),
    (MISTRAL, "No call at all."),
]


def _content(family: str, text: str) -> str:
    content, calls = parse_calls(text, family, NAMES)
    return content if calls else text


@pytest.mark.parametrize(("family", "answer"), ANSWERS)
def test_what_streams_is_the_content_however_the_answer_is_split(family, answer):
    chances = random.Random(answer)
    for _ in range(50):
        splitter, sent = ToolTextSplitter(family), ""
        position = 0
        while position < len(answer):
            step = chances.randint(1, 6)
            sent += splitter.feed(answer[position:position + step])
            position += step
        content = _content(family, answer)
        assert sent + splitter.rest(content) == content
        assert "<tool_call" not in sent and "[TOOL_CALLS" not in sent and "<|python" not in sent


def test_text_before_a_call_streams_before_the_call_is_written():
    splitter = ToolTextSplitter(HERMES)
    sent = "".join(splitter.feed(piece) for piece in ["Let", " me", " check", ".", "\n", "<tool", "_call>"])
    assert sent == "Let me check."
    assert splitter.feed('{"name": "get_weather"') == ""


def test_a_marker_split_across_pieces_is_held_until_it_is_decided():
    splitter = ToolTextSplitter(HERMES)
    assert splitter.feed("a <tool") == "a"
    assert splitter.feed("box> b") == " <toolbox> b"


def test_a_forced_call_sends_nothing_early():
    splitter = ToolTextSplitter(HERMES, forced=True)
    assert splitter.feed('{"name": "get_weather", "arguments": {}}') == ""
    assert splitter.rest(None) == ""


def test_content_keeps_text_around_calls_and_a_call_cut_in_half():
    text = "Checking.\n" + CALL + "\nAnd " + '<tool_call>{"name": "get_weather", "argu'
    content, calls = parse_calls(text, HERMES, NAMES)
    assert [call.name for call in calls] == ["get_weather"]
    assert content == 'Checking.\nAnd <tool_call>{"name": "get_weather", "argu'


def test_a_call_cut_by_max_tokens_ends_with_length_and_keeps_the_text():
    from types import SimpleNamespace

    from hoshikage.api.tool_answers import tool_answer
    from hoshikage.engine.tools import Tool

    parsed = SimpleNamespace(forced_call=False, tools=(Tool("get_weather", "", {}),))
    text = "Checking.\n" + CALL + "\nAnd " + '<tool_call>{"name": "get_weather", "argu'
    content, calls, reason = tool_answer({"tool_family": HERMES}, parsed, text, "length")
    assert reason == "length" and [call.name for call in calls] == ["get_weather"]
    assert content.startswith("Checking.") and content.endswith('"argu')
    assert tool_answer({"tool_family": HERMES}, parsed, "Checking.\n" + CALL, "stop")[2] == "tool_calls"
