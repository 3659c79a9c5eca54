"""Memory's pure logic: sentences, the seed's cluster count, K-Means summaries, context planning."""

from __future__ import annotations

import numpy as np
import pytest

from hoshikage.memory import context
from hoshikage.memory.summarize import SEGMENT_TURNS, ClusterRule, representatives, segment_bounds
from hoshikage.memory.text import split_sentences


def test_sentences_split_on_punctuation_japanese_and_lines_but_not_abbreviations():
    assert split_sentences("Ms. Okonkwo called. Is it late? Yes!\n今日は晴れ。明日は雨？ ok") == [
        "Ms. Okonkwo called.", "Is it late?", "Yes!", "今日は晴れ。", "明日は雨？", "ok"]
    assert split_sentences("  \n ") == []


def test_overlong_sentences_are_cut():
    pieces = split_sentences("word " * 400)
    assert len(pieces) > 1 and all(len(piece) <= 600 for piece in pieces)


@pytest.mark.parametrize(("sentences", "rule", "expected"), [
    (0, (100, 1, 20), 0),
    (1, (100, 1, 20), 1),
    (100, (100, 1, 20), 1),
    (101, (100, 1, 20), 2),
    (5000, (100, 1, 20), 20),  # clamped to MAX_CLUSTERS
    (30, (10, 1, 20), 3),
    (30, (100, 5, 20), 5),  # MIN_CLUSTERS raises it
    (3, (100, 5, 20), 3),  # never more clusters than sentences
])
def test_cluster_count_is_the_seeds_rule(sentences, rule, expected):
    assert ClusterRule(*rule).clusters(sentences) == expected


def _blobs(seed: int = 1) -> np.ndarray:
    """Three well-separated groups of unit vectors, interleaved in time."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:3] * 5
    points = np.array([centres[i % 3] + rng.normal(0, 0.1, 8) for i in range(30)], dtype=np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def test_representatives_pick_one_sentence_per_cluster_in_original_order():
    points = _blobs()
    chosen = representatives(points, 3)
    assert chosen == sorted(chosen)
    assert sorted(index % 3 for index in chosen) == [0, 1, 2]  # one from each group


def test_representatives_are_deterministic():
    points = _blobs(seed=5)
    assert representatives(points, 4) == representatives(points.copy(), 4)


def test_representatives_with_k_at_least_n_keep_everything():
    assert representatives(_blobs()[:2], 5) == [0, 1]
    assert representatives(np.zeros((0, 8)), 3) == []


def test_segments_cover_the_overflow_in_fixed_steps():
    assert segment_bounds(0) == []
    assert segment_bounds(SEGMENT_TURNS * 2 + 3) == [(0, SEGMENT_TURNS), (SEGMENT_TURNS, 2 * SEGMENT_TURNS),
                                                     (2 * SEGMENT_TURNS, 2 * SEGMENT_TURNS + 3)]


def _words(messages) -> int:
    """A stand-in tokenizer for planning: one token per word, plus four per message."""
    return sum(len(message["content"].split()) + 4 for message in messages)


def _history(turns: int, words: int = 10) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": " ".join([f"w{i}"] * words)}
            for i in range(turns)]


def test_a_history_that_fits_is_planned_verbatim():
    plan = context.plan([], _history(6), budget=1000, count=_words)
    assert plan == context.Plan(True, 0)


def test_a_history_that_just_fits_is_verbatim_however_small_its_messages():
    history = [{"role": "user", "content": "hi"} for _ in range(100)]  # 5 tokens each by _words
    measure = lambda text: len(text.split())  # noqa: E731 - the text alone, a lower bound
    assert context.plan([], history, budget=_words(history), count=_words, measure=measure).fits
    assert not context.plan([], history, budget=_words(history) - 1, count=_words, measure=measure).fits


def test_an_overlong_history_starts_on_a_segment_boundary_and_keeps_the_latest_message():
    history = _history(81)  # 14 tokens a turn
    plan = context.plan([], history, budget=300, count=_words)
    assert not plan.fits
    assert plan.start % SEGMENT_TURNS == 0
    assert _words(history[plan.start:]) <= 300 * (1 - context.MEMORY_SHARE)
    assert _words(history[plan.start - SEGMENT_TURNS:]) > 300 * (1 - context.MEMORY_SHARE)


def test_the_verbatim_window_moves_in_steps_so_the_prefix_stays_the_same_between_them():
    starts = [context.plan([], _history(turns), budget=300, count=_words).start for turns in range(41, 81, 2)]
    changes = sum(1 for before, after in zip(starts, starts[1:]) if before != after)
    assert changes <= len(starts) // 3  # most turns reuse the previous window start


def test_a_latest_message_longer_than_the_budget_is_refused():
    history = _history(3) + [{"role": "user", "content": "x " * 500}]
    with pytest.raises(context.ContextTooLong):
        context.plan([], history, budget=100, count=_words)


def test_render_places_the_summary_after_the_system_text_and_recall_in_the_latest_message():
    pinned = [{"role": "system", "content": "Be brief."}]
    history = _history(21)  # ends with a user message
    assembly = context.render(pinned, history, 16, ["an old sentence"], ["a recalled passage"], 1000, _words)
    assert assembly.messages[0]["content"].startswith("Be brief.")
    assert "an old sentence" in assembly.messages[0]["content"]
    latest = assembly.messages[-1]["content"]
    assert latest.startswith(context.RECALL_HEADING) and "a recalled passage" in latest
    assert latest.endswith(history[-1]["content"])
    assert [m["content"] for m in assembly.messages[1:-1]] == [m["content"] for m in history[16:-1]]


def test_render_trims_the_oldest_summary_lines_first_then_the_least_similar_recall():
    history = _history(4)
    summary = [f"summary line {i} " + "x " * 20 for i in range(5)]
    recalled = [f"recalled {i} " + "y " * 20 for i in range(3)]
    full = context.render([], history, 0, summary, recalled, 10_000, _words)
    tight = context.render([], history, 0, summary, recalled, full.prompt_tokens - 30, _words)
    assert tight.recalled == recalled and tight.summary == summary[len(summary) - len(tight.summary):]
    assert len(tight.summary) < len(summary)
    tighter = context.render([], history, 0, summary, recalled, _words(history) + 40, _words)
    assert tighter.summary == [] and tighter.recalled == recalled[:len(tighter.recalled)]
    assert len(tighter.recalled) < len(recalled)


def test_answer_budget_reserves_the_answer_and_a_margin():
    assert context.answer_budget(2048, 100) == 2048 - 100 - context.MARGIN
    assert context.answer_budget(2048, None) == 2048 - 512 - context.MARGIN
    assert context.answer_budget(2048, 10_000) == 2048 - 1024 - context.MARGIN  # never more than half
