"""How long a chat model's context is when its registration does not say: what the model and the machine hold.

A fixed default was wrong both ways: 4096 tokens overflows on Open WebUI's first message (its 36 built-in
tools are ~6.8k tokens) while the packaged model was trained for 32k, and a 7B model with a 128k context
would not fit most machines at its trained length. So, in order:

1. the registration's ``--ctx``;
2. the ``context_length`` setting when it is a number;
3. ``auto`` (the default): the model's trained context (``n_ctx_train`` from the GGUF header), capped so that
   ``slots + spare_slots`` KV caches (bytes per token from the header's attention shape, f16) take at most half
   of what the memory budget leaves after the weights, compute buffers and the prompt cache's host tier; the
   other half is room for another model. Rounded down to a multiple of 256, never below MIN_AUTO_CONTEXT (a
   model that cannot hold that much fails its load with the memory budget named, as any model too large does).

The choice and its reason are shown by ``hoshikage show``, ``/api/show`` and ``/v1/status``. Pure logic.
"""

from __future__ import annotations

import dataclasses

from hoshikage.registry import ModelEntry

FALLBACK_CONTEXT = 4096  # a model whose header gives no trained context
MIN_AUTO_CONTEXT = 2048
KV_SHARE = 0.5  # of the budget left after the weights, for the KV caches of one model's slots
GRANULE = 256


@dataclasses.dataclass(frozen=True)
class ContextChoice:
    tokens: int  # per slot
    reason: str  # one line, for show and status


def choose_context(entry: ModelEntry, setting: int | None, sequences: int, budget_bytes: int,
                   reserved_bytes: int = 0) -> ContextChoice:
    """ENTRY's context per slot. SETTING: the context_length setting (None: auto); SEQUENCES: the KV sequences
    of its context (slots and spare_slots); BUDGET_BYTES: the memory
    budget of all loaded models; RESERVED_BYTES: what the model takes besides weights and KV (compute buffers,
    the prompt cache's host tier)."""
    if entry.context_length:
        return ContextChoice(entry.context_length, "registered with --ctx")
    if setting:
        return ContextChoice(setting, "the context_length setting")
    gguf = entry.gguf or {}
    trained = int(gguf.get("context_length") or 0)
    if trained <= 0:
        return ContextChoice(FALLBACK_CONTEXT, "the model does not declare its trained context")
    per_token = int(gguf.get("kv_bytes_per_token") or 0)
    if per_token <= 0:
        tokens = min(trained, FALLBACK_CONTEXT)
        return ContextChoice(tokens, f"the model's trained context is {trained}; its KV cost per token is "
                                     f"unknown, so at most {FALLBACK_CONTEXT}")
    room = max(0, budget_bytes - int(gguf.get("size_bytes") or 0) - reserved_bytes) * KV_SHARE
    fits = int(room // (per_token * max(1, sequences))) // GRANULE * GRANULE
    if fits >= trained:
        return ContextChoice(trained, "the model's trained context")
    tokens = max(MIN_AUTO_CONTEXT, fits)
    return ContextChoice(tokens, f"the model's trained context is {trained}; {sequences} KV caches (slots and "
                                 f"spare slots) at {per_token} bytes per token fit {fits} tokens each in half the "
                                 "memory budget left after the weights")


def embedding_context(entry: ModelEntry, setting: int | None, trained: int | None) -> int:
    """An embedding model's one context: the registered length, else the trained one up to SETTING (None: auto,
    the trained one; without one, FALLBACK_CONTEXT)."""
    if entry.context_length:
        return entry.context_length
    limit = setting or trained or FALLBACK_CONTEXT
    return min(trained, limit) if trained and trained > 0 else limit


def context_for(entry: ModelEntry, settings) -> ContextChoice:
    """What choose_context gives ENTRY under SETTINGS (config.Settings), for commands that run without the
    daemon's pool. An embedding model's context is its trained one, up to a numeric setting."""
    from hoshikage.engine.budget import COMPUTE_ALLOWANCE, default_budget_bytes

    if entry.embedding:
        trained = (entry.gguf or {}).get("context_length")
        return ContextChoice(embedding_context(entry, settings.context_length, trained),
                             "registered with --ctx" if entry.context_length else
                             "an embedding model's trained context, up to the context_length setting")
    budget = settings.memory_budget_mib * 2**20 or default_budget_bytes()
    return choose_context(entry, settings.context_length, settings.slots + settings.spare_slots, budget,
                          COMPUTE_ALLOWANCE + settings.prompt_cache_ram_mib * 2**20)
