"""A conversation written straight into a Store: two turns, a response record and one sentence vector."""

from __future__ import annotations

import numpy as np

from hoshikage.memory.store import Store, new_response_id


def remember(store: Store, text: str, owner: str = "") -> str:
    info = store.create_conversation({"topic": "test"}, implicit=False, owner=owner)
    response = {"id": new_response_id(info.id), "object": "response", "output_text": text}
    positions = store.append(info.id, [("user", text, {"type": "message", "role": "user"}),
                                       ("assistant", "noted", {"type": "message", "role": "assistant"})],
                             response, None, 1, {"messages": [{"role": "user", "content": text}]})
    vectors = np.random.default_rng(0).normal(size=(1, 16)).astype(np.float32)
    store.add_sentences(info.id, "test-model", [(positions[0], 0, text)], vectors)
    return info.id
