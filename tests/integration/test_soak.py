"""A short soak on every CI run (tests/bench/bench_soak.py runs the full 10,000 requests)."""

from __future__ import annotations

from hoshikage.memory.store import INDEX_CACHE
from tests.bench.soak import NewerSurfaces, soak
from tests.conftest import Daemon, register

REQUESTS = 800


def test_mixed_requests_are_all_answered_and_nothing_leaks(tmp_path, gemma_path):
    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "512")
    daemon = Daemon(tmp_path, {}, "--no-embedded-model")
    try:
        report = soak(daemon.base_url, daemon.process.pid, "gemma", REQUESTS)
    finally:
        daemon.stop()
    print("\n" + report.table())
    assert report.unexpected == []
    middle, last = report.samples[len(report.samples) // 2], report.samples[-1]
    assert report.second_half_growth < 0.10, report.table()
    assert last.descriptors <= middle.descriptors + 4, report.table()  # the 4 clients' connections come and go
    assert last.threads <= middle.threads + 2, report.table()


NEWER_REQUESTS = 500


def test_the_newer_surfaces_answer_every_request_and_leak_nothing(tmp_path, gemma_path, embedding_model_dir):
    """Responses chains, conversations, compaction, schemas, embeddings, Ollama (issue 21); the full run is
    tests/bench/bench_soak.py --surfaces newer."""
    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "512")
    daemon = Daemon(tmp_path, {"SENTENCE_BERT_MODEL": str(embedding_model_dir),
                               "HOSHIKAGE_SENTENCE_MODEL_ALIAS": "sentences"}, "--no-embedded-model")
    try:
        report = soak(daemon.base_url, daemon.process.pid, "gemma", NEWER_REQUESTS, mix=NewerSurfaces("sentences"))
    finally:
        daemon.stop()
    print("\n" + report.table())
    assert report.unexpected == [], report.unexpected
    middle, last = report.samples[len(report.samples) // 2], report.samples[-1]
    # Memory's models load in the first half; what grows after that is a leak. Looser than the 5 % of the
    # full run: 250 requests are not enough for caches to settle.
    assert report.second_half_growth < 0.10, report.table()
    # Conversations' vector indexes stay open up to the store's cache (4 files each), no further: before it was
    # bounded, 500 requests left ~650 descriptors open.
    loaded = report.samples[1]
    assert last.descriptors <= loaded.descriptors + 4 * INDEX_CACHE + 8, report.table()
    assert last.threads <= middle.threads + 2, report.table()
