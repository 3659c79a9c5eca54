"""Sampling settings of one request, in OpenAI's terms, and the sampler that applies them to one sequence."""

from __future__ import annotations

import ctypes
import dataclasses
import threading
import time


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
    grammar: str | None = None  # GBNF (root rule "root") the output must follow: structured output
    logprobs: int | None = None  # report each token's log probability and this many alternatives (None: no)


class GrammarError(ValueError):
    """llama.cpp could not parse a grammar."""


class GrammarTooCostly(RuntimeError):
    """One token under the request's grammar took longer than GRAMMAR_STEP_SECONDS: the request fails, the
    model's other requests go on."""


class SamplingCancelled(Exception):
    """The request was cancelled while its token was being sought under its grammar."""


def check_grammar(vocab, grammar: str) -> None:
    """Raise GrammarError unless llama.cpp accepts GRAMMAR for VOCAB (a model's llama_vocab pointer)."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        raise GrammarError("llama.cpp could not parse the grammar")
    llama_cpp.llama_sampler_free(sampler)


# Tokens the presence and frequency penalties look back over (llama.cpp's default).
PENALTY_WINDOW = 64
# Under a grammar, tokens are first sought among this many likeliest (see Sampler._pick).
GRAMMAR_SHORTLIST = 256
GREEDY_TRIES = 16  # greedy under a grammar: this many next-likeliest tokens are checked one by one first
# The whole vocabulary is checked against a grammar in pieces this large, so that a request cancelled or over
# its time is let go between two pieces instead of holding the model's worker for the whole pass.
GRAMMAR_PIECE = 16384
GRAMMAR_STEP_SECONDS = 10.0  # the longest one token may take to find under a grammar (schemas are bounded too)


class Sampler:
    """Picks the next tokens of one sequence; close() frees it.

    Each sequence has its own sampler, so requests decoding in one batch keep
    their own settings, penalty history and random state. Choice i of an
    n > 1 request samples with seed + i, so every choice differs yet the
    request as a whole is reproducible.
    """

    def __init__(self, params: SamplingParams, n_vocab: int, seed_offset: int = 0,
                 end_of_generation: tuple[int, ...] = (), vocab=None, cancelled: threading.Event | None = None):
        """END_OF_GENERATION: the model's end tokens, banned when params.ignore_eos; VOCAB: the model's
        llama_vocab, needed for a grammar; CANCELLED: set when the request is cancelled."""
        import llama_cpp

        self._llama = llama_cpp
        self._n_vocab = n_vocab
        self._cancelled = cancelled
        self._grammar = None
        self._ids = None
        if params.grammar is not None:
            self._grammar = llama_cpp.llama_sampler_init_grammar(vocab, params.grammar.encode(), b"root")
            if not self._grammar:
                raise GrammarError("llama.cpp could not parse the grammar")
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
        import numpy  # already loaded by llama_cpp

        self._numpy = numpy
        if self._chain is None:
            self._bias_ids = numpy.fromiter(bias.keys(), dtype=numpy.int64, count=len(bias))
            self._bias_values = numpy.fromiter(bias.values(), dtype=numpy.float32, count=len(bias))

    def sample(self, context, batch_index: int) -> int:
        """The next token, from the logits of BATCH_INDEX in the last decoded batch."""
        if self._grammar is not None:
            return self._sample_with_grammar(context, batch_index)
        if self._chain is not None:
            return self._llama.llama_sampler_sample(self._chain, context, batch_index)
        logits = self._numpy.ctypeslib.as_array(self._llama.llama_get_logits_ith(context, batch_index),
                                                shape=(self._n_vocab,))
        if self._bias_ids.size:
            logits = logits.copy()  # llama.cpp's own buffer stays as it was
            logits[self._bias_ids] += self._bias_values
        return int(logits.argmax())

    def _sample_with_grammar(self, context, batch_index: int) -> int:
        """Sample as without the grammar; only when the grammar forbids that token, sample again from the
        tokens it allows (llama.cpp's own order: checking one token is far cheaper than filtering a whole
        vocabulary at every step), first among the GRAMMAR_SHORTLIST likeliest, then, if none of those
        fits, among all. Greedy stays exact: the likeliest token the grammar allows. Sampling draws from
        the shortlist's allowed tokens when there are any, leaving out what lies beyond the 256 likeliest."""
        llama = self._llama
        logits = self._numpy.ctypeslib.as_array(llama.llama_get_logits_ith(context, batch_index),
                                                shape=(self._n_vocab,))
        token = self._pick(logits, constrained=False)
        if not self._allows(token):
            token = self._pick(logits, constrained=True)
        llama.llama_sampler_accept(self._grammar, token)
        if self._chain is not None:
            llama.llama_sampler_accept(self._chain, token)
        return token

    def _pick(self, logits, constrained: bool) -> int:
        numpy = self._numpy
        if self._chain is None and self._bias_ids.size:
            logits = logits.copy()
            logits[self._bias_ids] += self._bias_values
        if self._chain is None and not constrained:
            return int(logits.argmax())
        if constrained and self._chain is None:
            # Greedy: the next likeliest tokens one by one (each check ~10 us) before any array is built.
            remaining = logits.copy()
            for _ in range(GREEDY_TRIES):
                token = int(remaining.argmax())
                if self._allows(token):
                    return token
                remaining[token] = -numpy.inf
        if constrained:
            # The grammar checks each candidate's text: ~20 ms over Gemma's 262k tokens, ~0.02 ms over the
            # likeliest few hundred. Those are tried first; the whole vocabulary only when none fits.
            likeliest = numpy.argpartition(-logits, GRAMMAR_SHORTLIST)[:GRAMMAR_SHORTLIST]
            token = self._pick_among(logits, likeliest.astype(numpy.int32))
            if token is not None:
                return token
        if self._ids is None:
            self._ids = numpy.arange(self._n_vocab, dtype=numpy.int32)
        token = self._pick_among(logits, self._ids, constrained)
        return token if token is not None else int(logits.argmax())  # nothing allowed: the grammar is done

    def _pick_among(self, logits, ids, constrained: bool = True) -> int | None:
        """The token sampled from IDS (the grammar applied first when CONSTRAINED); None when it allows none."""
        numpy, llama = self._numpy, self._llama
        data = numpy.empty(len(ids), dtype=_TOKEN_DATA)
        data["id"] = ids
        data["logit"] = logits[ids]
        data["p"] = 0.0
        if constrained:
            self._apply_grammar(data)
            if not numpy.isfinite(data["logit"]).any():
                return None
        candidates = _candidates(llama, data)
        if self._chain is None:
            return int(data["id"][int(data["logit"].argmax())])  # the grammar sets what it forbids to -inf
        llama.llama_sampler_apply(self._chain, ctypes.byref(candidates))
        chosen = numpy.ctypeslib.as_array(
            ctypes.cast(candidates.data, ctypes.POINTER(ctypes.c_int32)), shape=(candidates.size * 3,))
        return int(chosen[candidates.selected * 3])  # samplers may re-sort or replace the array

    def _apply_grammar(self, data) -> None:
        """Set what the grammar forbids among DATA to -inf, piece by piece (the grammar only marks tokens, so
        pieces give what one pass gives), letting go between pieces of a cancelled or overlong request."""
        started = time.monotonic()
        for begin in range(0, len(data), GRAMMAR_PIECE):
            piece = data[begin:begin + GRAMMAR_PIECE]  # a view: the marks land in DATA
            self._llama.llama_sampler_apply(self._grammar, ctypes.byref(_candidates(self._llama, piece)))
            if self._cancelled is not None and self._cancelled.is_set():
                raise SamplingCancelled()
            if time.monotonic() - started > GRAMMAR_STEP_SECONDS:
                raise GrammarTooCostly(f"one token took more than {GRAMMAR_STEP_SECONDS:g} s to find under the "
                                       "grammar made from the request's schema; simplify the schema")

    def _allows(self, token: int) -> bool:
        data = self._numpy.array([(token, 0.0, 0.0)], dtype=_TOKEN_DATA)
        candidates = _candidates(self._llama, data)
        self._llama.llama_sampler_apply(self._grammar, ctypes.byref(candidates))
        return bool(self._numpy.isfinite(data["logit"][0]))

    def close(self) -> None:
        if self._chain is not None:
            self._llama.llama_sampler_free(self._chain)
            self._chain = None
        if self._grammar is not None:
            self._llama.llama_sampler_free(self._grammar)
            self._grammar = None


def log_probabilities(context, batch_index: int, n_vocab: int, token: int, top: int):
    """(log probability of TOKEN, [(token, log probability)] of the TOP likeliest), from the model's raw
    logits at BATCH_INDEX: the distribution before sampling settings, as OpenAI reports it."""
    import llama_cpp
    import numpy

    logits = numpy.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(context, batch_index), shape=(n_vocab,))
    peak = float(logits.max())
    normaliser = peak + float(numpy.log(numpy.exp(logits - peak, dtype=numpy.float64).sum()))
    best = []
    if top:
        indices = numpy.argpartition(-logits, top)[:top]
        indices = indices[numpy.argsort(-logits[indices], kind="stable")]
        best = [(int(index), float(logits[index]) - normaliser) for index in indices]
    return float(logits[token]) - normaliser, best


_TOKEN_DATA = [("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]  # llama_token_data


def _candidates(llama, data):
    """A llama_token_data_array over the numpy records DATA (which must outlive it)."""
    return llama.llama_token_data_array(
        data=data.ctypes.data_as(ctypes.POINTER(llama.llama_token_data)), size=len(data), selected=-1,
        sorted=False)


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
