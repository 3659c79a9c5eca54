"""Logging: structured journal entries under systemd, readable lines elsewhere."""

from __future__ import annotations

import logging
import os
import sys

# Fields passed with ``extra=`` that should also show on a terminal.
_SHOWN_FIELDS = ("REQUEST_ID", "IDENTITY", "MODEL", "TOKENS", "CONVERSATION_ID", "MEMORY_VERBATIM_TURNS",
                 "MEMORY_SUMMARY_SENTENCES", "MEMORY_RECALLED_PASSAGES", "CPU_WEIGHT_REPACK", "KV_RESTORED")


def stderr_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM to stderr's dev:ino when stderr goes to the journal."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{stat.st_dev}:{stat.st_ino}"


class _ReadableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{name.lower()}={getattr(record, name)}" for name in _SHOWN_FIELDS
                  if getattr(record, name, "") not in ("", None)]
        return f"{line} [{' '.join(fields)}]" if fields else line


def setup_logging(level: str) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    if stderr_is_journal():
        from systemd.journal import JournalHandler

        handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="hoshikage")
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(_own_stderr())
        handler.setFormatter(_ReadableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's access log would duplicate our own per-request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _own_stderr():
    """A stream of its own onto what stderr is now. llama-cpp-python points stderr (fd 2 and sys.stderr) at
    /dev/null while it loads a model, to hide llama.cpp's chatter; the lines other threads log meanwhile (the
    daemon keeps starting and serving during a load) must not go there with it."""
    try:
        return open(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    except (OSError, ValueError, AttributeError):  # no file under sys.stderr (a test's capture): as it is
        return sys.stderr
