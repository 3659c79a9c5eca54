"""The batch engine in process, against llama-cpp-python's own Llama on the same model."""

from __future__ import annotations

import asyncio

import pytest

from hoshikage.engine.llama import BATCH_TOKENS, LoadedModel, LoadOptions
from hoshikage.engine.sampling import SamplingParams
from hoshikage.engine.scheduler import ModelScheduler
from hoshikage.registry import ModelEntry
from tests.llama_reference import repack_allowed, reference_llama

CONTEXT = 2048


@pytest.fixture(scope="module")
def reference(gemma_path):
    llm = reference_llama(model_path=str(gemma_path), n_ctx=CONTEXT, n_batch=BATCH_TOKENS, n_threads=2,
                          flash_attn=True, verbose=False)
    yield llm
    llm.close()


def _load(gemma_path, **options) -> LoadedModel:
    entry = ModelEntry("gemma", str(gemma_path), CONTEXT, None, "gemma", False, 0.0, None)
    options = {"weight_repack": repack_allowed(), **options}
    return LoadedModel.load(entry, LoadOptions(context_length=CONTEXT, gpu_layers=0, threads=2, **options))


def _generate(gemma_path, tokens: list[int], max_tokens: int) -> str:
    # Repacked weights where the host allows them, as the reference Llama loads them, so the numerics match.
    model = _load(gemma_path, slots=2, batch_invariant=False)

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


def test_the_greedy_shortcut_picks_what_llama_cpp_greedy_sampler_picks(gemma_path, reference):
    import llama_cpp

    from hoshikage.engine.sampling import Sampler

    model = _load(gemma_path, slots=1)
    text = "The lighthouse keeper counted the waves, the gulls and the ships that passed the rocks at night."
    tokens = reference.tokenize(text.encode(), add_bos=True)
    batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
    greedy = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(greedy, llama_cpp.llama_sampler_init_greedy())
    shortcut = Sampler(SamplingParams(temperature=0), model.n_vocab)
    try:
        for position, token in enumerate(tokens):  # logits at every position: one pick per prefix
            batch.token[position], batch.pos[position], batch.logits[position] = token, position, True
            batch.n_seq_id[position], batch.seq_id[position][0] = 1, 0
        batch.n_tokens = len(tokens)
        assert llama_cpp.llama_decode(model.context.ctx, batch) == 0
        picks = [(shortcut.sample(model.context.ctx, position),
                  llama_cpp.llama_sampler_sample(greedy, model.context.ctx, position))
                 for position in range(len(tokens))]
    finally:
        shortcut.close()
        llama_cpp.llama_sampler_free(greedy)
        llama_cpp.llama_batch_free(batch)
        model.close()
    assert len(tokens) > 20
    assert all(ours == theirs for ours, theirs in picks), picks
    assert len({ours for ours, _ in picks}) > 5  # real, varied picks, not one constant
