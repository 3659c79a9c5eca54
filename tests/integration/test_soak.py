"""A short soak on every CI run (tests/bench/bench_soak.py runs the full 10,000 requests)."""

from __future__ import annotations

from tests.bench.soak import soak
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
