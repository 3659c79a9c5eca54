"""Whose conversation it is: the store as one identity sees it.

Every conversation records the identity that created it (``owner``: a uid as
``uid:1000``, a key's name as ``key:alice``, or ``anonymous``). Seen through
OwnedStore, another identity's conversation, and each of its responses, does
not exist: the store raises NotFound, which the API answers 404, so a guessed
or leaked id reveals nothing, not even that it exists. Admins see and forget
every conversation. Conversations stored before owners were recorded have
none, and belong to the admins.

The API reaches the store only through memory_access.call, which hands every
function this view in place of the store: one place decides, and a new
endpoint cannot forget to ask.
"""

from __future__ import annotations

from typing import Any

from hoshikage.memory.store import ConversationInfo, NotFound, Store, conversation_key, response_key

# Store methods whose first argument names a conversation, and those whose first argument names a response.
_BY_CONVERSATION = frozenset({"conversation", "update_metadata", "forget", "turns", "responses", "append",
                              "add_sentences", "sentences", "summaries", "keep_summary", "size"})
_BY_RESPONSE = frozenset({"response", "delete_response"})
_UNSCOPED = frozenset({"compact", "scrub_indexes", "path", "url", "location"})


class OwnedStore:
    def __init__(self, store: Store, owner: str, admin: bool):
        self._store = store
        self.owner = owner
        self.admin = admin

    def _check(self, conversation_id: str) -> None:
        if not self.admin and self._store.conversation(conversation_id).owner != self.owner:
            raise NotFound(conversation_id)

    def __getattr__(self, name: str):
        method = getattr(self._store, name)
        if name in _UNSCOPED:
            return method
        if name in _BY_CONVERSATION:
            def by_conversation(conversation_id: str, *args, **kwargs):
                if conversation_key(conversation_id) is None:
                    raise NotFound(conversation_id)
                self._check(conversation_id)
                return method(conversation_id, *args, **kwargs)
            return by_conversation
        if name in _BY_RESPONSE:
            def by_response(response_id: str, *args, **kwargs):
                key = response_key(response_id)
                if key is None:
                    raise NotFound(response_id)
                try:
                    self._check("conv_" + key)
                except NotFound:
                    raise NotFound(response_id) from None
                return method(response_id, *args, **kwargs)
            return by_response
        raise AttributeError(f"{name} is not reachable through an identity's view of the store")

    def create_conversation(self, metadata: dict[str, str], implicit: bool, conversation_id: str | None = None
                            ) -> ConversationInfo:
        return self._store.create_conversation(metadata, implicit, conversation_id, owner=self.owner)

    def conversations(self) -> list[ConversationInfo]:
        every = self._store.conversations()
        return every if self.admin else [info for info in every if info.owner == self.owner]

    def forget_all(self) -> int:
        """An admin forgets every conversation; anyone else, every one of their own."""
        if self.admin:
            return self._store.forget_all()
        mine = self.conversations()
        for info in mine:
            self._store.forget(info.id)
        return len(mine)

    def owned_ids(self) -> list[str] | None:
        """The conversations forget_all would forget, for whoever must also drop what derives from them;
        None: all of them."""
        return None if self.admin else [info.id for info in self.conversations()]


def listing(store: Store | OwnedStore) -> list[dict[str, Any]]:
    """What ``hoshikage memory list`` shows of each conversation STORE lets its reader see, newest first."""
    return [{"id": info.id, "owner": info.owner, "turns": len(store.turns(info.id)),
             "responses": len(store.responses(info.id)), "last_used": info.last_used, "size": store.size(info.id),
             "origin": "responses" if info.implicit else "conversations"}
            for info in store.conversations()]
