"""Reading a finished answer to a request with tools: content, tool calls, and why it ended."""

from __future__ import annotations

from aiohttp import web


def tool_answer(request: web.Request, parsed, text: str, finish_reason: str):
    """(content or None, tool calls, finish_reason) of a finished answer to a request with tools.

    An answer cut off by max_tokens ends with "length" even when it holds whole calls: they are returned with
    the text around them, and a call cut in half stays in the content (OpenAI's way: content and tool_calls
    together; nothing the model wrote is dropped without saying so)."""
    from hoshikage.engine.tools import parse_calls, parse_forced

    if parsed.forced_call and finish_reason != "length":  # the grammar made it parse
        return None, parse_forced(text), "tool_calls"
    if parsed.forced_call:
        return text, [], finish_reason  # cut off by max_tokens before the call was complete
    content, calls = parse_calls(text, tool_family(request), {tool.name for tool in parsed.tools})
    if calls:
        return (content or None), calls, ("length" if finish_reason == "length" else "tool_calls")
    return text, [], finish_reason


def tool_family(request: web.Request) -> str:
    """The tool-call syntax of the model answering REQUEST (set when its prompt was built)."""
    return request.get("tool_family", "hermes")


def text_splitter(request: web.Request, parsed):
    """What streams the text of an answer to PARSED while a call may still come (engine/tool_stream.py)."""
    from hoshikage.engine.tool_stream import ToolTextSplitter

    return ToolTextSplitter(tool_family(request), forced=parsed.forced_call)
