"""Concurrency, cancellation and live registry changes on the running daemon."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time

import httpx

from tests.conftest import REPO

PROMPT = [{"role": "user", "content": "Write a poem about the night sky."}]


def _status(daemon) -> dict:
    return httpx.get(f"{daemon.base_url}/v1/status", timeout=10).json()


def test_concurrent_requests_wait_their_turn_and_are_not_disturbed(openai_tcp):
    def ask():
        return openai_tcp.chat.completions.create(model="gemma", messages=PROMPT, max_tokens=16, temperature=0)

    alone = ask()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda _: ask(), range(4)))
    for response in together:
        assert response.usage.completion_tokens == alone.usage.completion_tokens
        assert response.choices[0].message.content == alone.choices[0].message.content


def test_disconnect_mid_stream_stops_generation(daemon):
    # ignore_eos and no max_tokens: it would run to the end of its context, far
    # longer than this test takes, unless the disconnect stops it.
    body = {"model": "gemma", "messages": PROMPT, "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=daemon.base_url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            received = [line for line, _ in zip(lines, range(6)) if line.startswith("data:")]
            assert received
            status = _status(daemon)
            assert status["queue"]["running"] == 1
            slots = next(model for model in status["loaded_models"] if model["model"] == "gemma")["slots"]
            busy = next(index for index, slot in enumerate(slots) if slot["generating"])
    deadline = time.monotonic() + 30
    while _status(daemon)["queue"]["running"]:  # the daemon's own count: no event to await
        assert time.monotonic() < deadline, "the generation went on after its client left"
        time.sleep(0.1)
    status = _status(daemon)
    assert status["queue"]["in_flight_requests"] == 0
    # Cancelled, not finished: a finished request leaves its tokens cached in
    # the slot, a cancelled one has its cells freed.
    slot = next(model for model in status["loaded_models"] if model["model"] == "gemma")["slots"][busy]
    assert slot == {"generating": False, "cached_tokens": 0}


def test_status_reports_loaded_model_and_idle_countdown(daemon, openai_tcp):
    openai_tcp.chat.completions.create(model="gemma", messages=PROMPT, max_tokens=1)
    status = _status(daemon)
    loaded = {model["model"]: model for model in status["loaded_models"]}
    assert loaded["gemma"]["size_bytes"] > 100 * 2**20
    assert loaded["gemma"]["chat_format"] == "gemma"
    assert status["idle"]["timeout_seconds"] == 300
    assert 0 < status["idle"]["release_in_seconds"] <= 300
    assert httpx.get(f"{daemon.base_url}/health").json() == {"status": "ok"}


def _cli(daemon, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(daemon.state_dir), *args],
                          capture_output=True, text=True, cwd=REPO)


def test_running_daemon_sees_registry_changes(daemon, gemma_path, openai_tcp):
    assert _cli(daemon, "add", str(gemma_path), "gemma-live", "--chat-format", "gemma").returncode == 0
    try:
        assert "gemma-live" in [model.id for model in openai_tcp.models.list().data]
        answer = openai_tcp.chat.completions.create(model="gemma-live", messages=PROMPT, max_tokens=2)
        assert answer.model == "gemma-live"
    finally:
        assert _cli(daemon, "remove", "gemma-live").returncode == 0
    missing = httpx.post(f"{daemon.base_url}/v1/chat/completions", timeout=30,
                         json={"model": "gemma-live", "messages": PROMPT})
    assert missing.status_code == 404


def test_a_model_that_fails_to_load_is_a_clear_503_and_the_daemon_stays_healthy(daemon, tmp_path, openai_tcp):
    from tests.conftest import write_tiny_gguf

    broken = write_tiny_gguf(tmp_path / "broken.gguf")  # a valid header, but no usable weights
    assert _cli(daemon, "add", str(broken), "broken", "--import").returncode == 0
    try:
        response = httpx.post(f"{daemon.base_url}/v1/chat/completions", timeout=60,
                              json={"model": "broken", "messages": PROMPT, "max_tokens": 2})
        # The administrator's to fix, not a bug in Hoshikage: never 500, and the message says what to do.
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "model_load_failed" and error["param"] == "model"
        assert "'broken'" in error["message"] and "hoshikage add" in error["message"]
    finally:
        _cli(daemon, "remove", "broken")
    assert openai_tcp.chat.completions.create(model="gemma", messages=PROMPT, max_tokens=2).usage.completion_tokens
    assert daemon.process.poll() is None


def test_a_model_whose_file_went_missing_names_the_cause_and_the_fix(daemon, tmp_path, gemma_path):
    import shutil

    copy = tmp_path / "copy.gguf"
    shutil.copyfile(gemma_path, copy)
    assert _cli(daemon, "add", str(copy), "moved", "--chat-format", "gemma").returncode == 0
    copy.unlink()
    try:
        response = httpx.post(f"{daemon.base_url}/v1/chat/completions", timeout=60,
                              json={"model": "moved", "messages": PROMPT, "max_tokens": 2})
        assert response.status_code == 503, response.text
        message = response.json()["error"]["message"]
        assert "'moved'" in message and "does not exist" in message and "hoshikage add --import" in message
    finally:
        _cli(daemon, "remove", "moved")
