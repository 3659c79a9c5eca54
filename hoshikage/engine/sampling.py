"""Sampling settings of one request, in OpenAI's terms, and the sampler that applies them to one sequence."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_k: int = 0  # llama.cpp's extensions: 0, 0.0 and 1.0 leave them out of the chain
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit); ids checked by the caller
    ignore_eos: bool = False  # never pick an end-of-generation token: run to max_tokens


# Tokens the presence and frequency penalties look back over (llama.cpp's default).
PENALTY_WINDOW = 64


class Sampler:
    """Picks the next tokens of one sequence; close() frees it.

    Each sequence has its own sampler, so requests decoding in one batch keep
    their own settings, penalty history and random state. Choice i of an
    n > 1 request samples with seed + i, so every choice differs yet the
    request as a whole is reproducible.
    """

    def __init__(self, params: SamplingParams, n_vocab: int, seed_offset: int = 0,
                 end_of_generation: tuple[int, ...] = ()):
        """END_OF_GENERATION: the model's end tokens, banned when params.ignore_eos."""
        import llama_cpp

        self._llama = llama_cpp
        self._n_vocab = n_vocab
        bias = dict(params.logit_bias)
        if params.ignore_eos:
            bias.update((token, float("-inf")) for token in end_of_generation)
        # Greedy without penalties is the argmax of the logits, which is what
        # llama.cpp's greedy sampler returns too (the first maximum). Taking it
        # directly skips llama_sampler_sample's copy of the whole vocabulary
        # into a candidate array: 0.3 ms a token for Gemma 3's 262k tokens,
        # 3% of a step with four sequences; the argmax takes 0.03 ms.
        penalised = bool(params.presence_penalty or params.frequency_penalty or params.repeat_penalty != 1.0)
        self._chain = (None if params.temperature <= 0 and not penalised
                       else _chain(params, seed_offset, bias, n_vocab))
        if self._chain is None:
            import numpy  # already loaded by llama_cpp

            self._numpy = numpy
            self._bias_ids = numpy.fromiter(bias.keys(), dtype=numpy.int64, count=len(bias))
            self._bias_values = numpy.fromiter(bias.values(), dtype=numpy.float32, count=len(bias))

    def sample(self, context, batch_index: int) -> int:
        """The next token, from the logits of BATCH_INDEX in the last decoded batch."""
        if self._chain is not None:
            return self._llama.llama_sampler_sample(self._chain, context, batch_index)
        logits = self._numpy.ctypeslib.as_array(self._llama.llama_get_logits_ith(context, batch_index),
                                                shape=(self._n_vocab,))
        if self._bias_ids.size:
            logits = logits.copy()  # llama.cpp's own buffer stays as it was
            logits[self._bias_ids] += self._bias_values
        return int(logits.argmax())

    def close(self) -> None:
        if self._chain is not None:
            self._llama.llama_sampler_free(self._chain)
            self._chain = None


def _chain(params: SamplingParams, seed_offset: int, bias: dict[int, float], n_vocab: int):
    """A llama.cpp sampler chain for PARAMS, with BIAS added to the logits first."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if bias:
        entries = (llama_cpp.llama_logit_bias * len(bias))(*(llama_cpp.llama_logit_bias(token, value)
                                                             for token, value in bias.items()))
        # llama.cpp copies the entries: the ctypes array may go when this returns.
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_logit_bias(
            n_vocab, len(bias), entries))
    if params.presence_penalty or params.frequency_penalty or params.repeat_penalty != 1.0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_penalties(
            n_vocab, PENALTY_WINDOW, params.repeat_penalty, params.frequency_penalty, params.presence_penalty))
    if params.temperature <= 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    if params.top_k > 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
    if params.top_p < 1.0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
    if params.min_p > 0.0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
    seed = llama_cpp.LLAMA_DEFAULT_SEED if params.seed is None else (params.seed + seed_offset) & 0xFFFFFFFF
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain
