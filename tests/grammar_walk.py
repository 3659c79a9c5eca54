"""Does a grammar accept a text? Walked token by token through llama.cpp's own grammar sampler.

A deterministic check of what structured output enforces: sampling at a temperature finds a grammar's hole
only sometimes, this finds it every run. The text is tokenized with the real model's vocabulary, each token
is offered to the grammar alone (it marks what it forbids with -inf), then accepted; the text is a whole
sentence of the grammar when end-of-generation is allowed after it.
"""

from __future__ import annotations

import ctypes


def grammar_accepts(llama, grammar: str, text: str) -> bool:
    """True when GRAMMAR (GBNF, root rule "root") accepts TEXT whole; LLAMA: a llama_cpp.Llama (vocab_only)."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    assert sampler, "llama.cpp could not parse the grammar"
    try:
        for token in llama.tokenize(text.encode(), add_bos=False, special=False):
            if not _allows(llama_cpp, sampler, token):
                return False
            llama_cpp.llama_sampler_accept(sampler, token)
        return _allows(llama_cpp, sampler, llama_cpp.llama_vocab_eos(vocab))
    finally:
        llama_cpp.llama_sampler_free(sampler)


def _allows(llama_cpp, sampler, token: int) -> bool:
    data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
    candidates = llama_cpp.llama_token_data_array(data=ctypes.cast(data, ctypes.POINTER(llama_cpp.llama_token_data)),
                                                  size=1, selected=-1, sorted=False)
    llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
    return data[0].logit != float("-inf")
