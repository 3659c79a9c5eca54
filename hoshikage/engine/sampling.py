"""Sampling settings of one request, in OpenAI's terms."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None


# Tokens the presence and frequency penalties look back over (llama.cpp's default).
PENALTY_WINDOW = 64


def new_sampler(params: SamplingParams, n_vocab: int, seed_offset: int = 0):
    """A llama.cpp sampler chain for PARAMS; the caller frees it with llama_sampler_free.

    Each sequence has its own chain, so requests decoding in one batch keep
    their own settings, penalty history and random state. Choice i of an
    n > 1 request samples with seed + i, so every choice differs yet the
    request as a whole is reproducible.
    """
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if params.presence_penalty or params.frequency_penalty:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_penalties(
            PENALTY_WINDOW, 1.0, params.frequency_penalty, params.presence_penalty))
    if params.temperature <= 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    if params.top_p < 1.0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
    seed = llama_cpp.LLAMA_DEFAULT_SEED if params.seed is None else (params.seed + seed_offset) & 0xFFFFFFFF
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain
