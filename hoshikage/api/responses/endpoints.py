"""OpenAI's Responses API, stateful through conversation memory.

``POST /v1/responses`` answers like Chat Completions, but the history can come
from the store: ``previous_response_id`` (the chain of responses that led to
it) or ``conversation`` (every item of a conversation). A stored answer is on
disk before the response ends: the JSON body, or the ``response.completed``
event, is sent only after the store has written the turn. A history longer
than the context is compressed by memory (summary + recall, memory/context.py)
instead of refused. GET/DELETE /v1/responses/{id}, its input items, and
/v1/responses/compact (the window memory would give the model, as items)
complete the surface; /hoshikage/memory/{id}/context shows what a response's
model was given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hoshikage.api.generation import parse_body, run_generation, scheduler_for
from hoshikage.api.http import keys
from hoshikage.api.http.body import read_json, read_json_object
from hoshikage.api.http.errors import APIError, invalid
from hoshikage.api.http.sse import open_event_stream
from hoshikage.api.memory_access import assemble_context, call, memory_log_fields, store_method
from hoshikage.api.responses.items import function_call_item, list_page, message_item, stored_item
from hoshikage.api.responses.protocol import (ResponsesRequest, format_echo, item_message, parse_input,
                                              parse_responses_request)
from hoshikage.api.tool_answers import text_splitter, tool_answer
from hoshikage.engine.llama import Chunk
from hoshikage.memory import context
from hoshikage.memory.service import HistoryTurn
from hoshikage.memory.store import Store, new_conversation_id, new_response_id

EventSender = Callable[..., Awaitable[None]]  # send(kind, **fields): one streamed event


# History ----------------------------------------------------------------------

def _chain_history(store: Store, response_id: str):
    """(conversation id, turns) of the chain of responses ending at RESPONSE_ID, oldest first."""
    record = store.response(response_id)
    conversation_id = record["conversation_id"]
    return conversation_id, _turns_at(store, conversation_id, _chain_positions(store, conversation_id,
                                                                                response_id))


def _chain_positions(store: Store, conversation_id: str, response_id: str | None) -> list[int]:
    """The turn positions of the chain ending at RESPONSE_ID (inputs and outputs), oldest first. Deleted
    responses keep their link: deleting one in the middle does not cut the chain."""
    parents = {item["id"]: item for item in store.responses(conversation_id, deleted=True)}
    chain, current = [], response_id
    while current and current in parents and len(chain) <= len(parents):
        chain.append(current)
        current = parents[current]["parent"]
    return [position for rid in reversed(chain) for position in parents[rid]["positions"]]


def _turns_at(store: Store, conversation_id: str, positions: list[int]):
    by_position = {turn.position: turn for turn in store.turns(conversation_id)}
    return [by_position[position] for position in positions if position in by_position]


def _history(turns, messages) -> list[HistoryTurn]:
    """Stored turns, then the request's input, as memory and the prompt read them."""
    return ([HistoryTurn(turn.role, turn.text, turn.position, item_message(turn.role, turn.text, turn.item))
             for turn in turns]
            + [HistoryTurn(message.role, message.text, None, message.message) for message in messages])


def _open(store: Store) -> None:
    """Nothing: calling it opens the store."""


def _conversation_history(store: Store, conversation_id: str):
    store.conversation(conversation_id)
    return store.turns(conversation_id)


def _record(store: Store, conversation_id: str, create: bool, items, response: dict[str, Any], parent: str | None,
            input_count: int, report: dict[str, Any]) -> None:
    if create:
        store.create_conversation({}, implicit=True, conversation_id=conversation_id)
    store.append(conversation_id, items, response, parent, input_count, report)


# The response object ------------------------------------------------------------

def response_object(parsed: ResponsesRequest, response_id: str, created_at: int, *, status: str,
                    output: list[dict[str, Any]], usage: dict[str, Any] | None = None,
                    incomplete_details: dict[str, str] | None = None, explicit_conversation: str | None = None
                    ) -> dict[str, Any]:
    """Every field OpenAI's schema and the Open Responses spec require, nullable ones as null."""
    sampling = parsed.sampling
    return {
        "id": response_id, "object": "response", "created_at": created_at,
        "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
        "status": status, "error": None, "incomplete_details": incomplete_details,
        "instructions": parsed.instructions, "model": parsed.model, "output": output,
        "previous_response_id": parsed.previous_response_id,
        "conversation": {"id": explicit_conversation} if explicit_conversation else None,
        "max_output_tokens": parsed.max_tokens, "max_tool_calls": None,
        "parallel_tool_calls": parsed.parallel_tool_calls,
        "reasoning": None, "store": parsed.store, "background": False, "service_tier": "default",
        "temperature": sampling.temperature, "top_p": sampling.top_p,
        "presence_penalty": sampling.presence_penalty, "frequency_penalty": sampling.frequency_penalty,
        "top_logprobs": 0, "text": {"format": format_echo(parsed.text_format)},
        "tool_choice": _tool_choice(parsed.tool_choice),
        "tools": [{"type": "function", "name": tool.name, "description": tool.description or None,
                   "parameters": tool.parameters, "strict": tool.strict} for tool in parsed.tools],
        # OpenAI's schema has no null usage and Open Responses wants the key: zeros until it is known.
        "truncation": parsed.truncation, "usage": usage or _usage(None), "metadata": parsed.metadata,
        "safety_identifier": None, "prompt_cache_key": None,
    }


def _tool_choice(choice: str) -> str | dict[str, str]:
    return {"type": "function", "name": choice.removeprefix("function:")} if choice.startswith("function:") else choice


def _usage(final: Chunk | None) -> dict[str, Any]:
    final = final or Chunk("")
    return {"input_tokens": final.prompt_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": final.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": final.prompt_tokens + final.completion_tokens}


# POST /v1/responses ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HeldResponse:
    """A response kept by the WebSocket connection that made it (store: false leaves nothing on disk), so the
    next turn on that connection can continue it: everything it was given, then its output."""
    response_id: str
    conversation_id: str
    history: tuple[HistoryTurn, ...]
    items: tuple[tuple[str, str, dict[str, Any]], ...]  # (role, text, item), as the store would write them

    def size_bytes(self) -> int:
        """About what sending the whole chain as one request's input would take."""
        return sum(len(json.dumps(item, ensure_ascii=False).encode()) for _, _, item in self.items)


class _Turn:
    """One Responses request on its way: history, assembly, and what gets stored."""

    def __init__(self, request: web.Request, parsed: ResponsesRequest):
        self.request = request
        self.parsed = parsed
        self.created_at = int(time.time())
        self.conversation_id: str | None = None
        self.new_conversation = False
        self.stored_turns: list = []
        self.held: HeldResponse | None = None  # the connection-held response this one continues
        self.assembly: context.Assembly | None = None
        self.history: list[HistoryTurn] = []
        self.output_item_id = "msg_" + uuid.uuid4().hex
        self.leading = 0  # leading system turns, pinned (set by build_prompt)

    async def load_history(self, held: HeldResponse | None = None) -> None:
        """The history this response continues: HELD when it is the previous response (a WebSocket
        connection's own), else the stored chain or conversation."""
        parsed = self.parsed
        if held is not None and parsed.previous_response_id == held.response_id:
            # Nothing of it is on disk (and nothing is read there): memory has no conversation to look up.
            self.held, self.conversation_id, self.new_conversation = held, held.conversation_id, True
        elif parsed.previous_response_id:
            self.conversation_id, self.stored_turns = await call(
                self.request, _chain_history, parsed.previous_response_id, kind="response",
                param="previous_response_id")
        elif parsed.conversation_id:
            self.stored_turns = await call(self.request, _conversation_history, parsed.conversation_id,
                                           param="conversation")
            self.conversation_id = parsed.conversation_id
        else:
            self.conversation_id, self.new_conversation = new_conversation_id(), True
        if parsed.store and self.new_conversation:  # a store that cannot be opened is a 503 now, before any token
            await call(self.request, _open)
        self.response_id = new_response_id(self.conversation_id)
        earlier = list(held.history) if self.held else _history(self.stored_turns, ())
        self.history = earlier + _history((), parsed.input)
        _check_tool_outputs(earlier, parsed.input)

    async def build_prompt(self, model):
        pinned = [{"role": "system", "content": self.parsed.instructions}] if self.parsed.instructions else []
        leading = 0
        while leading < len(self.history) and self.history[leading].role == "system":
            leading += 1
        pinned += [{"role": "system", "content": turn.text} for turn in self.history[:leading]]
        budget = context.answer_budget(model.context_length, self.parsed.max_tokens)
        stored = None if self.new_conversation else self.conversation_id
        self.assembly = await assemble_context(self.request, stored, pinned, self.history[leading:], budget, model,
                                               "input")
        self.leading = leading
        kept = self.parsed.store or not self.new_conversation  # else the id names nothing on disk
        self.request["log_fields"] = memory_log_fields(self.assembly, self.conversation_id if kept else None)
        self.request["tool_family"] = model.tool_family
        return await asyncio.to_thread(model.chat_prompt, self.assembly.messages, (), self.parsed.tools)

    def output(self, text: str, finish_reason: str, status: str) -> list[dict[str, Any]]:
        """The output items: the answer's text as a message, and its tool calls as function_call items."""
        calls = []
        if self.parsed.calls_tools:
            text, calls, _ = tool_answer(self.request, self.parsed, text, finish_reason)
        items = [message_item(self.output_item_id, "assistant", text, status)] if text or not calls else []
        return items + [function_call_item(call) for call in calls]

    def started(self) -> dict[str, Any]:
        """The response object as the stream announces it, before any output."""
        return response_object(self.parsed, self.response_id, self.created_at, status="in_progress", output=[],
                               explicit_conversation=self.parsed.conversation_id)

    def finished(self, text: str, final: Chunk) -> dict[str, Any]:
        status, details = "completed", None
        if final.finish_reason == "length":
            status, details = "incomplete", {"reason": "max_output_tokens", "cause": self._length_cause(final)}
        return response_object(self.parsed, self.response_id, self.created_at, status=status,
                               output=self.output(text, final.finish_reason, status), usage=_usage(final),
                               incomplete_details=details, explicit_conversation=self.parsed.conversation_id)

    def _length_cause(self, final: Chunk) -> str:
        """Which limit ended a "length" answer (one of LENGTH_CAUSES): OpenAI has one reason for all of them,
        and only the context's is a reason to start a new conversation (or compact) rather than ask for more."""
        generated = final.completion_tokens
        if self.parsed.max_tokens is not None and generated >= self.parsed.max_tokens:
            return "max_output_tokens"
        default = self.request.app[keys.SETTINGS].default_max_tokens
        if self.parsed.max_tokens is None and default and generated >= default:
            return "default_max_tokens"
        return "context_window"

    def held_after(self, response: dict[str, Any]) -> HeldResponse:
        """What a WebSocket connection keeps of this response, to continue it without the store."""
        outputs = [HistoryTurn("assistant", text, None, item_message("assistant", text, item))
                   for item in response["output"] for text in (_item_text(item),)]
        return HeldResponse(self.response_id, self.conversation_id, tuple(self.history + outputs),
                            tuple(self._items(response)))

    def _items(self, response: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
        """(role, text, item) of everything this response adds to its conversation: a held response's history
        first (it was never written), then the input and the output."""
        items = list(self.held.items) if self.held else []
        items += [(message.role, message.text, stored_item(message.item)) for message in self.parsed.input]
        return items + [("assistant", _item_text(item), item) for item in response["output"]]

    async def store(self, response: dict[str, Any]) -> None:
        """Write the input and the answer before the client hears that the response is complete."""
        if not self.parsed.store:
            return
        positions = [turn.position for turn in self.history]
        report = self.assembly.report(positions[self.leading:]) if self.assembly else {}
        # A held response's chain exists only in this connection: written here whole, as this response's input.
        parent = None if self.held else self.parsed.previous_response_id
        inputs = len(self.parsed.input) + (len(self.held.items) if self.held else 0)
        await call(self.request, _record, self.conversation_id, self.new_conversation, self._items(response),
                   response, parent, inputs, report)


def _check_tool_outputs(earlier: list[HistoryTurn], messages) -> None:
    """Each function_call_output given must answer a function_call before it (in the history or the input), as
    OpenAI checks: an output for no call is a client's mistake the model could only guess around."""
    calls = {call["id"] for turn in earlier for call in (turn.message or {}).get("tool_calls", ())}
    for index, message in enumerate(messages):
        chat = message.message or {}
        calls.update(call["id"] for call in chat.get("tool_calls", ()))
        if chat.get("role") == "tool" and chat.get("tool_call_id") not in calls:
            raise invalid(f"No tool call found for function call output with call_id {chat.get('tool_call_id')}.",
                          param=f"input[{index}]")


def _item_text(item: dict[str, Any]) -> str:
    """What an output item says, as memory reads it."""
    if item["type"] == "function_call":
        return f"{item['name']}({item['arguments']})"
    return item["content"][0]["text"]


async def start_turn(request: web.Request, body: Any, held: HeldResponse | None = None):
    """Validate BODY, load its history and start its generation: (turn, first chunk, the chunks after it).
    Every failure up to the first token is an APIError, so it can still be an ordinary error."""
    parsed = await parse_body(body, parse_responses_request)
    request["model"] = parsed.model
    turn = _Turn(request, parsed)
    await turn.load_history(held)
    chunks = run_generation(request, parsed, turn.build_prompt, turn.conversation_id if parsed.store else None)
    first = await anext(chunks)  # errors before generation stay proper JSON errors, streams too
    return turn, first, chunks


async def create_response(request: web.Request) -> web.StreamResponse:
    turn, first, chunks = await start_turn(request, await read_json(request))
    if turn.parsed.stream:
        return await _stream(request, turn, first, chunks)
    parts, final = [first.text], first
    async for chunk in chunks:
        parts.append(chunk.text)
        final = chunk
    response = turn.finished("".join(parts), final)
    request["tokens"] = final.completion_tokens
    await turn.store(response)
    return web.json_response(response)


def event_sender(write: Callable[[str, str], Awaitable[None]]) -> EventSender:
    """send(kind, **fields) for one response's events, numbered from 0; WRITE(kind, json) puts one on the wire."""
    numbers = itertools.count()

    async def send(kind: str, **fields: Any) -> None:
        await write(kind, json.dumps({"type": kind, "sequence_number": next(numbers), **fields}, ensure_ascii=False))

    return send


async def _stream(request: web.Request, turn: _Turn, first: Chunk, chunks) -> web.StreamResponse:
    async def write(kind: str, payload: str) -> None:
        # One write per event: some clients parse each read on its own.
        await response.write(f"event: {kind}\ndata: {payload}\n\n".encode())

    send = event_sender(write)

    async def fail(_, error: APIError) -> None:  # whatever fails after the headers: the stream says so
        await send("response.failed", response=failed_object(turn.started(), error))
        await response.write(b"data: [DONE]\n\n")

    response = await open_event_stream(request, fail)
    await stream_events(request, turn, first, chunks, send)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def failed_object(response: dict[str, Any], error: APIError) -> dict[str, Any]:
    return {**response, "status": "failed", "completed_at": None,
            "error": {"code": error.code or "server_error", "message": error.message}}


async def stream_events(request: web.Request, turn: _Turn, first: Chunk, chunks, send: EventSender
                        ) -> dict[str, Any]:
    """TURN's response as Responses events through SEND, from response.created to its terminal event (the same
    on HTTP and WebSocket); the response object it ended with."""
    parsed, item_id = turn.parsed, turn.output_item_id
    started = turn.started()
    await send("response.created", response=started)
    await send("response.in_progress", response=started)
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    # With tools, text streams up to where a call may begin (engine/tool_stream.py); the calls follow whole.
    splitter = text_splitter(request, parsed) if parsed.calls_tools else None
    opened = False  # the message item (output 0) is announced with its first text

    async def open_message() -> None:
        nonlocal opened
        item = message_item(item_id, "assistant", "", "in_progress")
        item["content"] = []
        await send("response.output_item.added", output_index=0, item=item)
        await send("response.content_part.added", item_id=item_id, output_index=0, content_index=0, part=part)
        opened = True

    async def text_delta(text: str) -> None:
        if not opened:
            await open_message()
        await send("response.output_text.delta", item_id=item_id, output_index=0, content_index=0,
                   delta=text, logprobs=[])

    if splitter is None:
        await open_message()
    parts, final, chunk = [], first, first
    while True:
        if chunk.text:
            parts.append(chunk.text)
            if visible := splitter.feed(chunk.text) if splitter else chunk.text:
                await text_delta(visible)
        final = chunk
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            break
    text = "".join(parts)
    finished = turn.finished(text, final)
    request["tokens"] = final.completion_tokens
    for index, item in enumerate(finished["output"]):
        if item["type"] == "function_call":
            await send("response.output_item.added", output_index=index, item={**item, "arguments": "",
                                                                               "status": "in_progress"})
            await send("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                       delta=item["arguments"])
            await send("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                       name=item["name"], arguments=item["arguments"])
        else:
            message_text = item["content"][0]["text"]
            rest = splitter.rest(message_text) if splitter else ""
            if rest or not opened:
                await text_delta(rest or message_text)
            await send("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                       text=message_text, logprobs=[])
            await send("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                       part={**part, "text": message_text})
        await send("response.output_item.done", output_index=index, item=item)
    try:
        await turn.store(finished)
    except APIError as error:  # the events are long under way: the stream itself says it failed
        failed = failed_object(finished, APIError(500, error.message, code="server_error"))
        await send("response.failed", response=failed)
        return failed
    await send("response.completed" if finished["status"] == "completed" else "response.incomplete",
               response=finished)
    return finished


# Stored responses ----------------------------------------------------------------

async def get_response(request: web.Request) -> web.Response:
    record = await call(request, store_method("response"), request.match_info["response_id"], kind="response")
    return web.json_response(record["object"])


async def delete_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    await call(request, store_method("delete_response"), response_id, kind="response")
    return web.json_response({"id": response_id, "object": "response.deleted", "deleted": True})


def _input_items(store: Store, response_id: str) -> list[dict[str, Any]]:
    """Everything the response was given, as OpenAI lists it: with previous_response_id, the earlier inputs
    and outputs of its chain, then its own input."""
    record = store.response(response_id)
    conversation_id = record["conversation_id"]
    positions = _chain_positions(store, conversation_id, record["parent"]) + record["input_positions"]
    return [turn.item for turn in _turns_at(store, conversation_id, positions)]


async def input_items(request: web.Request) -> web.Response:
    items = await call(request, _input_items, request.match_info["response_id"], kind="response")
    return web.json_response(list_page(request, items))


# Compaction -----------------------------------------------------------------------

async def compact(request: web.Request) -> web.Response:
    """The window memory would give the model for this history: a compaction note, then the verbatim items."""
    body = await read_json_object(request)
    model = body["model"]
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise invalid("'previous_response_id' must be a string", param="previous_response_id")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid("'instructions' must be a string", param="instructions")
    messages = parse_input(body.get("input"), required=previous is None)
    conversation_id, turns = None, []
    if previous:
        conversation_id, turns = await call(request, _chain_history, previous, kind="response",
                                            param="previous_response_id")
    history = _history(turns, messages)
    items = [turn.item for turn in turns] + [stored_item(message.item) for message in messages]
    request["model"] = model
    scheduler = await scheduler_for(request, model)
    try:
        loaded = scheduler.model
        pinned = [{"role": "system", "content": instructions}] if instructions else []
        budget = context.answer_budget(loaded.context_length, None)
        assembly = await assemble_context(request, conversation_id, pinned, history, budget, loaded, "input")
    finally:
        scheduler.release_lease()
    request["log_fields"] = memory_log_fields(assembly, conversation_id)
    # The compaction item comes first, as at OpenAI, also when the history fits whole and nothing was
    # compressed: its note is then empty, and read back it adds nothing to the prompt (responses/protocol.py).
    note = context.memory_note(assembly.summary, assembly.recalled)
    output = [{"type": "compaction", "id": "cmp_" + uuid.uuid4().hex, "encrypted_content": note}]
    output += items[assembly.verbatim_start:]
    return web.json_response({
        "id": "resp_" + uuid.uuid4().hex, "object": "response.compaction", "created_at": int(time.time()),
        "output": output, "usage": _usage(Chunk("", prompt_tokens=assembly.prompt_tokens))})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/responses", create_response)
    app.router.add_post("/v1/responses/compact", compact)
    app.router.add_get("/v1/responses/{response_id}", get_response)
    app.router.add_delete("/v1/responses/{response_id}", delete_response)
    app.router.add_get("/v1/responses/{response_id}/input_items", input_items)
