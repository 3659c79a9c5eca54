"""The RAM disk: stage hot model files into tmpfs, and remember when it was last used.

Root's systemd mounts the tmpfs (a generated .mount unit, owned by the
daemon's user), so the daemon never needs privileges: it only copies a model in
once, verified, when the copy fits, and loads from there; anything else (no
mount, no room, a failed copy) falls back to the file in the store. The
``.last-used`` stamp tells hoshikage-ramdisk.service when GREAT_TIMEOUT has
passed without use, and that service's exit lets systemd unmount the disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("hoshikage.ramdisk")

STAMP = ".last-used"
HEADROOM_BYTES = 64 * 2**20  # never fill the tmpfs to the last page
COPY_BLOCK = 16 * 2**20

Progress = Callable[[int, int], None]


def usable(ramdisk: Path) -> bool:
    """A mounted tmpfs we may write to; a plain directory does not count."""
    return ramdisk.is_dir() and os.path.ismount(ramdisk) and os.access(ramdisk, os.W_OK | os.X_OK)


def touch_stamp(ramdisk: Path) -> None:
    if usable(ramdisk):
        try:
            (ramdisk / STAMP).touch()
        except OSError as error:
            log.warning("cannot update %s: %s", ramdisk / STAMP, error)


def last_used(ramdisk: Path) -> float:
    """When the RAM disk was last used: its stamp, else the mount's own age."""
    for path in (ramdisk / STAMP, ramdisk):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def staged_path(ramdisk: Path, source: Path) -> Path:
    # Size and mtime in the name: a changed source file never matches a stale copy.
    stat = source.stat()
    return ramdisk / f"{source.stem}-{stat.st_size}-{int(stat.st_mtime)}{source.suffix}"


def stage(source: Path, ramdisk: Path, progress: Progress | None = None) -> Path:
    """The path to load SOURCE from: its verified copy in RAM when possible, else SOURCE."""
    if not usable(ramdisk):
        return source
    target = staged_path(ramdisk, source)
    touch_stamp(ramdisk)
    if target.is_file():
        return target
    size = source.stat().st_size
    free = os.statvfs(ramdisk)
    room = free.f_bavail * free.f_frsize - HEADROOM_BYTES
    if size > room:
        log.info("RAM disk too full for %s (%d MiB needed, %d MiB free); loading from the store",
                 source.name, size // 2**20, max(0, room) // 2**20)
        return source
    started = time.monotonic()
    partial = target.with_name(f".{target.name}.partial")
    try:
        copied_digest = _copy_hashing(source, partial, size, progress)
        if _hash_file(partial) != copied_digest:
            raise OSError("the copy in RAM does not match what was read")
        os.replace(partial, target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        log.warning("staging %s into the RAM disk failed (%s); loading from the store", source.name, error)
        return source
    log.info("staged %s into the RAM disk (%d MiB in %.1f s, verified)", source.name, size // 2**20,
             time.monotonic() - started)
    return target


def _copy_hashing(source: Path, target: Path, size: int, progress: Progress | None) -> bytes:
    digest = hashlib.blake2b()
    done = 0
    with source.open("rb") as reader, target.open("wb") as writer:
        while block := reader.read(COPY_BLOCK):
            writer.write(block)
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, size)
    return digest.digest()


def _hash_file(path: Path) -> bytes:
    digest = hashlib.blake2b()
    with path.open("rb") as reader:
        while block := reader.read(COPY_BLOCK):
            digest.update(block)
    return digest.digest()


def hold(ramdisk: Path, great_timeout_seconds: float, poll_seconds: float = 10.0) -> None:
    """Block while the RAM disk was used within GREAT_TIMEOUT; return once it was not.

    Run by hoshikage-ramdisk.service, which the mount unit depends on: when this
    returns, the service ends, nothing needs the mount any more, and systemd
    unmounts it (StopWhenUnneeded=), handing the memory back.
    """
    while True:
        idle = time.time() - last_used(ramdisk)
        if idle >= great_timeout_seconds:
            log.info("RAM disk unused for %.0f s; releasing it", idle)
            return
        time.sleep(min(poll_seconds, great_timeout_seconds - idle))
