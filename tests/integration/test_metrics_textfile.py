"""The Prometheus textfile: kept current while the daemon runs, left complete at exit, carried over at start,
and in the exposition format (prometheus-client's parser reads it back)."""

from __future__ import annotations

import time

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Daemon, register


def figures(path) -> dict:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(path.read_text()) for sample in family.samples}


def wait_for(predicate, timeout: float, what: str):
    """The file is rewritten on a timer: poll it, with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def state(tmp_path, gemma_path):
    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "1024")
    return tmp_path


CHAT = ("/v1/chat/completions",)


def test_figures_are_written_while_running_left_at_exit_and_carried_into_the_next_start(state):
    textfile = state / "metrics" / "hoshikage.prom"
    environment = {"HOSHIKAGE_METRICS_INTERVAL_SECONDS": "0.2", "HOSHIKAGE_METRICS_TEXTFILE": str(textfile)}
    first = Daemon(state, environment, "--no-embedded-model")
    try:
        on_start = figures(textfile)  # written before READY=1
        assert on_start[("hoshikage_running", ())] == 1 and on_start[("hoshikage_cold_starts_total", ())] == 1
        with openai.OpenAI(base_url=f"{first.base_url}/v1", api_key="unused", max_retries=0) as client:
            answer = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Hi"}],
                                                    max_tokens=5, extra_body={"ignore_eos": True})
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Hi"}])
        ok = ("hoshikage_requests_total", (("endpoint", "/v1/chat/completions"), ("status", "200")))
        wait_for(lambda: figures(textfile).get(ok) == 1, 30, "the running daemon to write its figures")
        running = figures(textfile)
        assert running[("hoshikage_model_loaded", (("model", "gemma"),))] == 1
        assert running[("hoshikage_model_memory_bytes", (("model", "gemma"), ("where", "host")))] > 100 * 2**20
        assert running[("hoshikage_slots", (("model", "gemma"),))] >= 1
    finally:
        assert first.stop() == 0

    left = figures(textfile)
    gemma = (("model", "gemma"),)
    assert left[("hoshikage_running", ())] == 0
    assert ("hoshikage_model_loaded", gemma) not in left  # nothing stays loaded after exit
    assert left[("hoshikage_requests_total", (("endpoint", "/v1/chat/completions"), ("status", "404")))] == 1
    assert left[("hoshikage_generated_tokens_total", gemma)] == answer.usage.completion_tokens == 5
    assert left[("hoshikage_prompt_tokens_total", gemma)] == answer.usage.prompt_tokens
    assert left[("hoshikage_time_to_first_token_seconds_count", gemma)] == 1
    assert left[("hoshikage_model_loads_total", gemma)] == 1
    assert left[("hoshikage_model_load_seconds_count", gemma)] == 1
    assert left[("hoshikage_request_duration_seconds_count", (("endpoint", "/v1/chat/completions"),))] == 2

    second = Daemon(state, environment, "--no-embedded-model")
    try:
        carried = figures(textfile)
        assert carried[("hoshikage_cold_starts_total", ())] == 2 and carried[("hoshikage_running", ())] == 1
        assert carried[("hoshikage_generated_tokens_total", gemma)] == 5
        assert carried[("hoshikage_request_duration_seconds_count", (("endpoint", "/v1/chat/completions"),))] == 2
    finally:
        assert second.stop() == 0


def test_metrics_can_be_turned_off_and_an_unwritable_path_is_a_warning_not_a_failure(state):
    off = Daemon(state, {"HOSHIKAGE_METRICS": "false"}, "--no-embedded-model")
    try:
        assert not (state / "metrics").exists()
    finally:
        off.stop()
    blocked = state / "not-a-directory"
    blocked.write_text("")
    unwritable = Daemon(state, {"HOSHIKAGE_METRICS_TEXTFILE": str(blocked / "hoshikage.prom")},
                        "--no-embedded-model")
    try:
        assert "cannot write metrics" in unwritable.log_text() and "metrics_textfile" in unwritable.log_text()
    finally:
        assert unwritable.stop() == 0
