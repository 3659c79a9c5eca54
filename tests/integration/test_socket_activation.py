"""Socket activation through systemd-socket-activate: lazy start, both transports, idle exit, restart."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.activation import Activator
from tests.conftest import register

pytestmark = pytest.mark.skipif(
    __import__("shutil").which("systemd-socket-activate") is None, reason="needs systemd-socket-activate")


@pytest.fixture
def activator(tmp_path, gemma_path):
    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "1024")
    running = Activator(tmp_path, "--idle-timeout", "1", env={"HOSHIKAGE_API_KEY": "sesame"})
    yield running
    running.stop()


def _unix_client(activator: Activator) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(activator.unix_path)),
                        base_url="http://hoshikage", timeout=120)


def test_starts_on_first_connection_serves_both_transports_and_exits_when_idle(activator):
    assert not activator.daemon_running(), "nothing may run before the first connection"
    chat = {"model": "gemma", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    with httpx.Client(base_url=f"http://127.0.0.1:{activator.port}", timeout=120) as tcp:
        response = tcp.post("/v1/chat/completions", json=chat, headers={"Authorization": "Bearer sesame"})
        assert response.status_code == 200, response.text
        assert activator.daemon_running()
        # The API key is TCP's policy; told apart from unix by the socket's family.
        denied = tcp.post("/v1/chat/completions", json=chat)
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
    with _unix_client(activator) as unix:
        assert unix.post("/v1/chat/completions", json=chat).status_code == 200
    first = activator.current
    assert first.wait(30) == 0, activator.log_text()
    assert "exiting: idle" in activator.log_text()
    assert not activator.daemon_running()
    # The next connection starts it again.
    with _unix_client(activator) as unix:
        assert unix.get("/v1/models").json()["data"][0]["id"] == "gemma"
    assert activator.current is not first


def test_no_connection_is_lost_across_idle_boundaries(activator):
    """Connect again and again around the moment the daemon decides to exit; count every answer."""
    delays = [0.9, 1.0, 1.05, 1.1, 1.15, 1.2, 1.3, 1.5, 1.8, 2.2]
    answered = 0
    requests = 0
    for _ in range(2):
        for delay in delays:
            time.sleep(delay)  # the delay *is* the experiment: land near each idle exit
            transport = "unix" if (requests % 2) else "tcp"
            requests += 1
            if transport == "tcp":
                response = httpx.get(f"http://127.0.0.1:{activator.port}/v1/models", timeout=60,
                                     headers={"Authorization": "Bearer sesame", "Connection": "close"})
            else:
                with _unix_client(activator) as unix:
                    response = unix.get("/v1/models", headers={"Connection": "close"})
            answered += response.status_code == 200
    assert answered == requests
    restarts = len(activator.exit_codes)
    assert restarts >= 5, f"expected many idle exits, saw {restarts}"
    assert set(activator.exit_codes) == {0}
