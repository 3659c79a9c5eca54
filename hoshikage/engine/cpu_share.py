"""How many decode threads the CPU can give us now: fewer while other programs keep cores busy.

llama.cpp's threads meet at a barrier after every piece of a decode step and
spin while they wait. With as many threads as cores, a single other busy
process preempts one of them and every step waits for it: on the 2-core
development machine one busy process cut decode to 0.38x of its idle rate
(llama-server: 0.40x), though half the CPU was still ours. With one thread
fewer than the cores taken, the steps run on cores that are free: 0.94x there
(a small model runs nearly as fast on one thread as on two; a larger one
loses in proportion to the core it gives up, which is the point).

CpuShare samples /proc/stat and the daemon's own CPU time: the time other
programs kept cores busy since the last sample is what we cannot have.
Niced programs are left out (their time is /proc/stat's "nice" column): the
scheduler gives way to us over them, and they measured no slowdown.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

SAMPLE_SECONDS = 1.0  # how often the thread count is reconsidered, between decode steps
_BUSY_FIELDS = (0, 2, 5, 6, 7)  # user, system, irq, softirq, steal of `cpu` in /proc/stat (guest is in user)


@dataclasses.dataclass(frozen=True)
class CpuTimes:
    busy: float  # seconds all CPUs spent on un-niced work, ours included
    ours: float  # seconds this process used


def parse_proc_stat(text: str, ticks: int) -> float:
    """Seconds of un-niced busy CPU time from /proc/stat's first line."""
    fields = [int(value) for value in text.split("\n", 1)[0].split()[1:]]
    return sum(fields[index] for index in _BUSY_FIELDS if index < len(fields)) / ticks


def threads_for(others_busy_cores: float, most: int) -> int:
    """Threads to decode with when other programs keep OTHERS_BUSY_CORES of MOST cores busy."""
    return max(1, min(most, round(most - others_busy_cores)))


class CpuShare:
    """Decides, at most every SAMPLE_SECONDS, how many of MOST threads to run; no-op where /proc is missing."""

    def __init__(self, most: int, stat: Path = Path("/proc/stat")):
        self.most = most
        self.threads = most
        self._stat = stat
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._last: CpuTimes | None = None
        self._last_at = 0.0

    def _now(self) -> CpuTimes | None:
        try:
            busy = parse_proc_stat(self._stat.read_text(), self._ticks)
        except (OSError, ValueError):
            return None
        usage = os.times()
        return CpuTimes(busy, usage.user + usage.system)

    def decide(self) -> int | None:
        """A new thread count when it should change, else None."""
        now = time.monotonic()
        if now - self._last_at < SAMPLE_SECONDS:
            return None
        sample = self._now()
        previous, self._last, elapsed = self._last, sample, now - self._last_at
        self._last_at = now
        if sample is None or previous is None:
            return None
        others = max(0.0, (sample.busy - previous.busy) - (sample.ours - previous.ours)) / elapsed
        threads = threads_for(others, self.most)
        if threads == self.threads:
            return None
        self.threads = threads
        return threads
