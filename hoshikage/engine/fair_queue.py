"""Requests waiting for a model's slots, taken round-robin across identities.

Each identity (a uid on the unix socket, a key's name on TCP) has its own line,
served in arrival order. The next request is the head of the line whose
identity holds the fewest slots now, then whose was served least recently,
then whose came first. So a client with 30 requests queued delays another's
first request by at most one admission (the next slot that frees), where first
come, first served would put it behind all 30. Nothing here blocks: the
scheduler holds its lock around every call and says who holds how many slots.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from typing import Generic, TypeVar

Item = TypeVar("Item")


class FairQueue(Generic[Item]):
    def __init__(self):
        self._lines: dict[str, collections.deque[tuple[int, Item]]] = {}
        self._served: dict[str, int] = {}  # identity -> the admission count when it was last served
        self._arrivals = itertools.count()
        self._admissions = 0

    def append(self, identity: str, item: Item) -> None:
        self._lines.setdefault(identity, collections.deque()).append((next(self._arrivals), item))

    def __bool__(self) -> bool:
        return bool(self._lines)

    def __len__(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def __iter__(self) -> Iterator[tuple[str, Item]]:
        for identity, line in self._lines.items():
            for _, item in line:
                yield identity, item

    def head(self, holding: dict[str, int] | None = None) -> tuple[str, Item] | None:
        """The next request: the head of the line whose identity holds fewest slots (HOLDING), then was served
        least recently (never: first), then arrived first."""
        if not self._lines:
            return None
        holding = holding or {}
        identity = min(self._lines, key=lambda name: (holding.get(name, 0), self._served.get(name, -1),
                                                      self._lines[name][0][0]))
        return identity, self._lines[identity][0][1]

    def pop(self, identity: str, served: bool) -> Item:
        """Take the head of IDENTITY's line; SERVED: it was admitted (not dropped), which ends the turn."""
        line = self._lines[identity]
        _, item = line.popleft()
        if served:
            self._admissions += 1
            self._served[identity] = self._admissions
        if not line:
            del self._lines[identity]
            # Forgotten with the line: an identity that comes back after its line emptied counts as new, so one
            # that sends a request at a time is never behind a backlog (and never ahead of more than one turn).
            self._served.pop(identity, None)
        return item

    def counts(self, keep=lambda item: True) -> dict[str, int]:
        """Waiting requests per identity, of those KEEP accepts."""
        counted = {identity: sum(keep(item) for _, item in line) for identity, line in self._lines.items()}
        return {identity: count for identity, count in counted.items() if count}
