"""Token bytes -> text a client may see, honouring stop sequences.

Two things make this more than ``bytes.decode``: a UTF-8 character can be
split across tokens (Japanese text does this constantly), and a stop sequence
can be split across tokens too, so text that might be the start of one is held
back until the next token decides. Pure logic, unit-tested on its own.
"""

from __future__ import annotations

import codecs


class TextAssembler:
    def __init__(self, stop: tuple[str, ...] = ()):
        self._stop = tuple(s for s in stop if s)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; return the text that is now safe to send."""
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(piece)
        cut = self._earliest_stop()
        if cut is not None:
            self.stopped = True
            text, self._pending = self._pending[:cut], ""
            return text
        keep = self._held_back_length()
        text = self._pending[:len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep:]
        return text

    def finish(self) -> str:
        """Generation ended without a stop sequence: release what was held back."""
        if self.stopped:
            return ""
        text = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return text

    def _earliest_stop(self) -> int | None:
        positions = [p for p in (self._pending.find(s) for s in self._stop) if p >= 0]
        return min(positions) if positions else None

    def _held_back_length(self) -> int:
        return prefix_tail_length(self._pending, self._stop)


def prefix_tail_length(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest tail of TEXT that begins one of MARKERS (and so must wait for what follows)."""
    longest = 0
    for marker in markers:
        for length in range(min(len(marker) - 1, len(text)), longest, -1):
            if text.endswith(marker[:length]):
                longest = length
                break
    return longest
