"""Reading a finished answer to a request with tools: content, tool calls, and why it ended."""

from __future__ import annotations

from aiohttp import web


def tool_answer(request: web.Request, parsed, text: str, finish_reason: str):
    """(content or None, tool calls, finish_reason) of a finished answer to a request with tools."""
    from hoshikage.engine.tools import parse_calls, parse_forced

    if parsed.forced_call and finish_reason != "length":  # the grammar made it parse
        return None, parse_forced(text), "tool_calls"
    if parsed.forced_call:
        return text, [], finish_reason  # cut off by max_tokens before the call was complete
    content, calls = parse_calls(text, request.get("tool_family", "hermes"), {tool.name for tool in parsed.tools})
    if calls:
        return (content or None), calls, "tool_calls"
    return text, [], finish_reason
