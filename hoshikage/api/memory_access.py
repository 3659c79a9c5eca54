"""The API's way into conversation memory: one call that turns memory's failures into OpenAI errors.

A store that cannot be opened or an embedding model that is not installed is
the administrator's to fix: 503 with the cause and the fix, and every other
endpoint keeps working. An unknown id is 404, except an unknown
``previous_response_id``: 400 ``previous_response_not_found``, as OpenAI answers (the request names
something that is not there; the URL itself is fine).
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web

from hoshikage.api.http import keys
from hoshikage.api.http.auth import identity_of
from hoshikage.api.http.errors import APIError, invalid
from hoshikage.memory.context import Assembly, ContextTooLong


@contextlib.contextmanager
def memory_errors(kind: str = "conversation", param: str | None = None):
    from hoshikage.memory.embed import EmbeddingModelMissing
    from hoshikage.memory.store import MemoryUnavailable, NotFound

    try:
        yield
    except NotFound as missing:
        if param == "previous_response_id":
            raise invalid(f"Previous response with id '{missing.args[0]}' not found.", param=param,
                          code="previous_response_not_found") from None
        raise APIError(404, f"No {kind} found with id '{missing.args[0]}'", param=param, code="not_found") from None
    except (MemoryUnavailable, EmbeddingModelMissing) as error:
        raise APIError(503, f"Conversation memory is unavailable: {error}", code="memory_unavailable",
                       error_type="server_error") from None


async def call(request: web.Request, function, *args, kind: str = "conversation", param: str | None = None):
    """FUNCTION(store, *ARGS) on the memory thread, failures as APIError. FUNCTION sees the store as the
    request's identity may (memory/ownership.py): another's conversation is not there."""
    identity = identity_of(request)

    def as_identity(store, *args):
        from hoshikage.memory.ownership import OwnedStore

        return function(OwnedStore(store, identity.name, identity.admin), *args)

    with memory_errors(kind, param):
        return await request.app[keys.MEMORY].call(as_identity, *args)


def store_method(name: str):
    """A function for call() that runs the store's method NAME: through the identity's view, never around it
    (``Store.conversation`` given the view as self would skip the check)."""
    return lambda store, *args: getattr(store, name)(*args)


async def assemble_context(request: web.Request, conversation_id: str | None, pinned, history, budget: int, model,
                           param: str) -> Assembly:
    """memory.service.assemble for MODEL's context, its failures as APIError (PARAM: the history's field)."""
    from hoshikage.memory.service import assemble

    with memory_errors():
        try:
            return await assemble(request.app[keys.MEMORY], conversation_id, pinned, history, budget,
                                  model.count_chat_tokens, model.count_text_tokens)
        except ContextTooLong as error:
            raise context_too_long(error, param) from None


def context_too_long(error: ContextTooLong, param: str) -> APIError:
    """400 context_length_exceeded for a history whose newest message alone leaves no room."""
    return invalid(f"The newest message needs {error.prompt_tokens} tokens; this model's context has room for "
                   f"{error.budget} besides the answer. Shorten it, or ask for fewer output tokens.", param=param,
                   code="context_length_exceeded")


def memory_log_fields(assembly: Assembly, conversation_id: str | None) -> dict[str, Any]:
    """journald fields: how a request's context was put together."""
    return {"CONVERSATION_ID": conversation_id or "", "MEMORY_COMPRESSED": int(assembly.compressed),
            "MEMORY_VERBATIM_TURNS": assembly.verbatim_turns,
            "MEMORY_SUMMARY_SENTENCES": len(assembly.summary), "MEMORY_RECALLED_PASSAGES": len(assembly.recalled),
            "MEMORY_PROMPT_TOKENS": assembly.prompt_tokens}
