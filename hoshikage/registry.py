"""The model registry: alias -> GGUF file and its load parameters.

One JSON file (``models.json`` in the state directory, or the seed's
MODEL_MAP_FILE). Writers take an exclusive flock on a sidecar lock file, read
the current document, change it, and replace the file atomically (write a
temporary file, fsync, rename), so two concurrent ``hoshikage add`` both land
and a crash never leaves half a file. Readers never lock: rename is atomic, and
the daemon re-reads the file whenever its identity (inode, size, mtime) changes,
which is how a running daemon sees ``add``/``remove`` without a restart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
ALIAS_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
LATEST = ":latest"  # Ollama's default tag


class RegistryError(Exception):
    """A registry operation that cannot be done; str() is the message for the user."""


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    alias: str
    path: str
    context_length: int | None = None  # None: the daemon's default
    gpu_layers: int | str | None = None  # None: the daemon's gpu_layers; "auto", -1 (all) or a count
    chat_format: str | None = None  # None: the GGUF's template, else a guess by architecture
    imported: bool = False  # True when the file lives in the state directory
    embedding: bool = False  # an embedding model: /v1/embeddings and /api/embed, never chat
    added_at: float = 0.0
    gguf: dict[str, Any] = dataclasses.field(default_factory=dict)
    origin: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. the Ollama model it was added from
    rpc_servers: list[str] = dataclasses.field(default_factory=list)  # HOST:PORT of rpc-servers (engine/rpc.py)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        del data["alias"]
        return data

    @classmethod
    def from_json(cls, alias: str, data: dict[str, Any]) -> ModelEntry:
        known = {field.name for field in dataclasses.fields(cls)} - {"alias"}
        return cls(alias=alias, **{key: value for key, value in data.items() if key in known})


def validate_alias(alias: str) -> str:
    if not ALIAS_PATTERN.match(alias):
        raise RegistryError(
            f"invalid alias {alias!r}: use letters, digits, '.', '_', ':' or '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return alias


class Registry:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._cached_identity: tuple[int, int, int] | None = None
        self._cached: dict[str, ModelEntry] = {}

    # Reading -------------------------------------------------------------

    def entries(self) -> dict[str, ModelEntry]:
        """All entries, re-read only when the file changed since the last call."""
        identity = self._identity()
        if identity != self._cached_identity:
            self._cached = self._read()
            self._cached_identity = identity
        return dict(self._cached)

    def get(self, alias: str) -> ModelEntry | None:
        return self.entries().get(alias)

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def _read(self) -> dict[str, ModelEntry]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise RegistryError(f"cannot read model registry {self.path}: {error}") from None
        models = document.get("models", {}) if isinstance(document, dict) else None
        if not isinstance(models, dict):
            raise RegistryError(f"model registry {self.path} has no 'models' mapping")
        entries = {}
        for alias, data in models.items():
            if isinstance(data, str):
                data = {"path": data}  # the seed's model_map.json: alias -> path
            entries[alias] = ModelEntry.from_json(alias, data)
        return entries

    # Writing -------------------------------------------------------------

    def add(self, entry: ModelEntry, *, replace: bool = False) -> None:
        validate_alias(entry.alias)
        with self._locked() as models:
            if entry.alias in models and not replace:
                raise RegistryError(
                    f"alias {entry.alias!r} is already registered "
                    f"({models[entry.alias].path}); remove it first or pass --replace"
                )
            models[entry.alias] = entry

    def remove(self, alias: str) -> ModelEntry:
        with self._locked() as models:
            if alias not in models:
                raise RegistryError(f"no model is registered as {alias!r}")
            return models.pop(alias)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, ModelEntry]]:
        """Yield the current entries under an exclusive lock; write them back on success."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Read-only is enough for flock, and works when root created the lock
        # file and the daemon's user registers the embedded model.
        lock = os.open(self._lock_path, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            models = self._read()
            yield models
            self._write(models)
        finally:
            os.close(lock)  # closing releases the lock
        self._cached_identity = None

    def _write(self, models: dict[str, ModelEntry]) -> None:
        document = {
            "version": FORMAT_VERSION,
            "updated_at": time.time(),
            "models": {alias: models[alias].to_json() for alias in sorted(models)},
        }
        descriptor, temporary = tempfile.mkstemp(prefix=".models-", dir=self.path.parent)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(document, file, indent=2, ensure_ascii=False)
                file.write("\n")
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)


def resolve_name(name: str, known) -> str | None:
    """The alias NAME means among KNOWN: itself, or with ':latest' added or taken off; None when none."""
    if name in known:
        return name
    if name.endswith(LATEST) and name[:-len(LATEST)] in known:
        return name[:-len(LATEST)]
    if ":" not in name and name + LATEST in known:
        return name + LATEST
    return None
