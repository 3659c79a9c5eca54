"""When was the daemon last asked for something, and is anything in flight."""

from __future__ import annotations

import time


class Activity:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last_request = self.started
        self.in_flight = 0
        self.served = 0
        self.draining = False  # set once the daemon stopped accepting to exit

    def begin(self) -> None:
        self.in_flight += 1
        self.last_request = time.monotonic()

    def end(self) -> None:
        self.in_flight -= 1
        self.served += 1
        self.last_request = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last request ended; 0 while one is in flight."""
        return 0.0 if self.in_flight else time.monotonic() - self.last_request

    def uptime(self) -> float:
        return time.monotonic() - self.started
