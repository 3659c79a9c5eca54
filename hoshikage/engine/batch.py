"""Continuous batching: every running request of one model decodes in one llama.cpp batch.

The model's context has one KV sequence per slot. Each step puts the next
token of every generating sequence, then pieces of prompts still being read
(oldest request first), into a single batch of at most BATCH_TOKENS, decodes
it once, and samples each sequence that produced logits with its own sampler
chain. A request joins between two steps, as soon as a slot is free, without
waiting for the others to finish; a cancelled one leaves at the next step and
its cells are freed.

A slot remembers which tokens its KV cells hold. A new request goes to the
free slot whose cache shares the longest prefix with its prompt and reads only
the rest, so the next turn of a conversation does not re-read the turns
before it. ``n > 1`` reads the prompt once in one slot, then copies its cells
to the other choices' slots.

Only the model's worker thread calls into this module.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from hoshikage.engine.llama import BATCH_TOKENS, Chunk, LoadedModel, Prompt, TokenLogprob
from hoshikage.engine.prompt_cache import PromptCache, shared_prefix
from hoshikage.engine.sampling import GrammarTooCostly, Sampler, SamplingCancelled, SamplingParams, log_probabilities
from hoshikage.engine.text_stream import TextAssembler

log = logging.getLogger("hoshikage.batch")

# Saving the slots' KV state when a model closes stops after this long (the longest prefixes go first), so an
# exit stays well inside the daemon's stop timeout (daemon.py) even for a large model's many slots.
SAVE_AT_CLOSE_SECONDS = 4.0


@dataclasses.dataclass
class Job:
    """One request: N choices generated from one prompt."""
    prompt: Prompt
    sampling: SamplingParams
    max_tokens: int | None
    n: int
    emit: Callable[[Chunk | BaseException], None]  # thread-safe, never blocks
    cancelled: threading.Event
    tag: str | None = None  # the conversation it continues: its saved KV is forgotten with it


@dataclasses.dataclass(eq=False)
class _Slot:
    seq_id: int
    cached: list[int] = dataclasses.field(default_factory=list)  # tokens whose KV the sequence holds
    sequence: _Sequence | None = None
    last_used: int = 0  # step number, to pick which cache to overwrite
    tags: set[str] = dataclasses.field(default_factory=set)  # conversations whose text its cache holds


@dataclasses.dataclass(eq=False)
class _Sequence:
    """One choice of a job, generating in one slot."""
    job: Job
    index: int
    slot: _Slot
    sampler: Sampler
    limit: int
    assembler: TextAssembler
    pending: list[int]  # prompt tokens not evaluated yet
    position: int  # where the next evaluated token goes
    leader: _Sequence | None = None  # set on choices 1..n-1 until they fork from choice 0
    next_token: int | None = None  # sampled, to be evaluated in the next step
    generated: int = 0
    order: int = 0  # admission order: older prompts are read first
    logprobs: list = dataclasses.field(default_factory=list)  # TokenLogprobs not yet sent with a chunk
    restored: int = 0  # prompt tokens restored from the prompt cache


class BatchEngine:
    def __init__(self, model: LoadedModel, cache: PromptCache | None = None):
        import llama_cpp

        self.model = model
        self.cache = cache  # the host and disk tiers behind the slots (engine/prompt_cache.py)
        self._forgotten: set[str] = set()  # conversations forgotten while a slot of theirs was generating
        self._llama = llama_cpp
        self._ctx = model.context.ctx
        self._memory = model.context.memory
        self._slots = [_Slot(seq_id) for seq_id in range(model.sequences)]
        self._batch = llama_cpp.llama_batch_init(BATCH_TOKENS, 0, 1)
        self._steps = 0
        self._admitted = 0
        self.prompt_tokens_reused = 0  # taken from a slot's cache instead of read
        self.prompt_tokens_read = 0
        self.restored_tokens = 0  # of those, restored from the prompt cache's tiers

    # Admission ---------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        return sum(slot.sequence is None for slot in self._slots)

    @property
    def active(self) -> bool:
        return self.free_slots < len(self._slots)

    @property
    def running_jobs(self) -> int:
        return len({id(slot.sequence.job) for slot in self._slots if slot.sequence is not None})

    def describe_slots(self) -> list[dict]:
        """What each slot is doing, for /v1/status (read from the event loop: a snapshot, not a promise)."""
        return [{"generating": slot.sequence is not None, "cached_tokens": len(slot.cached)}
                for slot in self._slots]

    def admit(self, job: Job) -> None:
        """Give JOB its slots; the caller checked that job.n slots are free."""
        tokens = job.prompt.tokens
        free = [slot for slot in self._slots if slot.sequence is None]
        first = max(free, key=lambda slot: (shared_prefix(slot.cached, tokens), -slot.last_used))
        others = sorted((slot for slot in free if slot is not first), key=lambda slot: slot.last_used)
        reused = shared_prefix(first.cached, tokens)
        for slot in [first, *others[:job.n - 1]]:
            # About to hold another prompt: what it holds goes to the host tier, when what would be lost is worth
            # it (a conversation's next turn loses a few end-of-turn tokens, not worth a copy).
            if len(slot.cached) - shared_prefix(slot.cached, tokens) >= self.model.prompt_cache_min_tokens:
                self._keep(slot)
        restored_before = self.restored_tokens
        reused = self._restore(first, tokens, reused)
        restored = self.restored_tokens - restored_before
        if reused == 0:
            first.tags = set()
        if job.tag:
            first.tags.add(job.tag)
        # Short prefixes are read afresh: llama.cpp's numerics depend a little on
        # how tokens are batched, and a short prompt costs little to read, so the
        # same short request with the same seed gives the same text.
        if reused < self.model.prompt_cache_min_tokens:
            reused = 0
        reused = min(reused, len(tokens) - 1)  # the last prompt token is read again for its logits
        if not self._llama.llama_memory_seq_rm(self._memory, first.seq_id, reused, -1):
            self._forget(first)
            reused = 0
        first.cached = first.cached[:reused]
        room = self.model.context_length - len(tokens)
        limit = room if job.max_tokens is None else min(job.max_tokens, room)
        self._admitted += 1
        self.prompt_tokens_reused += reused
        self.prompt_tokens_read += len(tokens) - reused
        leader = self._start(job, 0, first, limit, list(tokens[reused:]), reused, None)
        leader.restored = restored
        for index, slot in enumerate(others[:job.n - 1], start=1):
            slot.tags = set(first.tags)
            self._start(job, index, slot, limit, [], 0, leader)
        if reused:
            log.debug("prompt cache: %d of %d prompt tokens reused", reused, len(tokens))

    # The prompt cache's tiers ------------------------------------------------

    def _keep(self, slot: _Slot, persist: bool = False) -> None:
        """Save SLOT's KV state in the prompt cache (worth it from prompt_cache_min_tokens on)."""
        if self.cache is None or len(slot.cached) < self.cache.min_tokens:
            return
        llama = self._llama
        size = llama.llama_state_seq_get_size(self._ctx, slot.seq_id)
        buffer = (ctypes.c_uint8 * size)()
        written = llama.llama_state_seq_get_data(self._ctx, buffer, size, slot.seq_id)
        if written:
            self.cache.keep(slot.cached, bytes(memoryview(buffer)[:written]), frozenset(slot.tags), persist)

    def _restore(self, slot: _Slot, tokens: tuple[int, ...], reused: int) -> int:
        """Restore into SLOT the cached state sharing the most with TOKENS, when it shares more than the REUSED
        tokens the slot already holds; how many tokens are now reused."""
        if self.cache is None:
            return reused
        entry, shared = self.cache.best(tokens)
        if entry is None or shared <= reused:
            return reused
        state = self.cache.state_of(entry)
        if state is None:
            return reused
        llama = self._llama
        llama.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        if not llama.llama_state_seq_set_data(self._ctx, (ctypes.c_uint8 * len(state)).from_buffer_copy(state),
                                              len(state), slot.seq_id):
            self.cache.rejected(entry)
            self._forget(slot)
            return 0
        slot.cached = list(entry.tokens)
        slot.tags = set(entry.tags)
        self.cache.restored(entry, min(shared, len(tokens) - 1))
        self.restored_tokens += min(shared, len(tokens) - 1)
        return shared

    def forget_tag(self, tag: str) -> None:
        """A conversation was forgotten: drop the slots and entries that hold its text (between steps)."""
        for slot in self._slots:
            if tag in slot.tags:
                if slot.sequence is None:
                    self._forget(slot)
                else:
                    self._forgotten.add(tag)  # once it finishes
        if self.cache is not None:
            self.cache.forget(tag)

    def _start(self, job, index, slot, limit, pending, position, leader) -> _Sequence:
        ends = self.model.end_of_generation_tokens if job.sampling.ignore_eos else ()
        sampler = Sampler(job.sampling, self.model.n_vocab, index, ends, self.model.model.vocab, job.cancelled)
        sequence = _Sequence(job, index, slot, sampler, limit, TextAssembler(job.prompt.stop), pending, position,
                             leader, order=self._admitted)
        slot.sequence = sequence
        slot.last_used = self._steps
        return sequence

    # Stepping ----------------------------------------------------------------

    def step(self) -> None:
        """Drop cancelled sequences, then evaluate one batch and sample from it."""
        self._steps += 1
        for slot in self._slots:
            if slot.sequence is not None and slot.sequence.job.cancelled.is_set():
                self._finish(slot.sequence, "cancelled")
                self._forget(slot)  # its cells are freed, not kept as a cache
        outputs = self._fill_batch()
        if self._batch.n_tokens == 0:
            return
        result = self._llama.llama_decode(self._ctx, self._batch)
        if result != 0:
            self.fail_all(RuntimeError(f"llama_decode returned {result}"))
            return
        for sequence, batch_index in outputs:
            if sequence.slot.sequence is not sequence:
                continue  # finished while its choice 0 was forked (cannot happen today)
            followers = [slot.sequence for slot in self._slots
                         if slot.sequence is not None and slot.sequence.leader is sequence]
            for follower in followers:
                self._fork(sequence, follower)
            for each in [sequence, *followers]:
                if each.slot.sequence is not each:
                    continue  # its job failed with an earlier choice of this step
                try:
                    token = each.sampler.sample(self._ctx, batch_index)
                except SamplingCancelled:
                    self._finish(each, "cancelled")
                    self._forget(each.slot)
                    continue
                except GrammarTooCostly as error:  # this request's fault, not the model's: it alone fails
                    self.fail_job(each.job, error)
                    continue
                if each.job.sampling.logprobs is not None and not self.model.is_end_of_generation(token):
                    logprob, top = log_probabilities(self._ctx, batch_index, self.model.n_vocab, token,
                                                     each.job.sampling.logprobs)
                    piece = self.model.piece
                    each.logprobs.append(TokenLogprob(piece(token), logprob,
                                                      tuple((piece(other), value) for other, value in top)))
                self._accept(each, token)

    def _fill_batch(self) -> list[tuple[_Sequence, int]]:
        batch = self._batch
        count = 0
        outputs = []

        def add(sequence: _Sequence, token: int, logits: bool) -> None:
            nonlocal count
            batch.token[count] = token
            batch.pos[count] = sequence.position
            batch.n_seq_id[count] = 1
            batch.seq_id[count][0] = sequence.slot.seq_id
            batch.logits[count] = logits
            if logits:
                outputs.append((sequence, count))
            sequence.position += 1
            sequence.slot.cached.append(token)
            count += 1

        sequences = [slot.sequence for slot in self._slots if slot.sequence is not None]
        for sequence in sequences:
            if sequence.next_token is not None:
                add(sequence, sequence.next_token, True)
                sequence.next_token = None
        for sequence in sorted((s for s in sequences if s.pending), key=lambda s: s.order):
            piece = sequence.pending[:BATCH_TOKENS - count]
            if not piece:
                break
            del sequence.pending[:len(piece)]
            for offset, token in enumerate(piece):
                add(sequence, token, not sequence.pending and offset == len(piece) - 1)
        batch.n_tokens = count
        return outputs

    def _fork(self, leader: _Sequence, follower: _Sequence) -> None:
        """Give FOLLOWER a copy of the prompt its leader has just read."""
        self._llama.llama_memory_seq_rm(self._memory, follower.slot.seq_id, -1, -1)
        self._llama.llama_memory_seq_cp(self._memory, leader.slot.seq_id, follower.slot.seq_id, -1, -1)
        follower.slot.cached = list(leader.slot.cached)
        follower.position = leader.position
        follower.leader = None

    def _accept(self, sequence: _Sequence, token: int) -> None:
        if self.model.is_end_of_generation(token):
            self._finish(sequence, "stop")
            return
        sequence.generated += 1
        text = sequence.assembler.feed(self.model.piece(token))
        if text:
            sequence.job.emit(Chunk(text, index=sequence.index, logprobs=self._take_logprobs(sequence)))
        if sequence.assembler.stopped:
            self._finish(sequence, "stop")
        elif sequence.generated >= sequence.limit:
            self._finish(sequence, "length")
        else:
            sequence.next_token = token

    @staticmethod
    def _take_logprobs(sequence: _Sequence) -> tuple:
        """The log probabilities gathered since the last chunk (text held back keeps them waiting too)."""
        taken, sequence.logprobs = tuple(sequence.logprobs), []
        return taken

    def _finish(self, sequence: _Sequence, reason: str) -> None:
        tail = sequence.assembler.finish()
        if tail and reason != "cancelled":
            sequence.job.emit(Chunk(tail, index=sequence.index, logprobs=self._take_logprobs(sequence)))
        sequence.job.emit(Chunk("", reason, len(sequence.job.prompt.tokens), sequence.generated, sequence.index,
                                logprobs=self._take_logprobs(sequence), restored_tokens=sequence.restored))
        sequence.sampler.close()
        sequence.slot.sequence = None
        sequence.slot.last_used = self._steps
        if sequence.pending or sequence.leader is not None or sequence.slot.tags & self._forgotten:
            self._forget(sequence.slot)  # a half-read prompt is no use as a cache; a forgotten one must go
        if not self.active:
            self._forgotten.clear()  # every slot that held them has finished and been dropped

    def _forget(self, slot: _Slot) -> None:
        self._llama.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.cached = []
        slot.tags = set()

    def fail_job(self, job: Job, error: BaseException) -> None:
        """End JOB, every choice of it, with ERROR; the model's other jobs go on."""
        log.warning("request failed on %s: %s", self.model.entry.alias, error)
        self.drop(job)
        job.emit(error)

    def drop(self, job: Job) -> None:
        """Free whatever slots JOB had taken when its admission failed half-way."""
        for slot in self._slots:
            if slot.sequence is not None and slot.sequence.job is job:
                slot.sequence.sampler.close()
                slot.sequence = None
                self._forget(slot)

    def fail_all(self, error: BaseException) -> None:
        log.error("generation failed on %s: %s", self.model.entry.alias, error)
        jobs = {id(slot.sequence.job): slot.sequence.job for slot in self._slots if slot.sequence is not None}
        for slot in self._slots:
            if slot.sequence is not None:
                slot.sequence.sampler.close()
                slot.sequence = None
            self._forget(slot)
        for job in jobs.values():
            job.emit(error)

    def close(self) -> None:
        for slot in self._slots:
            if slot.sequence is not None:
                self._finish(slot.sequence, "cancelled")
        if self.cache is not None:
            # Unloaded (LRU, budget, keep_alive) or exiting: the slots' prefixes outlive the model, longest first.
            started, saves = time.monotonic(), self.cache.counters.saves
            for slot in sorted(self._slots, key=lambda slot: -len(slot.cached)):
                if time.monotonic() - started > SAVE_AT_CLOSE_SECONDS:
                    log.warning("prompt cache of %s: saving stopped after %g s, within the stop's time; the "
                                "shorter prefixes are not kept", self.model.entry.alias, SAVE_AT_CLOSE_SECONDS)
                    break
                self._keep(slot, persist=True)
            self.cache.persist_all()
            disk = self.cache.describe()["disk"]
            log.info("prompt cache of %s: %d slot prefixes saved, %d entries (%.0f MiB) on disk, in %.2f s",
                     self.model.entry.alias, self.cache.counters.saves - saves, disk["entries"],
                     disk["bytes"] / 2**20, time.monotonic() - started, extra={"MODEL": self.model.entry.alias})
        self._llama.llama_batch_free(self._batch)
