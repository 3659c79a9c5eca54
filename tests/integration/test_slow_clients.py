"""Slow, stuck and too many clients: others are served, descriptors stay bounded, the idle exit comes.

Hundreds of connections that send nothing or trickle a request head a line at
a time (slowloris, reconnecting whenever the daemon closes them) and a body
that trickles in: the daemon closes what makes no progress, keeps at most
max_connections open, answers a good client throughout, and still exits when
idle within the documented bound: idle_timeout_seconds + 2 x
connection_idle_seconds + its 1 s tick.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import httpx
import pytest

from tests.conftest import Daemon, register

IDLE_TIMEOUT = 3
CONNECTION_IDLE = 2
MAX_CONNECTIONS = 300  # above the 200 attackers: here the idle timeout alone must bound them
EXIT_BOUND = IDLE_TIMEOUT + 2 * CONNECTION_IDLE + 1
GOOD = {"model": "gemma", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


class Attackers:
    """SILENT connections that send nothing and TRICKLING ones that send a header line every 0.2 s.

    Each reconnects as soon as the daemon closes it, until stop().
    """

    def __init__(self, port: int, silent: int, trickling: int):
        self.port = port
        self.closed: set[int] = set()  # attackers the daemon has closed at least once
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._attack, args=(number, trickle), daemon=True)
                         for number, trickle in enumerate([False] * silent + [True] * trickling)]
        for thread in self._threads:
            thread.start()

    def _attack(self, number: int, trickle: bool) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                if trickle:
                    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: hoshikage\r\n")
                while not self._stopping.wait(0.2):
                    if trickle:
                        sock.sendall(b"X-Slow: a\r\n")
                    elif closed_by_daemon(sock, wait=0):
                        break
            if not self._stopping.is_set():
                self.closed.add(number)  # closed by the daemon (seen by recv, or a write raised)
                self._stopping.wait(0.05)

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(10)


@pytest.fixture
def guarded_daemon(tmp_path, gemma_path):
    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "512")
    running = Daemon(tmp_path, {"HOSHIKAGE_CONNECTION_IDLE_SECONDS": str(CONNECTION_IDLE),
                                "HOSHIKAGE_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
                                "HOSHIKAGE_BODY_TIMEOUT_SECONDS": "2"},
                     "--no-embedded-model", "--idle-timeout", str(IDLE_TIMEOUT), "--exit-when-idle")
    yield running
    running.stop()


def closed_by_daemon(sock: socket.socket, wait: float = 1) -> bool:
    """True once the daemon has closed SOCK (recv answers b"" at once; an open one has nothing to say)."""
    sock.settimeout(wait)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (TimeoutError, BlockingIOError):
        return False


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_slow_and_silent_clients_neither_block_others_nor_the_idle_exit(guarded_daemon):
    daemon = guarded_daemon
    baseline = open_descriptors(daemon.process.pid)
    attackers = Attackers(daemon.port, silent=100, trickling=100)
    try:
        # A body that trickles in is cut off with a 408.
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as slow_body:
            slow_body.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 1000\r\n\r\n{")
            assert slow_body.recv(4096).startswith(b"HTTP/1.1 408 ")
        # Good clients are answered throughout, each on a new connection.
        for _ in range(10):
            answer = httpx.post(f"{daemon.base_url}/v1/chat/completions", json=GOOD, timeout=60,
                                headers={"Connection": "close"})
            assert answer.status_code == 200, answer.text
            assert open_descriptors(daemon.process.pid) <= baseline + MAX_CONNECTIONS
        last_request = time.monotonic()  # /v1/status below is not activity: the idle clock runs from here
        # Every attacker's connection is closed for making no request (the attackers' own count: no
        # event to await); before the daemon's exit, which comes idle_timeout + connection_idle_seconds on.
        while len(attackers.closed) < 200:
            assert time.monotonic() < last_request + IDLE_TIMEOUT + CONNECTION_IDLE, (
                f"only {len(attackers.closed)} of 200 silent and trickling connections were closed")
            time.sleep(0.1)
        # The attack goes on; the daemon exits on idle within the bound all the same.
        code = daemon.process.wait(timeout=EXIT_BOUND + 10)
        waited = time.monotonic() - last_request
    finally:
        attackers.stop()
    assert code == 0, daemon.log_text()[-3000:]
    assert waited <= EXIT_BOUND + 2, f"exited {waited:.1f} s after the last request"
    assert "exiting: idle" in daemon.log_text()


def test_beyond_max_connections_the_longest_idle_one_makes_room(tmp_path, gemma_path):
    from hoshikage.api.http.connections import EVICTION_GRACE_SECONDS

    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "512")
    daemon = Daemon(tmp_path, {"HOSHIKAGE_MAX_CONNECTIONS": "5"}, "--no-embedded-model")
    silent = [socket.create_connection(("127.0.0.1", daemon.port)) for _ in range(5)]
    try:
        time.sleep(EVICTION_GRACE_SECONDS + 0.5)  # the age is the point: only connections this old are evicted
        for _ in range(3):
            answer = httpx.post(f"{daemon.base_url}/v1/chat/completions", json=GOOD, timeout=60,
                                headers={"Connection": "close"})
            assert answer.status_code == 200, answer.text
        assert sum(map(closed_by_daemon, silent)) >= 1  # the oldest silent ones made room
    finally:
        for sock in silent:
            sock.close()
        daemon.stop()


def test_beyond_max_connections_all_busy_a_new_one_is_503(tmp_path, gemma_path):
    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "4096")
    daemon = Daemon(tmp_path, {"HOSHIKAGE_MAX_CONNECTIONS": "2", "HOSHIKAGE_SLOTS": "2"}, "--no-embedded-model")
    # Two requests that cannot end before the test closes them hold both connections.
    hold = {**GOOD, "max_tokens": None, "ignore_eos": True, "stream": True}
    try:
        with httpx.Client(base_url=daemon.base_url, timeout=60) as first, \
                httpx.Client(base_url=daemon.base_url, timeout=60) as second, \
                first.stream("POST", "/v1/chat/completions", json=hold) as one, \
                second.stream("POST", "/v1/chat/completions", json=hold) as two:
            lines = [one.iter_lines(), two.iter_lines()]  # kept: dropping them would close the streams
            for stream in lines:
                next(line for line in stream if line.startswith("data:"))
            refused = httpx.post(f"{daemon.base_url}/v1/chat/completions", json=GOOD, timeout=60)
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "1"
            assert refused.json()["error"]["code"] == "too_many_connections"
        # Once they are gone, the next one is served.
        assert httpx.post(f"{daemon.base_url}/v1/chat/completions", json=GOOD, timeout=60).status_code == 200
    finally:
        daemon.stop()
