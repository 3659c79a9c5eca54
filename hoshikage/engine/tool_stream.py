"""Streaming an answer to a request with tools: text goes out as it is written, calls once they are whole.

A model that may call a tool writes its call in its family's syntax (engine/tools.py) somewhere in its
answer; until then, what it writes is text for the user. So the text is sent token by token, holding back
only what could be the start of a call: a tail that begins the family's marker (``<tool_call>``,
``[TOOL_CALLS]``, ``<|python_tag|>``), trailing whitespace (a call's seam strips it), and, for Llama 3,
whose calls may be a bare JSON object, an answer that so far is nothing but an opening brace. Once a marker
appears, nothing more is sent until the answer ends; then the finished answer is read whole
(api/tool_answers.py), and what of its content was not yet sent follows, then the calls.

The text sent is always a prefix of the content the finished answer reads to (engine/tools.parse_calls keeps
the text before the first call as written, less trailing whitespace), so a streamed answer and the same
answer unstreamed say the same thing. Pure logic, unit-tested on its own.
"""

from __future__ import annotations

from hoshikage.engine.text_stream import prefix_tail_length
from hoshikage.engine.tools import HERMES, LLAMA3, MISTRAL

MARKERS = {HERMES: ("<tool_call>",), LLAMA3: ("<|python_tag|>",), MISTRAL: ("[TOOL_CALLS]",)}


class ToolTextSplitter:
    def __init__(self, family: str, forced: bool = False):
        """FAMILY: the model's tool-call syntax; FORCED: the whole answer is a call (grammar-constrained)."""
        self._markers = MARKERS.get(family, MARKERS[HERMES])
        self._bare_json = family == LLAMA3
        self._forced = forced
        self._text = ""
        self._sent = 0
        self._in_call = False

    def feed(self, piece: str) -> str:
        """Add a piece of the answer; return the text that may be sent now."""
        self._text += piece
        if self._forced or self._in_call:
            return ""
        if self._bare_json and self._text.lstrip()[:1] in ("", "{"):
            return ""  # a Llama 3 call may be coming as a bare object
        cut = len(self._text)
        found = [at for at in (self._text.find(marker, self._sent) for marker in self._markers) if at >= 0]
        if found:
            cut, self._in_call = min(found), True
        else:
            cut -= prefix_tail_length(self._text, self._markers)
        cut = max(self._sent, len(self._text[:cut].rstrip()))
        text, self._sent = self._text[self._sent:cut], cut
        return text

    @property
    def text(self) -> str:
        """The answer so far, all of it."""
        return self._text

    def rest(self, content: str | None) -> str:
        """What of the finished answer's CONTENT was not sent yet."""
        sent = self._text[:self._sent]
        content = content or ""
        return content[len(sent):] if content.startswith(sent) else ""
