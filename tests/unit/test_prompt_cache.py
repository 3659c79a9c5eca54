"""The prompt cache's tiers on their own (issue 22): budgets, LRU, files that do not check out, forgetting.

The state bytes here are stand-ins (the cache never looks inside them); the real model's state is restored
in tests/integration/test_prompt_cache.py.
"""

from __future__ import annotations

import os
import stat

from hoshikage.engine.prompt_cache import PromptCache, forget_everywhere

TOKENS = tuple(range(1000, 1400))  # 400 tokens: over the 256 worth keeping


def cache(root, identity="gemma-abc", host=10_000, disk=100_000, min_tokens=256) -> PromptCache:
    return PromptCache(root, identity, host, disk, min_tokens)


def test_the_longest_shared_prefix_wins_and_short_ones_are_not_kept(tmp_path):
    tiers = cache(tmp_path)
    tiers.keep(TOKENS[:300], b"a" * 100, frozenset())
    tiers.keep(tuple(range(5000, 5400)), b"b" * 100, frozenset())
    tiers.keep(TOKENS[:100], b"c" * 100, frozenset())  # below min_tokens: not worth it
    entry, shared = tiers.best(TOKENS + (7, 7))
    assert shared == 300 and tiers.state_of(entry) == b"a" * 100
    assert tiers.best(TOKENS[:200]) == (None, 0)  # shares only 200
    assert tiers.describe()["host"]["entries"] == 2


def test_an_entry_that_extends_another_replaces_it(tmp_path):
    tiers = cache(tmp_path)
    tiers.keep(TOKENS[:300], b"a" * 100, frozenset({"conv_1"}))
    tiers.keep(TOKENS, b"b" * 100, frozenset({"conv_1"}))
    tiers.keep(TOKENS[:350], b"c" * 100, frozenset())  # covered by the longer one already
    assert tiers.describe()["host"]["entries"] == 1
    assert tiers.state_of(tiers.best(TOKENS)[0]) == b"b" * 100


def test_the_host_budget_moves_the_least_recently_used_to_disk_and_the_disk_budget_drops_them(tmp_path):
    tiers = cache(tmp_path, host=250, disk=150)
    for index in range(4):
        tiers.keep(tuple(range(index * 1000, index * 1000 + 300)), bytes([index]) * 100, frozenset())
    described = tiers.describe()
    assert described["host"]["entries"] == 2 and described["host"]["bytes"] <= 250
    assert described["disk"]["entries"] == 1 and described["disk"]["bytes"] <= 150
    assert tiers.best(tuple(range(0, 300)))[0] is None  # the oldest: dropped for good
    on_disk, _ = tiers.best(tuple(range(1000, 1300)))
    assert on_disk.tier == "disk" and tiers.state_of(on_disk) == bytes([1]) * 100


def test_persisted_entries_come_back_in_a_new_process_and_are_private(tmp_path):
    first = cache(tmp_path)
    first.keep(TOKENS, b"state" * 20, frozenset({"conv_1"}), persist=True)
    directory = tmp_path / "gemma-abc"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in directory.iterdir())
    again = cache(tmp_path)
    entry, shared = again.best(TOKENS)
    assert shared == len(TOKENS) and again.state_of(entry) == b"state" * 20 and entry.tags == {"conv_1"}


def test_files_that_do_not_check_out_are_dropped_never_used(tmp_path):
    first = cache(tmp_path)
    first.keep(TOKENS, b"x" * 100, frozenset(), persist=True)
    first.keep(tuple(range(9000, 9300)), b"y" * 100, frozenset(), persist=True)
    first.keep(tuple(range(7000, 7300)), b"z" * 100, frozenset(), persist=True)
    files = sorted((tmp_path / "gemma-abc").glob("*.kv"), key=lambda path: path.stat().st_mtime_ns)
    assert len(files) == 3
    truncated, flipped, fine = files
    with truncated.open("r+b") as data:  # kill -9 in the middle of a save (had it not been renamed last)
        data.truncate(truncated.stat().st_size - 10)
    raw = bytearray(flipped.read_bytes())
    raw[-1] ^= 0xFF  # one bit of the state
    flipped.write_bytes(bytes(raw))
    (tmp_path / "gemma-abc" / "half.partial").write_bytes(b"HKKV1\n")  # a save cut short
    again = cache(tmp_path)
    assert again.describe()["disk"]["entries"] == 2 and again.counters.rejected == 1  # truncated: at opening
    assert not truncated.exists() and not (tmp_path / "gemma-abc" / "half.partial").exists()
    entry, _ = again.best(tuple(range(9000, 9300)))
    assert again.state_of(entry) is None and not flipped.exists()  # checksum: at use
    assert again.state_of(again.best(tuple(range(7000, 7300)))[0]) == b"z" * 100


def test_another_model_build_or_context_never_sees_the_entries(tmp_path):
    cache(tmp_path).keep(TOKENS, b"x" * 100, frozenset(), persist=True)
    other = cache(tmp_path, identity="gemma-def")
    assert other.best(TOKENS) == (None, 0)
    # A file of one identity copied into another's directory is refused too.
    source = next((tmp_path / "gemma-abc").glob("*.kv"))
    os.link(source, tmp_path / "gemma-def" / source.name)
    assert cache(tmp_path, identity="gemma-def").best(TOKENS) == (None, 0)


def test_forgetting_a_conversation_deletes_its_entries_loaded_or_not(tmp_path):
    tiers = cache(tmp_path)
    tiers.keep(TOKENS, b"x" * 100, frozenset({"conv_1", "conv_2"}), persist=True)
    tiers.keep(tuple(range(9000, 9300)), b"y" * 100, frozenset({"conv_2"}))
    tiers.keep(tuple(range(7000, 7300)), b"z" * 100, frozenset({"conv_3"}), persist=True)
    assert tiers.forget("conv_2") == 2
    assert tiers.describe()["host"]["entries"] + tiers.describe()["disk"]["entries"] == 1
    assert forget_everywhere(tmp_path, "conv_3") == 1  # what the CLI does without the daemon
    assert not list((tmp_path / "gemma-abc").glob("*.kv"))
    cache(tmp_path).keep(TOKENS, b"x" * 100, frozenset(), persist=True)
    assert forget_everywhere(tmp_path, None) == 1  # forget --all
