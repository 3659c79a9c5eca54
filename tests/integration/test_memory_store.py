"""The conversation store on a real ChromaDB directory: order, privacy, retention, forgetting for good."""

from __future__ import annotations

import os
import stat
import time

import pytest

from hoshikage.memory.store import MemoryUnavailable, NotFound, Store
from tests.stored import remember

SECRET = "zebra-umbrella-4417"


def _files_containing(root, needle: bytes) -> list[str]:
    hits = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                if needle in handle.read():
                    hits.append(path)
    return hits


def test_turns_come_back_in_order_with_their_response(tmp_path):
    store = Store(tmp_path / "chroma")
    conversation_id = remember(store, "first")
    store.append(conversation_id, [("user", "second", {"n": 2}), ("assistant", "third", {"n": 3})])
    assert [turn.text for turn in store.turns(conversation_id)] == ["first", "noted", "second", "third"]
    assert [turn.position for turn in store.turns(conversation_id)] == [0, 1, 2, 3]
    (record,) = store.responses(conversation_id)
    assert store.response(record["id"])["input_positions"] == [0]


def test_the_store_directory_is_private_to_the_daemon_user(tmp_path):
    Store(tmp_path / "chroma")
    assert stat.S_IMODE((tmp_path / "chroma").stat().st_mode) == 0o700


def test_forget_leaves_nothing_on_disk(tmp_path):
    path = tmp_path / "chroma"
    store = Store(path)
    kept = remember(store, "an unrelated note")
    forgotten = remember(store, f"my secret is {SECRET}")
    assert _files_containing(path, SECRET.encode())  # the test can see it while it is remembered
    store.forget(forgotten)
    assert _files_containing(path, SECRET.encode()) == []
    assert _files_containing(path, forgotten.removeprefix("conv_").encode()) == []
    reopened = Store(path)
    with pytest.raises(NotFound):
        reopened.conversation(forgotten)
    assert [info.id for info in reopened.conversations()] == [kept]


def test_forget_all_empties_the_store(tmp_path):
    path = tmp_path / "chroma"
    store = Store(path)
    for number in range(3):
        remember(store, f"{SECRET} number {number}")
    assert store.forget_all() == 3
    assert _files_containing(path, SECRET.encode()) == []
    assert Store(path).conversations() == []


def test_unknown_ids_are_not_found(tmp_path):
    store = Store(tmp_path / "chroma")
    for call in (lambda: store.conversation("conv_" + "0" * 32), lambda: store.conversation("nonsense"),
                 lambda: store.response("resp_" + "1" * 48), lambda: store.forget("conv_" + "2" * 32)):
        with pytest.raises(NotFound):
            call()


def test_expired_conversations_are_forgotten(tmp_path, monkeypatch):
    store = Store(tmp_path / "chroma")
    old = remember(store, "old news")
    later = time.time() + 31 * 86400
    recent = None
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: later)
        recent = remember(store, "fresh news")
        assert store.expire(30) == [old]
    assert [info.id for info in store.conversations()] == [recent]


def test_a_store_that_cannot_be_opened_says_where_and_why(tmp_path):
    blocker = tmp_path / "chroma"
    blocker.write_text("not a directory")
    with pytest.raises(MemoryUnavailable, match="chroma_path"):
        Store(blocker)


def test_forget_also_clears_what_other_conversations_index_files_picked_up(tmp_path):
    """hnswlib writes unused index slots from uninitialised memory: a conversation created after a
    secret passed through the process can carry the secret's bytes in its files."""
    path = tmp_path / "chroma"
    store = Store(path)
    before = remember(store, "an unrelated note")
    secret = remember(store, f"my secret is {SECRET}")
    after = [remember(store, f"a later note {number}") for number in range(3)]
    store.forget(secret)
    assert _files_containing(path, SECRET.encode()) == []
    # The scrubbed store still works, in this process and the next.
    store.append(after[0], [("user", "still here", {"n": 1})])
    for current in (store, Store(path)):
        assert [turn.text for turn in current.turns(after[0])][-1] == "still here"
        assert {info.id for info in current.conversations()} == {before, *after}
        rows, vectors = current.sentences(after[1], "test-model", [0])
        assert rows == [(0, 0, "a later note 1")] and vectors.shape == (1, 16)
