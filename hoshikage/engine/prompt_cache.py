"""A model's KV prompt cache beyond its slots: a bounded host-memory tier and a persistent tier on disk.

The slots hold the KV cache of the prompts they last read (engine/batch.py); a
slot reused for another prompt, a model unloaded and the daemon's idle exit all
threw it away, so the next turn of a long conversation re-read every token
(issue 22: 61x a warm turn at 1.8k tokens). Here a slot's KV state
(llama.cpp's per-sequence state, ``llama_state_seq_get_data``) is kept instead:

- **host tier**: entries in memory, up to ``prompt_cache_ram_mib``, filled when
  a slot is taken for another prompt; its least recently used entries move to
- **disk tier**: one file per entry under ``prompt_cache_dir`` (by default in
  the tmpfs RAM disk, which outlives the process like the hot model files, else
  under the state directory), up to ``prompt_cache_disk_mib``; written when a
  model is unloaded and at exit, most valuable (longest) first.

A prompt sharing at least ``prompt_cache_min_tokens`` with an entry, more than
with any slot, gets the entry's state restored into its slot instead of
reading those tokens again (``llama_state_seq_set_data``).

Never wrong: entries live in a directory named by the digest of everything the
state depends on (the model file's path, size and mtime, llama.cpp's version
and CPU backend, the slot's context length, flash attention, the KV type,
offloaded layers); a file carries that digest and a SHA-256 of its state, and
anything that does not check out (a truncated file from a kill during a save, a
flipped bit, another model or build) is deleted with a log line and the prompt
is read normally. Writes go to a temporary file renamed into place. Files are
0600 in 0700 directories.

Private: an entry is tagged with the conversations whose turns it holds;
forgetting a conversation deletes its entries (``forget``), ``hoshikage
memory forget --all`` the whole cache. KV state is derived from the
conversation's text: it is that text, in another form.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hoshikage.config import Settings

log = logging.getLogger("hoshikage.prompt_cache")

MAGIC = b"HKKV1\n"
SUFFIX = ".kv"


def cache_root(settings: Settings) -> Path:
    """Where saved KV entries go: the setting, else the RAM disk when mounted (it outlives the process and is
    released with it), else the state directory."""
    if settings.prompt_cache_dir:
        return settings.prompt_cache_dir
    from hoshikage.engine.ramdisk import usable

    return (settings.ramdisk_path if usable(settings.ramdisk_path) else settings.state_dir) / "prompt-cache"


def shared_prefix(cached, tokens) -> int:
    """How many leading tokens CACHED and TOKENS have in common."""
    count = 0
    for left, right in zip(cached, tokens):
        if left != right:
            break
        count += 1
    return count


def identity_digest(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


@dataclasses.dataclass(eq=False)
class Entry:
    tokens: tuple[int, ...]
    size: int  # bytes of state
    tags: frozenset[str]
    last_used: float
    state: bytes | None = None  # in the host tier
    path: Path | None = None  # in the disk tier

    @property
    def tier(self) -> str:
        return "host" if self.state is not None else "disk"


@dataclasses.dataclass
class Counters:
    saves: int = 0
    restores: int = 0
    restored_tokens: int = 0
    rejected: int = 0
    saved_bytes: int = 0


class PromptCache:
    """The host and disk tiers of one loaded model. Thread-safe: the model's worker saves and restores, the
    event loop describes and forgets."""

    def __init__(self, directory: Path | None, identity: str, host_budget: int, disk_budget: int, min_tokens: int):
        self.directory = directory / identity if directory is not None else None
        self.identity = identity
        self.host_budget = host_budget
        self.disk_budget = disk_budget
        self.min_tokens = max(1, min_tokens)
        self.counters = Counters()
        self._entries: list[Entry] = []
        self._lock = threading.Lock()
        if self.directory is not None and disk_budget > 0:
            self._open_directory(directory)

    # Finding and restoring ---------------------------------------------------

    def best(self, tokens) -> tuple[Entry | None, int]:
        """The entry sharing the longest prefix with TOKENS (at least min_tokens), and that length."""
        with self._lock:
            found, longest = None, 0
            for entry in self._entries:
                shared = shared_prefix(entry.tokens, tokens)
                if shared > longest:
                    found, longest = entry, shared
        return (found, longest) if longest >= self.min_tokens else (None, 0)

    def state_of(self, entry: Entry) -> bytes | None:
        """ENTRY's state, read and verified; None (and the entry gone) when it does not check out."""
        if entry.state is not None:
            return entry.state
        try:
            state = _read_file(entry.path, self.identity)[2]
        except (OSError, ValueError) as error:
            log.warning("prompt cache entry %s rejected (%s); the prompt is read normally", entry.path.name, error)
            self._drop(entry)
            self.counters.rejected += 1
            return None
        return state

    def restored(self, entry: Entry, tokens: int) -> None:
        with self._lock:
            entry.last_used = time.monotonic()
            self.counters.restores += 1
            self.counters.restored_tokens += tokens

    def rejected(self, entry: Entry) -> None:
        """llama.cpp refused ENTRY's state: never offer it again."""
        log.warning("llama.cpp could not restore a prompt cache entry of %d tokens; dropped", len(entry.tokens))
        self.counters.rejected += 1
        self._drop(entry)

    # Saving ------------------------------------------------------------------

    def keep(self, tokens, state: bytes, tags: frozenset[str], persist: bool = False) -> None:
        """Keep TOKENS' STATE (in the host tier, or on disk when PERSIST); one covering it already is enough."""
        if len(tokens) < self.min_tokens:
            return
        tokens = tuple(tokens)
        with self._lock:
            for entry in self._entries:
                if len(entry.tokens) >= len(tokens) and entry.tokens[:len(tokens)] == tokens:
                    entry.tags = entry.tags | tags
                    if persist and entry.state is not None:
                        self._to_disk(entry)
                    return
            # Entries this one extends are worth nothing more.
            for entry in [entry for entry in self._entries if tokens[:len(entry.tokens)] == entry.tokens]:
                self._drop_locked(entry)
                tags = tags | entry.tags
            entry = Entry(tokens, len(state), tags, time.monotonic(), state=state)
            self._entries.append(entry)
            self.counters.saves += 1
            self.counters.saved_bytes += len(state)
            if persist:
                self._to_disk(entry)
            self._fit_host()

    def persist_all(self) -> None:
        """Move every host entry to disk, longest first (at unload and exit)."""
        with self._lock:
            for entry in sorted((e for e in self._entries if e.state is not None), key=lambda e: -len(e.tokens)):
                self._to_disk(entry)

    # Forgetting --------------------------------------------------------------

    def forget(self, tag: str) -> int:
        with self._lock:
            doomed = [entry for entry in self._entries if tag in entry.tags]
            for entry in doomed:
                self._drop_locked(entry)
        return len(doomed)

    def tags(self) -> set[str]:
        """The conversations whose text the entries of this cache hold."""
        with self._lock:
            return set().union(*(entry.tags for entry in self._entries))

    def clear(self) -> None:
        with self._lock:
            for entry in list(self._entries):
                self._drop_locked(entry)

    # Showing -----------------------------------------------------------------

    def describe(self) -> dict:
        with self._lock:
            tiers = {}
            for tier, budget in (("host", self.host_budget), ("disk", self.disk_budget)):
                entries = [entry for entry in self._entries if entry.tier == tier]
                tiers[tier] = {"entries": len(entries), "bytes": sum(entry.size for entry in entries),
                               "budget_bytes": budget, "tokens": sum(len(entry.tokens) for entry in entries)}
            tiers["disk"]["directory"] = str(self.directory) if self.directory else None
        return {**tiers, **dataclasses.asdict(self.counters)}

    def counters_now(self) -> dict[str, int]:
        with self._lock:
            return dataclasses.asdict(self.counters)

    @property
    def host_bytes(self) -> int:
        with self._lock:
            return sum(entry.size for entry in self._entries if entry.state is not None)

    # Inside ------------------------------------------------------------------

    def _fit_host(self) -> None:
        host = sorted((e for e in self._entries if e.state is not None), key=lambda e: e.last_used)
        used = sum(entry.size for entry in host)
        for entry in host:
            if used <= self.host_budget:
                break
            used -= entry.size
            self._to_disk(entry)  # or gone, without a disk tier

    def _to_disk(self, entry: Entry) -> None:
        state, entry.state = entry.state, None
        if self.directory is None or self.disk_budget <= 0 or entry.size > self.disk_budget:
            self._entries.remove(entry)
            return
        self._make_room(entry.size)
        try:
            entry.path = _write_file(self.directory, self.identity, entry.tokens, state, entry.tags)
        except OSError as error:
            log.warning("cannot save a prompt cache entry in %s: %s", self.directory, error)
            self._entries.remove(entry)

    def _make_room(self, size: int) -> None:
        on_disk = sorted((e for e in self._entries if e.path is not None and e.state is None),
                         key=lambda e: e.last_used)
        used = sum(entry.size for entry in on_disk)
        for entry in on_disk:
            if used + size <= self.disk_budget:
                break
            used -= entry.size
            self._drop_locked(entry)

    def _drop(self, entry: Entry) -> None:
        with self._lock:
            self._drop_locked(entry)

    def _drop_locked(self, entry: Entry) -> None:
        with contextlib.suppress(ValueError):
            self._entries.remove(entry)
        if entry.path is not None:
            with contextlib.suppress(FileNotFoundError):
                entry.path.unlink()

    def _open_directory(self, root: Path) -> None:
        """Create the directory (0700), drop other identities' entries for good, index this one's files."""
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        for leftover in self.directory.glob("*.partial"):  # a save cut short
            leftover.unlink(missing_ok=True)
        for path in sorted(self.directory.glob("*" + SUFFIX)):
            try:
                with path.open("rb") as data:
                    tokens, tags, size, _ = _read_header(data, path, self.identity)
            except (OSError, ValueError) as error:
                log.warning("prompt cache entry %s rejected (%s)", path.name, error)
                self.counters.rejected += 1
                path.unlink(missing_ok=True)
                continue
            self._entries.append(Entry(tokens, size, tags, path.stat().st_mtime - time.time() + time.monotonic(),
                                       path=path))
        self._make_room(0)


# Files: MAGIC, a u32 header length, the JSON header, the tokens (int32), the state. ----------------------------

def _write_file(directory: Path, identity: str, tokens, state: bytes, tags) -> Path:
    header = json.dumps({"identity": identity, "tokens": len(tokens), "state_bytes": len(state),
                         "sha256": hashlib.sha256(state).hexdigest(), "tags": sorted(tags)}).encode()
    name = hashlib.sha256(struct.pack(f"<{len(tokens)}i", *tokens)).hexdigest()[:32] + SUFFIX
    descriptor, partial = tempfile.mkstemp(dir=directory, suffix=".partial")
    try:
        with os.fdopen(descriptor, "wb") as out:  # mkstemp: 0600
            out.write(MAGIC + struct.pack("<I", len(header)) + header)
            out.write(struct.pack(f"<{len(tokens)}i", *tokens))
            out.write(state)
        os.replace(partial, directory / name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    return directory / name


def _read_header(data, path: Path, identity: str) -> tuple[tuple[int, ...], frozenset[str], int, str]:
    """(tokens, tags, state bytes, state sha256) from the open file DATA, checked against IDENTITY and the
    file's size; ValueError for anything that does not check out."""
    if data.read(len(MAGIC)) != MAGIC:
        raise ValueError("not a prompt cache file")
    (length,) = struct.unpack("<I", data.read(4).ljust(4, b"\0"))
    try:
        header = json.loads(data.read(length))
        count, size, digest = int(header["tokens"]), int(header["state_bytes"]), str(header["sha256"])
    except (ValueError, KeyError, TypeError):
        raise ValueError("unreadable header") from None
    if header.get("identity") != identity:
        raise ValueError("made for another model, build or context")
    raw = data.read(4 * count)
    expected = len(MAGIC) + 4 + length + 4 * count + size
    actual = path.stat().st_size
    if len(raw) != 4 * count or actual != expected:
        raise ValueError("truncated" if actual < expected else "longer than its header says")
    return struct.unpack(f"<{count}i", raw), frozenset(header.get("tags") or ()), size, digest


def _read_file(path: Path, identity: str) -> tuple[tuple[int, ...], frozenset[str], bytes]:
    with path.open("rb") as data:
        tokens, tags, size, digest = _read_header(data, path, identity)
        state = data.read(size)
    if len(state) != size or hashlib.sha256(state).hexdigest() != digest:
        raise ValueError("checksum mismatch")
    return tokens, tags, state


def forget_everywhere(root: Path, tag: str | None) -> int:
    """Delete, under ROOT (every model's directory), the entries tagged TAG (None: all); how many. For models
    not loaded now, and for `hoshikage memory forget` run without the daemon."""
    removed = 0
    if not root.is_dir():
        return 0
    for path in root.glob("*/*" + SUFFIX):
        if tag is not None and tag not in _saved_tags_of(path):
            continue
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def saved_tags(root: Path) -> set[str]:
    """The tags of every entry saved under ROOT (every model's directory)."""
    if not root.is_dir():
        return set()
    return set().union(*(_saved_tags_of(path) for path in root.glob("*/*" + SUFFIX)))


def _saved_tags_of(path: Path) -> frozenset[str]:
    """The tags in PATH's header; none for a file that is not an entry (or not one any more)."""
    try:
        with path.open("rb") as data:
            if data.read(len(MAGIC)) != MAGIC:
                return frozenset()
            (length,) = struct.unpack("<I", data.read(4))
            return frozenset(json.loads(data.read(length)).get("tags") or ())
    except (OSError, ValueError, struct.error):
        return frozenset()
