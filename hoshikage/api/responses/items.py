"""Items as the Responses and Conversations APIs show them, and their paginated lists."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from hoshikage.api.http.errors import invalid

MAX_PAGE = 100
DEFAULT_PAGE = 20


def text_part(role: str, text: str) -> dict[str, Any]:
    """A message's text as a content part: output_text (with its annotations) for the assistant."""
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "input_text", "text": text}


def message_item(item_id: str, role: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": role, "content": [text_part(role, text)]}


def stored_item(item: dict[str, Any]) -> dict[str, Any]:
    """An input item with the id and status it is stored under."""
    if item.get("type") in ("function_call", "function_call_output"):
        prefix = "fc_" if item["type"] == "function_call" else "fco_"
        return {"id": prefix + uuid.uuid4().hex, **item}
    return {"id": "msg_" + uuid.uuid4().hex, "type": "message", "status": "completed",
            "role": item["role"], "content": item["content"]}


def function_call_item(call, status: str = "completed") -> dict[str, Any]:
    return {"id": "fc_" + uuid.uuid4().hex, "type": "function_call", "status": status, "call_id": call.id,
            "name": call.name, "arguments": call.arguments}


def list_page(request: web.Request, items: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenAI's list object over ITEMS (oldest first), by the query's order (default desc), after and limit."""
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid("'order' must be 'asc' or 'desc'", param="order")
    limit_text = request.query.get("limit", str(DEFAULT_PAGE))
    # ASCII digits only: str.isdigit() takes "²", which int() refuses.
    if not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 3
            and 1 <= int(limit_text) <= MAX_PAGE):
        raise invalid(f"'limit' must be an integer from 1 to {MAX_PAGE}", param="limit")
    ordered = list(reversed(items)) if order == "desc" else list(items)
    after = request.query.get("after")
    if after:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise invalid(f"'after' names no item of this list: {after!r}", param="after")
        ordered = ordered[ids.index(after) + 1:]
    page = ordered[:int(limit_text)]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(ordered) > len(page)}
