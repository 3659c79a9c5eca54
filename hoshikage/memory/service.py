"""The daemon's memory: one worker thread in front of the store and the embedding model.

Opening ChromaDB and loading sentence-transformers happen on the first request
that needs them, on this thread, never on the event loop; the chat path never
touches this module's heavy parts. Every store call runs on the same single
thread, so writes to a conversation happen in the order they were asked for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hoshikage.memory import context
from hoshikage.memory.embed import Embedder
from hoshikage.memory.store import Store
from hoshikage.memory.summarize import SEGMENT_TURNS, ClusterRule, representatives, segment_bounds
from hoshikage.memory.text import split_sentences

log = logging.getLogger("hoshikage.memory")

RECALL_PASSAGES = 4
CACHED_SENTENCES = 50_000  # vectors kept in memory across turns (~75 MB at 384 dimensions)
SWEEP_INTERVAL_SECONDS = 3600  # retention is counted in days: an idle daemon checks hourly at most
# On a shared Chroma server another daemon may forget a conversation this one holds KV state of: looked for
# this often, when the store opens and when the daemon exits.
FLEET_FORGET_SWEEP_SECONDS = 60


@dataclasses.dataclass(frozen=True)
class MemorySettings:
    chroma_path: Any  # Path
    model_name: str
    query_prefix: str | None
    passage_prefix: str | None
    rule: ClusterRule
    retention_days: int
    threads: int | None = None
    chroma_url: str | None = None  # a Chroma server instead of the directory chroma_path
    chroma_token: str | None = None

    @classmethod
    def from_settings(cls, settings) -> MemorySettings:
        return cls(settings.memory_dir, settings.sentence_bert_model,
                   settings.embedding_query_prefix, settings.embedding_passage_prefix,
                   ClusterRule(settings.cluster_divisor, settings.min_clusters, settings.max_clusters),
                   settings.memory_retention_days, settings.threads, settings.chroma_url, settings.chroma_token)


@dataclasses.dataclass(frozen=True)
class HistoryTurn:
    role: str
    text: str
    position: int | None  # None: not (yet) stored
    message: dict | None = None  # the chat message, when it is more than role and text (tool calls)


class Memory:
    def __init__(self, settings: MemorySettings):
        self.settings = settings
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hoshikage-memory")
        self._store: Store | None = None
        self._embedder: Embedder | None = None
        self.first_use_seconds: float | None = None
        self._last_sweep = time.monotonic()
        self._turn_sentences: OrderedDict[tuple[str, int], tuple[list, Any]] = OrderedDict()
        self._cached_sentences = 0
        # Told of every forgotten conversation (None: all), on memory's thread: the models' KV prompt caches
        # hold the same text in another form (engine/prompt_cache.py).
        self.on_forget: Callable[[str | None], None] | None = None
        # The conversations whose KV state the models hold (their prompt caches, saved or not).
        self.held_tags: Callable[[], set[str]] | None = None
        self._last_fleet_sweep = time.monotonic()

    # Plumbing ----------------------------------------------------------------

    async def call(self, function: Callable, *args):
        """Run FUNCTION(store, *ARGS) on the memory thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._with_store, function, args)

    async def call_embedder(self, function: Callable, *args):
        """Run FUNCTION(embedder, *ARGS) on the memory thread, without opening the store."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: function(self.embedder(), *args))

    def _with_store(self, function: Callable, args: tuple):
        return function(self.store(), *args)

    def store(self) -> Store:
        if self._store is None:
            started = time.monotonic()
            store = Store(self.settings.chroma_path, self.settings.chroma_url, self.settings.chroma_token)
            expired = store.expire(self.settings.retention_days)
            if expired:
                log.info("forgot %d conversations unused for %d days", len(expired), self.settings.retention_days)
            self._store = store
            self._drop_forgotten_elsewhere(store)  # forgotten while this daemon was not running
            self.first_use_seconds = time.monotonic() - started
            log.info("conversation store %s opened in %.1f s", store.location, self.first_use_seconds)
        return self._store

    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.settings.model_name, self.settings.query_prefix,
                                      self.settings.passage_prefix, self.settings.threads)
        return self._embedder

    @property
    def opened(self) -> bool:
        return self._store is not None

    async def expire(self) -> None:
        """Retention sweep; only when the store is already open (an idle daemon imports nothing)."""
        if self._store is not None and time.monotonic() - self._last_sweep >= SWEEP_INTERVAL_SECONDS:
            self._last_sweep = time.monotonic()
            await self.call(self._expire)

    async def sweep_forgotten(self) -> None:
        """On a Chroma server shared with other daemons: drop the KV state of conversations one of them forgot
        (at most every FLEET_FORGET_SWEEP_SECONDS)."""
        if self._store is None or self._store.url is None:
            return
        if time.monotonic() - self._last_fleet_sweep < FLEET_FORGET_SWEEP_SECONDS:
            return
        self._last_fleet_sweep = time.monotonic()
        await self.call(self._drop_forgotten_elsewhere)

    def _drop_forgotten_elsewhere(self, store: Store) -> None:
        from hoshikage.memory.store import MemoryUnavailable, NotFound, conversation_key

        if store.url is None or self.held_tags is None:
            return  # a store of this daemon's own: every forget passed through here
        try:
            for tag in sorted(self.held_tags()):
                if conversation_key(tag) is None:
                    continue
                try:
                    store.conversation(tag)
                except NotFound:
                    log.info("%s was forgotten on the Chroma server; dropping its KV state here", tag)
                    self.forget_cached(tag)
        except MemoryUnavailable as error:  # the next sweep tries again
            log.warning("could not look for conversations forgotten elsewhere: %s", error)

    def _sweep_at_exit(self) -> None:
        from hoshikage.memory.store import MemoryUnavailable

        if self._store is None and not self.held_tags():
            return
        try:
            self._drop_forgotten_elsewhere(self.store())  # opening it sweeps already; again costs little
        except MemoryUnavailable as error:
            log.warning("could not look for conversations forgotten elsewhere: %s", error)

    def _expire(self, store: Store) -> None:
        for conversation_id in store.expire(self.settings.retention_days):
            self.forget_cached(conversation_id)

    def forget(self, store: Store, conversation_id: str | None) -> None:
        """Forget one conversation (None: all), on disk and in this process; run through call()."""
        if conversation_id is not None:
            store.forget(conversation_id)
            self.forget_cached(conversation_id)
            return
        # Through an identity's view (memory/ownership.py) "all" is that identity's own.
        owned = store.owned_ids() if hasattr(store, "owned_ids") else None
        store.forget_all()
        for each in [None] if owned is None else owned:
            self.forget_cached(each)

    async def close(self) -> None:
        if self.settings.chroma_url is not None and self.held_tags is not None:
            # After the models saved their KV state at exit; opening the store for it if this process never did
            # (a restarted daemon holds what the last one saved).
            await asyncio.get_running_loop().run_in_executor(self._executor, self._sweep_at_exit)
        if self._store is not None:  # what this process's indexes wrote into their unused slots goes too
            await self.call(Store.scrub_indexes)
            await self.call(Store.close)
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    # Recollection ---------------------------------------------------------------

    async def recollect(self, conversation_id: str | None, overflow: list[HistoryTurn], query: str
                        ) -> tuple[list[str], list[str]]:
        """(summary sentences, recalled passages) for the turns OVERFLOW left out, given the latest QUERY."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._recollect, conversation_id, overflow, query)

    def _recollect(self, conversation_id: str | None, overflow: list[HistoryTurn], query: str):
        import numpy as np

        embedder = self.embedder()
        stored = conversation_id is not None and all(turn.position is not None for turn in overflow)
        # One read for every left-out sentence and one for the cached segment summaries: a
        # conversation of hundreds of turns costs two ChromaDB calls, not one per segment.
        keys = [turn.position if stored else index for index, turn in enumerate(overflow)]
        all_rows, all_vectors = self._sentences(conversation_id if stored else None, overflow, keys)
        bounds = segment_bounds(len(overflow))
        digests = [_segment_digest(self.settings, overflow[start:end])
                   if stored and end - start == SEGMENT_TURNS else None for start, end in bounds]
        cached = self.store().summaries(conversation_id, [d for d in digests if d]) if stored else {}
        segment_of = {key: number for number, (start, end) in enumerate(bounds) for key in keys[start:end]}
        members: list[list[int]] = [[] for _ in bounds]
        for row_index, row in enumerate(all_rows):
            members[segment_of[row[0]]].append(row_index)
        summary_rows: list[tuple[int, int, str]] = []
        summary_vectors = []
        for number, digest in enumerate(digests):
            rows = [all_rows[i] for i in members[number]]
            chosen = cached.get(digest) if digest else None
            if chosen is None:
                picked = representatives(all_vectors[members[number]], self.settings.rule.clusters(len(rows)))
                chosen = [rows[i] for i in picked]
                if digest:
                    self.store().keep_summary(conversation_id, digest, chosen)
            chosen_keys = {tuple(row[:2]) for row in chosen}
            for row_index in members[number]:
                if tuple(all_rows[row_index][:2]) in chosen_keys:
                    summary_rows.append(all_rows[row_index])
                    summary_vectors.append(all_vectors[row_index])
        if len(summary_rows) > self.settings.rule.maximum:
            # The representatives clustered once more; kept too, as it changes only with a new segment.
            digest = _digest([d or "" for d in digests]) if all(digests) else None
            reduced = self.store().summaries(conversation_id, [digest]).get(digest) if digest else None
            if reduced is None:
                keep = representatives(np.stack(summary_vectors), self.settings.rule.maximum)
                reduced = [summary_rows[i] for i in keep]
                if digest:
                    self.store().keep_summary(conversation_id, digest, reduced)
            summary_rows = reduced
        summary = list(dict.fromkeys(row[2] for row in summary_rows))  # a repeated sentence once

        # Recall ranks every left-out sentence exactly. The sentences come from ChromaDB (a metadata
        # query by position); the ranking is a dot product here, because ChromaDB's HNSW search with
        # a position filter missed the nearest sentence in testing, and exact search over a
        # conversation's few thousand sentences takes about a millisecond.
        recalled, seen = [], set(summary)
        if all_rows:
            scores = all_vectors @ embedder.query(query)
            roles = {key: turn.role for key, turn in zip(keys, overflow)}
            for index in np.argsort(-scores, kind="stable"):
                key, _, text = all_rows[index]
                if text in seen:
                    continue
                seen.add(text)
                recalled.append(f"({roles.get(key, 'user')}) {text}")
                if len(recalled) == RECALL_PASSAGES:
                    break
        return summary, recalled

    def _stored_sentences(self, conversation_id: str, turns: list[HistoryTurn]):
        """(rows, vectors) of stored TURNS' sentences: from this process's cache, else from ChromaDB,
        else embedded now and written there (each turn is embedded once, ever)."""
        import numpy as np

        name, cache = self.settings.model_name, self._turn_sentences
        missing = [turn.position for turn in turns if (conversation_id, turn.position) not in cache]
        if missing:
            rows, vectors = self.store().sentences(conversation_id, name, missing)
            found: dict[int, list[int]] = {}
            for index, row in enumerate(rows):
                found.setdefault(row[0], []).append(index)
            for position, indices in found.items():
                self._cache_turn(conversation_id, position, [rows[i] for i in indices], vectors[indices])
            unembedded = [turn for turn in turns if turn.position in set(missing) - found.keys()]
            new_rows = [(turn.position, index, sentence) for turn in unembedded
                        for index, sentence in enumerate(split_sentences(turn.text))]
            new_vectors = self.embedder().passages([row[2] for row in new_rows])
            if new_rows:
                self.store().add_sentences(conversation_id, name, new_rows, new_vectors)
            for turn in unembedded:
                indices = [i for i, row in enumerate(new_rows) if row[0] == turn.position]
                self._cache_turn(conversation_id, turn.position, [new_rows[i] for i in indices],
                                 new_vectors[indices] if indices else np.zeros((0, new_vectors.shape[1]), np.float32))
        parts = [cache[(conversation_id, turn.position)] for turn in turns]
        for turn in turns:
            cache.move_to_end((conversation_id, turn.position))
        rows = [row for part in parts for row in part[0]]
        vectors = [part[1] for part in parts if len(part[1])]
        return rows, (np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32))

    def _cache_turn(self, conversation_id: str, position: int, rows, vectors) -> None:
        cache = self._turn_sentences
        cache[(conversation_id, position)] = (rows, vectors)
        self._cached_sentences += len(rows)
        while self._cached_sentences > CACHED_SENTENCES and len(cache) > 1:
            _, (old_rows, _) = cache.popitem(last=False)
            self._cached_sentences -= len(old_rows)

    def forget_cached(self, conversation_id: str | None = None) -> None:
        """Drop cached vectors and KV state (of one conversation, or all) after a forget."""
        for key in [key for key in self._turn_sentences if conversation_id in (None, key[0])]:
            self._cached_sentences -= len(self._turn_sentences.pop(key)[0])
        if self.on_forget is not None:
            self.on_forget(conversation_id)

    def _sentences(self, conversation_id: str | None, turns: list[HistoryTurn], keys: list[int]):
        """(rows, vectors) of TURNS' sentences in order; a row is (turn key, sentence index, text)."""
        if conversation_id is not None:
            return self._stored_sentences(conversation_id, turns)
        rows = [(key, index, sentence) for key, turn in zip(keys, turns)
                for index, sentence in enumerate(split_sentences(turn.text))]
        return rows, self.embedder().passages([row[2] for row in rows])


def _segment_digest(settings: MemorySettings, segment: list[HistoryTurn]) -> str:
    return _digest([settings.model_name, dataclasses.astuple(settings.rule), [turn.position for turn in segment]])


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:24]


async def assemble(memory: Memory | None, conversation_id: str | None, pinned: list[dict[str, str]],
                   history: list[HistoryTurn], budget: int, count: Callable[[list[dict[str, str]]], int],
                   measure: Callable[[str], int] | None = None) -> context.Assembly:
    """The prompt messages for PINNED + HISTORY within BUDGET tokens (see context.py).

    MEMORY may be None when it is not in use: then a history that does not fit raises ContextTooLong.
    """
    messages = [turn.message or {"role": turn.role, "content": turn.text} for turn in history]
    planned = await asyncio.to_thread(context.plan, pinned, messages, budget, count, measure)
    if planned.fits:
        full = pinned + messages
        return context.Assembly(full, False, 0, [], [], planned.prompt_tokens, budget, len(messages))
    if memory is None:
        raise context.ContextTooLong(await asyncio.to_thread(count, pinned + messages), budget)
    latest = messages[context.latest_user(messages)]["content"]
    summary, recalled = await memory.recollect(conversation_id, history[:planned.start], latest)
    return await asyncio.to_thread(context.render, pinned, messages, planned.start, summary, recalled, budget,
                                   count)

