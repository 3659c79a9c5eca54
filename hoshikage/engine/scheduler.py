"""Run generation jobs for one model, in order, off the event loop.

Each loaded model has one worker thread; jobs wait in FIFO order and never
interrupt one another (llama-cpp-python's own server cuts off the running
stream when a new one arrives). The surface is deliberately the one a batching
scheduler needs too: ``submit`` returns a TokenStream that the caller iterates
and may ``cancel``; how jobs share the model is this module's business alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import AsyncIterator

from hoshikage.engine.llama import Chunk, LoadedModel, Prompt
from hoshikage.engine.sampling import SamplingParams

log = logging.getLogger("hoshikage.scheduler")


class GenerationFailed(Exception):
    """The engine raised while generating; the request ends with a server error."""


class QueueFull(Exception):
    """Too many requests already wait for this model; the client should retry later."""


class TokenStream:
    """Chunks of one job, as they are generated, for the event loop to consume.

    The worker hands over a chunk and waits (briefly) until the event loop has
    sent it before decoding the next token. On a machine where llama.cpp's
    threads already fill every core, the loop waking up in the middle of a
    decode step preempts one of them and stalls the whole step at its barrier;
    taking turns costs less than that (~0.2 ms a token) and still sends every
    token the moment it exists. A slow client cannot stall the model: after
    HANDOVER_WAIT the worker goes on without it.
    """

    HANDOVER_WAIT = 0.05  # seconds

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        self._consumed = threading.Event()
        self.cancelled = threading.Event()
        self.started = asyncio.Event()  # the worker took the job out of the queue
        self.finished = False

    def cancel(self) -> None:
        """Stop generating at the next token; safe to call at any time, twice."""
        self.cancelled.set()
        self._consumed.set()

    # Called from the worker thread.
    def put_threadsafe(self, item: Chunk | BaseException) -> None:
        self._consumed.clear()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        if isinstance(item, Chunk) and item.finish_reason is None and not self.cancelled.is_set():
            self._consumed.wait(self.HANDOVER_WAIT)

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        while not self.finished:
            self._consumed.set()  # the previous chunk is sent: the worker may go on
            item = await self._queue.get()
            if isinstance(item, BaseException):
                self.finished = True
                raise GenerationFailed(str(item)) from item
            if item.finish_reason is not None:
                self.finished = True
            yield item


class ModelScheduler:
    def __init__(self, model: LoadedModel, max_waiting: int):
        self.model = model
        self.max_waiting = max_waiting
        self._queued: set[TokenStream] = set()
        self.running = 0
        self.leases = 0  # handed out by the pool, job not submitted yet
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"model-{model.entry.alias}")

    @property
    def waiting(self) -> int:
        """Jobs in the queue whose client still waits (a cancelled one is skipped when reached)."""
        return sum(not stream.cancelled.is_set() for stream in self._queued)

    @property
    def busy(self) -> bool:
        """Queued, running or about to be: not to be unloaded."""
        return bool(self._queued) or self.running > 0 or self.leases > 0

    def release_lease(self) -> None:
        self.leases -= 1

    def submit(self, prompt: Prompt, sampling: SamplingParams, max_tokens: int | None) -> TokenStream:
        """Queue a job; QueueFull when the model is busy and max_waiting clients already wait."""
        if (self._queued or self.running) and self.waiting >= self.max_waiting:
            raise QueueFull(self.waiting)
        loop = asyncio.get_running_loop()
        stream = TokenStream(loop)
        self._queued.add(stream)
        future = loop.run_in_executor(self._executor, self._run, loop, stream, prompt, sampling, max_tokens)
        future.add_done_callback(self._job_done)
        return stream

    def _run(self, loop, stream: TokenStream, prompt, sampling, max_tokens) -> None:
        loop.call_soon_threadsafe(self._job_started, stream)
        if stream.cancelled.is_set():  # the client left while it waited its turn
            stream.put_threadsafe(Chunk("", "cancelled", len(prompt.tokens), 0))
            return
        try:
            self.model.generate(prompt, sampling, max_tokens, stream.cancelled, stream.put_threadsafe)
        except Exception as error:  # noqa: BLE001 - reported to the request, logged here
            log.exception("generation failed on %s", self.model.entry.alias)
            stream.put_threadsafe(error)

    def _job_started(self, stream: TokenStream) -> None:
        self._queued.discard(stream)
        stream.started.set()
        self.running += 1

    def _job_done(self, future: asyncio.Future) -> None:
        self.running -= 1

    async def close(self) -> None:
        """Wait for the worker to finish its jobs, then free the model."""
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        self.model.close()
