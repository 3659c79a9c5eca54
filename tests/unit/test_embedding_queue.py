"""An embedding model's worker takes one request at a time and refuses more than max_queue waiting ones."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hoshikage.engine.embedding import EmbeddingRunner
from hoshikage.engine.scheduler import QueueFull
from hoshikage.registry import ModelEntry


class HeldModel:
    """Embeds only once the test lets it (pure logic: no llama.cpp)."""

    entry = ModelEntry(alias="held", path="/dev/null")

    def __init__(self):
        self.release = threading.Event()
        self.started = threading.Event()

    def prepare(self, inputs, truncate):
        return [[1, 2, 3] for _ in inputs]

    def embed(self, prepared):
        self.started.set()
        self.release.wait(timeout=60)
        return [[1.0] for _ in prepared]

    def close(self):
        pass


def test_requests_beyond_the_queue_are_refused_and_the_rest_are_answered_in_turn():
    async def scenario():
        model = HeldModel()
        runner = EmbeddingRunner(model, max_waiting=1)
        first = asyncio.ensure_future(runner.embed(["a"], truncate=False))
        await asyncio.get_running_loop().run_in_executor(None, model.started.wait)  # the worker holds the first
        second = asyncio.ensure_future(runner.embed(["b", "c"], truncate=False))
        await asyncio.sleep(0)  # let it join the queue
        assert runner.waiting == 1 and runner.busy
        with pytest.raises(QueueFull):
            await runner.embed(["d"], truncate=False)
        model.release.set()
        done = await asyncio.gather(first, second)
        assert [len(result.vectors) for result in done] == [1, 2] and done[1].prompt_tokens == 6
        assert runner.waiting == 0 and not runner.busy
        await runner.close()

    asyncio.run(scenario())
