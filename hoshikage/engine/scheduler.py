"""Feed one model's batch engine from a bounded queue, off the event loop.

Each loaded model has one worker thread. Requests wait for slots in a fair
queue (engine/fair_queue.py): round-robin across identities, each identity's
in arrival order. The worker admits the next one as soon as enough slots are
free (between two decode steps) and runs steps while any request is
generating. The next request is never overtaken, so one that needs several
slots (n > 1) is not starved by a stream of small ones.

One identity holds at most ``slots`` sequences; the context has
``spare_slots`` more. So while one client keeps every slot busy, another's
request starts at the next step in a spare sequence, instead of waiting for
one of the first client's answers to end (which is what a queue alone, however
fair, can offer). A lone client never uses the spare: its throughput is what
it was, and the spare costs only its share of KV memory.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator

from hoshikage.engine.batch import BatchEngine, Job
from hoshikage.engine.cpu_share import CpuShare
from hoshikage.engine.fair_queue import FairQueue
from hoshikage.engine.llama import Chunk, LoadedModel, Prompt
from hoshikage.engine.prompt_cache import PromptCache
from hoshikage.engine.sampling import SamplingParams

log = logging.getLogger("hoshikage.scheduler")


class GenerationFailed(Exception):
    """The engine raised while generating; the request ends with a server error."""


class TooManyChoices(Exception):
    """n is more than the model's slots: the request could never start."""

    def __init__(self, n: int, slots: int):
        super().__init__(f"n={n} > {slots} slots")
        self.n = n
        self.slots = slots


class QueueFull(Exception):
    """Too many requests already wait for this model; the client should retry later."""

    def __init__(self, waiting: int, identity: str | None = None):
        super().__init__(waiting)
        self.waiting = waiting
        self.identity = identity  # set when it is this identity's own cap that is reached


class TokenStream:
    """Chunks of one request, as they are generated, for the event loop to consume.

    After each step the worker waits (briefly) until the event loop has sent
    what the step produced before it starts the next one. On a machine where
    llama.cpp's threads already fill every core, the loop waking up in the
    middle of a decode step preempts one of them and stalls the whole step at
    its barrier; taking turns costs less than that and still sends every
    token as soon as the step that made it ends. A slow client cannot stall
    the batch: after HANDOVER_WAIT the worker goes on without it.
    """

    HANDOVER_WAIT = 0.05  # seconds

    def __init__(self, loop: asyncio.AbstractEventLoop, choices: int = 1):
        self._loop = loop
        self._queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        self._held: collections.deque[Chunk | BaseException] = collections.deque()  # for the next hand-over
        self._consumed = threading.Event()
        self._unfinished = choices
        self.cancelled = threading.Event()
        self.started = asyncio.Event()  # the request has its slots
        self.finished = False

    def cancel(self) -> None:
        """Stop generating at the next step; safe to call at any time, twice."""
        self.cancelled.set()
        self._consumed.set()

    # Called from the worker thread.
    def hold(self, item: Chunk | BaseException) -> None:
        """Keep ITEM for hand_over(), after the step."""
        self._consumed.clear()
        self._held.append(item)

    @staticmethod
    def hand_over(streams: list[TokenStream]) -> None:
        """Pass what STREAMS hold to their consumers, waking each event loop once."""
        by_loop: dict[asyncio.AbstractEventLoop, list[TokenStream]] = collections.defaultdict(list)
        for stream in streams:
            by_loop[stream._loop].append(stream)
        for loop, group in by_loop.items():
            loop.call_soon_threadsafe(TokenStream._release, group)

    @staticmethod
    def _release(streams: list[TokenStream]) -> None:  # on the event loop
        for stream in streams:
            # popleft() until empty, not a swap: the worker may append meanwhile
            # (after HANDOVER_WAIT); what it adds now goes with the next hand-over.
            while stream._held:
                stream._queue.put_nowait(stream._held.popleft())

    def mark_started_threadsafe(self) -> None:
        self._loop.call_soon_threadsafe(self.started.set)

    def wait_consumed(self, deadline: float) -> None:
        if not self.cancelled.is_set():
            self._consumed.wait(max(0.0, deadline - time.monotonic()))

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        while not self.finished:
            if self._queue.empty() and not self._held:
                self._consumed.set()  # everything handed over is sent: the worker may go on
            item = await self._queue.get()
            if isinstance(item, BaseException):
                self.finished = True
                self._consumed.set()
                raise GenerationFailed(str(item)) from item
            if item.finish_reason is not None:
                self._unfinished -= 1
                self.finished = self._unfinished == 0
                if self.finished:
                    self._consumed.set()  # nothing more will be sent: the worker must not wait for it
            yield item


def _still_waiting(queued: tuple[Job, TokenStream]) -> bool:
    return not queued[1].cancelled.is_set()


class ModelScheduler:
    def __init__(self, model: LoadedModel, max_waiting: int, cpu_share: CpuShare | None = None,
                 cache: PromptCache | None = None, max_waiting_per_identity: int | None = None):
        self.model = model
        self.cpu_share = cpu_share  # None: always decode with the configured threads
        self.max_waiting = max_waiting
        self.max_waiting_per_identity = (max_waiting if max_waiting_per_identity is None
                                         else max_waiting_per_identity)
        self.leases = 0  # handed out by the pool, job not submitted yet
        self.running = 0  # requests holding slots
        self.cache = cache
        self._engine = BatchEngine(model, cache)
        self._forget_tags: set[str] = set()  # conversations forgotten, for the worker to drop between steps
        self._queue: FairQueue[tuple[Job, TokenStream]] = FairQueue()
        self._holding: dict[str, int] = {}  # identity -> the slots its requests hold now
        self._touched: set[TokenStream] = set()  # streams that got chunks in this step
        self._lock = threading.Condition()
        self._closing = False
        self._worker = threading.Thread(target=self._work, name=f"model-{model.entry.alias}", daemon=True)
        self._worker.start()

    @property
    def slots(self) -> int:
        return self.model.slots

    def describe_slots(self) -> list[dict]:
        return self._engine.describe_slots()

    def describe_prompt_cache(self) -> dict:
        described = {"reused_tokens": self._engine.prompt_tokens_reused, "read_tokens": self._engine.prompt_tokens_read,
                     "restored_tokens": self._engine.restored_tokens}
        if self.cache is not None:
            described["tiers"] = self.cache.describe()
        return described

    def forget_tag(self, tag: str) -> None:
        """Drop what the slots and the prompt cache hold of conversation TAG (the slots between two steps)."""
        if self.cache is not None:
            self.cache.forget(tag)
        with self._lock:
            self._forget_tags.add(tag)
            self._lock.notify()

    @property
    def waiting(self) -> int:
        """Requests in the queue whose client still waits (a cancelled one is dropped when reached)."""
        return sum(self.waiting_by_identity().values())

    def waiting_by_identity(self) -> dict[str, int]:
        """Requests whose client still waits, per identity (counts, never contents)."""
        with self._lock:
            return self._queue.counts(_still_waiting)

    @property
    def busy(self) -> bool:
        """Queued, running or about to be: not to be unloaded."""
        with self._lock:
            return bool(self._queue) or self.running > 0 or self.leases > 0

    def release_lease(self) -> None:
        self.leases -= 1

    def submit(self, prompt: Prompt, sampling: SamplingParams, max_tokens: int | None, n: int = 1,
               tag: str | None = None, identity: str = "anonymous") -> TokenStream:
        """Queue a request of IDENTITY; QueueFull when it cannot start now and max_waiting clients already wait,
        or max_waiting_per_identity of IDENTITY's."""
        if n > self.slots:
            raise TooManyChoices(n, self.slots)
        stream = TokenStream(asyncio.get_running_loop(), n)
        unfinished = [n]  # choices still generating; only the worker thread changes it

        def emit(item: Chunk | BaseException) -> None:
            self._emit(stream, item, unfinished, identity, n)

        job = Job(prompt, sampling, max_tokens, n, emit, stream.cancelled, tag)
        with self._lock:
            must_wait = (bool(self._queue) or self._engine.free_slots < n
                         or self._holding.get(identity, 0) + n > self.slots)
            if must_wait:
                counts = self._queue.counts(_still_waiting)
                if counts.get(identity, 0) >= self.max_waiting_per_identity:
                    raise QueueFull(counts[identity] if identity in counts else 0, identity)
                if sum(counts.values()) >= self.max_waiting:
                    raise QueueFull(sum(counts.values()))
            self._queue.append(identity, (job, stream))
            self._lock.notify()
        return stream

    # The worker thread -----------------------------------------------------

    def _send(self, stream: TokenStream, item: Chunk | BaseException) -> None:
        """Queue ITEM for the hand-over after this step."""
        stream.hold(item)
        self._touched.add(stream)

    def _emit(self, stream: TokenStream, item: Chunk | BaseException, unfinished: list[int], identity: str,
              n: int) -> None:
        self._send(stream, item)
        if isinstance(item, BaseException) or item.finish_reason is not None:
            unfinished[0] = 0 if isinstance(item, BaseException) else unfinished[0] - 1
            if unfinished[0] == 0:
                with self._lock:
                    self.running -= 1
                    self._release_hold(identity, n)

    def _release_hold(self, identity: str, n: int) -> None:
        """IDENTITY gives back the N slots of a request that ended (lock held)."""
        self._holding[identity] -= n
        if not self._holding[identity]:
            del self._holding[identity]

    def _work(self) -> None:
        while True:
            with self._lock:
                while (not self._queue and not self._engine.active and not self._closing
                       and not self._forget_tags):
                    self._lock.wait()
                while self._forget_tags:
                    self._engine.forget_tag(self._forget_tags.pop())
                if self._closing and not self._queue and not self._engine.active:
                    break
                self._admit()
            self._fit_threads()
            try:
                self._engine.step()
            except Exception as error:  # noqa: BLE001 - a bug here must not leave clients waiting
                log.exception("batch step failed on %s", self.model.entry.alias)
                self._engine.fail_all(error)
            self._hand_over(wait=True)
        self._engine.close()
        self._hand_over(wait=False)
        self.model.close()

    def _fit_threads(self) -> None:
        """Between steps: decode with the threads the CPU can give now (engine/cpu_share.py)."""
        threads = self.cpu_share.decide() if self.cpu_share is not None else None
        if threads is not None:
            log.debug("%s decodes with %d of %d threads now", self.model.entry.alias, threads, self.cpu_share.most)
            self.model.set_threads(threads)

    def _hand_over(self, wait: bool) -> None:
        """Send what the step produced, in one wake-up of the event loop, after the step.

        Sending each token the moment it is sampled would wake the event loop
        while this thread still samples the other sequences, and the two would
        trade the GIL at every ctypes call (0.6 ms a step with four sequences).
        """
        streams = list(self._touched)
        self._touched.clear()
        TokenStream.hand_over(streams)
        if wait:
            deadline = time.monotonic() + TokenStream.HANDOVER_WAIT
            for stream in streams:
                stream.wait_consumed(deadline)

    def _admit(self) -> None:
        """Start queued requests, each identity's turn in order, while their slots are free (lock held)."""
        while self._queue:
            identity, (job, stream) = self._queue.head(self._holding)
            if stream.cancelled.is_set():  # the client left while it waited its turn
                self._queue.pop(identity, served=False)
                for index in range(job.n):
                    self._send(stream, Chunk("", "cancelled", len(job.prompt.tokens), 0, index))
                continue
            if self._engine.free_slots < job.n or self._holding.get(identity, 0) + job.n > self.slots:
                return  # (the next request's identity holds its share: everyone waiting holds as many or more)
            self._queue.pop(identity, served=True)
            self.running += 1
            self._holding[identity] = self._holding.get(identity, 0) + job.n
            stream.mark_started_threadsafe()  # the request reads what follows: its chunks, or the error
            try:
                self._engine.admit(job)
            except Exception as error:  # noqa: BLE001 - a bug here must fail this request, not the worker
                log.exception("starting a request on %s failed", self.model.entry.alias)
                self._engine.drop(job)
                self._send(stream, error)
                self.running -= 1
                self._release_hold(identity, job.n)

    async def close(self) -> None:
        """Let the worker finish what it has, then free the model."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        await asyncio.get_running_loop().run_in_executor(None, self._worker.join)
