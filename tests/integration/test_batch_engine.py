"""The batch engine in process, against llama-cpp-python's own Llama on the same model."""

from __future__ import annotations

import asyncio

import pytest

from hoshikage.engine.llama import BATCH_TOKENS, LoadedModel, LoadOptions
from hoshikage.engine.sampling import SamplingParams
from hoshikage.engine.scheduler import ModelScheduler
from hoshikage.registry import ModelEntry

CONTEXT = 2048


@pytest.fixture(scope="module")
def reference(gemma_path):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gemma_path), n_ctx=CONTEXT, n_batch=BATCH_TOKENS, n_threads=2,
                          flash_attn=True, verbose=False)
    yield llm
    llm.close()


def _generate(gemma_path, tokens: list[int], max_tokens: int) -> str:
    # Repacked weights, as llama-cpp-python's Llama uses them, so the numerics match.
    entry = ModelEntry("gemma", str(gemma_path), CONTEXT, None, "gemma", False, 0.0, None)
    model = LoadedModel.load(entry, LoadOptions(context_length=CONTEXT, gpu_layers=0, threads=2, slots=2,
                                                batch_invariant=False))

    async def run() -> str:
        scheduler = ModelScheduler(model, max_waiting=1)
        try:
            prompt = model.completion_prompt(tuple(tokens), ())
            parts = [chunk.text async for chunk in scheduler.submit(prompt, SamplingParams(temperature=0), max_tokens)]
        finally:
            await scheduler.close()
        return "".join(parts)

    return asyncio.run(run())


def test_a_prompt_longer_than_one_batch_is_read_whole(gemma_path, reference):
    text = " ".join(f"Line {number}: the lighthouse keeper counted {number * 7} waves." for number in range(80))
    tokens = reference.tokenize(text.encode(), add_bos=True)
    assert len(tokens) > 2 * BATCH_TOKENS  # read in three steps
    expected = reference.create_completion(tokens, max_tokens=24, temperature=0)["choices"][0]["text"]
    assert _generate(gemma_path, tokens, 24) == expected
