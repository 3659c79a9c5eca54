"""A chat model's context when its registration does not say: the trained one, as far as memory holds it."""

from __future__ import annotations

from hoshikage.engine.context_choice import MIN_AUTO_CONTEXT, choose_context
from hoshikage.registry import ModelEntry

GiB, MiB = 2**30, 2**20


def entry(trained=32768, per_token=18432, weights=253 * MiB, ctx=None) -> ModelEntry:
    return ModelEntry(alias="m", path="/m.gguf", context_length=ctx,
                      gguf={"context_length": trained, "kv_bytes_per_token": per_token, "size_bytes": weights})


def test_the_registration_and_a_numeric_setting_come_first():
    assert choose_context(entry(ctx=1024), 8192, 4, 64 * GiB).tokens == 1024
    assert choose_context(entry(), 8192, 4, 64 * GiB).tokens == 8192


def test_auto_is_the_trained_context_when_the_kv_cache_fits():
    choice = choose_context(entry(), None, 4, 18 * GiB, 1280 * MiB)
    assert (choice.tokens, choice.reason) == (32768, "the model's trained context")


def test_auto_caps_the_kv_cache_at_half_the_budget_left_after_the_weights():
    # A 7B-like model: 4 GiB of weights, 512 KiB of KV per token, 128k trained, 16 GiB budget, 4 slots.
    choice = choose_context(entry(131072, 512 * 1024, 4 * GiB), None, 4, 16 * GiB)
    assert choice.tokens == 3072 and "131072" in choice.reason and "half the memory budget" in choice.reason
    assert 4 * choice.tokens * 512 * 1024 <= (16 - 4) * GiB / 2
    assert choose_context(entry(131072, 512 * 1024, 4 * GiB), None, 1, 16 * GiB).tokens == 4 * 3072


def test_auto_never_goes_below_the_floor_nor_guesses_an_unknown_kv_cost():
    assert choose_context(entry(weights=3 * GiB), None, 4, 2 * GiB).tokens == MIN_AUTO_CONTEXT
    assert choose_context(entry(per_token=None), None, 4, 64 * GiB).tokens == 4096
    assert choose_context(entry(trained=None), None, 4, 64 * GiB).tokens == 4096
    assert choose_context(entry(trained=2048, per_token=None), None, 4, 64 * GiB).tokens == 2048


def test_commands_without_the_pool_say_the_same_for_chat_and_embedding_models():
    from types import SimpleNamespace

    from hoshikage.engine.context_choice import context_for

    settings = SimpleNamespace(context_length=None, memory_budget_mib=18 * 1024, slots=4, spare_slots=1,
                               prompt_cache_ram_mib=1024)
    assert context_for(entry(), settings).tokens == 32768
    embedding = ModelEntry(alias="e", path="/e.gguf", embedding=True, gguf={"context_length": 512})
    assert context_for(embedding, settings).tokens == 512
    assert context_for(ModelEntry(alias="e", path="/e.gguf", embedding=True, gguf={}), settings).tokens == 4096
    assert context_for(embedding, SimpleNamespace(**{**vars(settings), "context_length": 256})).tokens == 256
