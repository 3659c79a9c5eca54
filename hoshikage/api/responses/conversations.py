"""OpenAI's Conversations API over the memory store, and Hoshikage's view of what a model was given.

A conversation is a durable list of items; a response created with
``conversation`` reads all of them and appends its input and output. DELETE
forgets it for good (memory/store.py: nothing stays on disk).

``GET /hoshikage/memory/{id}/context`` (a conversation id: its latest
response; or a response id) shows the context that response's model was
given: the verbatim turns, the summary sentences, the recalled passages and
the token counts. ``hoshikage memory context ID`` prints the same.

``/hoshikage/memory`` (GET: list, DELETE: forget all) and ``/hoshikage/memory/{id}``
(GET: show, DELETE: forget) are what ``hoshikage memory`` asks when its user
cannot read the store. Each sees what the caller owns (an admin: everything),
like every memory endpoint: memory_access.call hands them the identity's view.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hoshikage.api.http import keys
from hoshikage.api.http.body import read_json
from hoshikage.api.http.errors import APIError, invalid
from hoshikage.api.memory_access import call, store_method
from hoshikage.api.responses.items import list_page, stored_item
from hoshikage.api.responses.protocol import parse_input, parse_metadata
from hoshikage.memory.store import ConversationInfo, NotFound, Store, conversation_key, response_key


def conversation_object(info: ConversationInfo) -> dict[str, Any]:
    return {"id": info.id, "object": "conversation", "created_at": info.created_at, "metadata": info.metadata}


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object")
    return body


def _create(store: Store, metadata: dict[str, str], items) -> ConversationInfo:
    info = store.create_conversation(metadata, implicit=False)
    if items:
        store.append(info.id, [(message.role, message.text, stored_item(message.item)) for message in items])
    return info


async def create_conversation(request: web.Request) -> web.Response:
    body = await _body(request)
    items = parse_input(body.get("items"), required=False, param="items")
    info = await call(request, _create, parse_metadata(body.get("metadata")), items)
    return web.json_response(conversation_object(info))


async def get_conversation(request: web.Request) -> web.Response:
    info = await call(request, store_method("conversation"), request.match_info["conversation_id"])
    return web.json_response(conversation_object(info))


async def update_conversation(request: web.Request) -> web.Response:
    body = await _body(request)
    if "metadata" not in body:
        raise invalid("'metadata' is required", param="metadata")
    info = await call(request, store_method("update_metadata"), request.match_info["conversation_id"],
                      parse_metadata(body.get("metadata")))
    return web.json_response(conversation_object(info))


async def delete_conversation(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    memory = request.app[keys.MEMORY]
    await call(request, memory.forget, conversation_id)
    return web.json_response({"id": conversation_id, "object": "conversation.deleted", "deleted": True})


def _items(store: Store, conversation_id: str) -> list[dict[str, Any]]:
    store.conversation(conversation_id)
    return [turn.item for turn in store.turns(conversation_id)]


async def list_items(request: web.Request) -> web.Response:
    items = await call(request, _items, request.match_info["conversation_id"])
    return web.json_response(list_page(request, items))


def _item(store: Store, conversation_id: str, item_id: str) -> dict[str, Any] | None:
    return next((item for item in _items(store, conversation_id) if item.get("id") == item_id), None)


async def get_item(request: web.Request) -> web.Response:
    item_id = request.match_info["item_id"]
    item = await call(request, _item, request.match_info["conversation_id"], item_id)
    if item is None:
        raise APIError(404, f"No item found with id '{item_id}' in this conversation", code="not_found")
    return web.json_response(item)


def _add_items(store: Store, conversation_id: str, messages) -> list[dict[str, Any]]:
    store.conversation(conversation_id)
    rows = [(message.role, message.text, stored_item(message.item)) for message in messages]
    store.append(conversation_id, rows)
    return [row[2] for row in rows]


async def add_items(request: web.Request) -> web.Response:
    body = await _body(request)
    messages = parse_input(body.get("items"), param="items")
    added = await call(request, _add_items, request.match_info["conversation_id"], messages)
    return web.json_response({"object": "list", "data": added, "first_id": added[0]["id"],
                              "last_id": added[-1]["id"], "has_more": False})


def context_report(store: Store, some_id: str) -> dict[str, Any]:
    """What the model was given for a response (or a conversation's latest response)."""
    if conversation_key(some_id):
        store.conversation(some_id)
        responses = store.responses(some_id)
        if not responses:
            raise NotFound(some_id)
        response_id = responses[-1]["id"]
    elif response_key(some_id):
        response_id = some_id
    else:
        raise NotFound(some_id)
    record = store.response(response_id)
    return {"object": "hoshikage.memory.context", "conversation_id": record["conversation_id"],
            "response_id": response_id, **(record["context"] or {})}


async def memory_context(request: web.Request) -> web.Response:
    report = await call(request, context_report, request.match_info["id"], kind="conversation or response")
    return web.json_response(report)


def _conversation_of(store: Store, some_id: str) -> str:
    """The conversation SOME_ID names: itself, or a response's."""
    if response_key(some_id):
        return store.response(some_id)["conversation_id"]
    store.conversation(some_id)
    return some_id


def shown_conversation(store: Store, some_id: str) -> dict[str, Any]:
    info = store.conversation(_conversation_of(store, some_id))
    return {**conversation_object(info), "owner": info.owner, "last_used": info.last_used,
            "turns": [{"position": turn.position, "role": turn.role, "text": turn.text}
                      for turn in store.turns(info.id)]}


def _forget_one(store: Store, memory, some_id: str) -> str:
    conversation_id = _conversation_of(store, some_id)
    memory.forget(store, conversation_id)
    return conversation_id


def _forget_all(store: Store, memory) -> int:
    count = len(store.conversations())
    memory.forget(store, None)
    return count


async def memory_list(request: web.Request) -> web.Response:
    from hoshikage.memory.ownership import listing

    return web.json_response({"object": "list", "data": await call(request, listing)})


async def memory_show(request: web.Request) -> web.Response:
    shown = await call(request, shown_conversation, request.match_info["id"], kind="conversation or response")
    return web.json_response(shown)


async def memory_forget(request: web.Request) -> web.Response:
    conversation_id = await call(request, _forget_one, request.app[keys.MEMORY], request.match_info["id"],
                                 kind="conversation or response")
    return web.json_response({"id": conversation_id, "object": "conversation.deleted", "deleted": True})


async def memory_forget_all(request: web.Request) -> web.Response:
    count = await call(request, _forget_all, request.app[keys.MEMORY])
    return web.json_response({"object": "hoshikage.memory.forgotten", "forgotten": count})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/conversations", create_conversation)
    app.router.add_get("/v1/conversations/{conversation_id}", get_conversation)
    app.router.add_post("/v1/conversations/{conversation_id}", update_conversation)
    app.router.add_delete("/v1/conversations/{conversation_id}", delete_conversation)
    app.router.add_get("/v1/conversations/{conversation_id}/items", list_items)
    app.router.add_post("/v1/conversations/{conversation_id}/items", add_items)
    app.router.add_get("/v1/conversations/{conversation_id}/items/{item_id}", get_item)
    app.router.add_get("/hoshikage/memory/{id}/context", memory_context)
    app.router.add_get("/hoshikage/memory", memory_list)
    app.router.add_delete("/hoshikage/memory", memory_forget_all)
    app.router.add_get("/hoshikage/memory/{id}", memory_show)
    app.router.add_delete("/hoshikage/memory/{id}", memory_forget)
