"""Read a GGUF file's header: metadata keys and tensor shapes, never the weights.

Registering a model must tell a broken download from a model before the daemon
ever tries to load it, and must stay fast and light on the CLI path: this reads
only the header through mmap, in pure Python, without numpy or llama.cpp.
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import dataclasses
import mmap
import struct
from pathlib import Path
from typing import Any

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
# Arrays longer than this (token lists, merges) are summarised by length only.
MAX_KEPT_ARRAY = 64

_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
    10: "<Q", 11: "<q", 12: "<d",
}
_STRING, _ARRAY = 8, 9

# llama.cpp's `llama_ftype`, as written to general.file_type.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE",
}


# llama.cpp's `llama_pooling_type`, as written to ARCH.pooling_type.
POOLING_TYPES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}


class GGUFError(Exception):
    """The file is not a GGUF model we can read; str() says why in one line."""


@dataclasses.dataclass(frozen=True)
class GGUFInfo:
    version: int
    metadata: dict[str, Any]
    tensor_count: int
    parameter_count: int
    file_size: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def name(self) -> str | None:
        return self.metadata.get("general.name")

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if value is not None else None

    @property
    def quantization(self) -> str:
        file_type = self.metadata.get("general.file_type")
        if file_type is None:
            return "unknown"
        return FILE_TYPES.get(int(file_type), f"type {file_type}")

    @property
    def pooling(self) -> str | None:
        """How the model pools token vectors into a sentence vector, when it declares it (embedding models)."""
        value = self.metadata.get(f"{self.architecture}.pooling_type")
        return POOLING_TYPES.get(int(value), f"type {value}") if value is not None else None

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    @property
    def layers(self) -> int | None:
        """Repeating blocks: what llama.cpp counts as layers when it offloads."""
        value = self.metadata.get(f"{self.architecture}.block_count")
        return int(value) if value is not None else None

    @property
    def kv_bytes_per_token(self) -> int | None:
        """Bytes of f16 KV cache one token of context costs, from the attention shape."""
        arch = self.architecture
        layers = self.metadata.get(f"{arch}.block_count")
        heads = self.metadata.get(f"{arch}.attention.head_count")
        kv_heads = self.metadata.get(f"{arch}.attention.head_count_kv", heads)
        if not layers or not heads or kv_heads is None:
            return None
        head_dim = self.metadata.get(f"{arch}.embedding_length", 0) // (heads if isinstance(heads, int) else max(heads))
        key = self.metadata.get(f"{arch}.attention.key_length", head_dim)
        value = self.metadata.get(f"{arch}.attention.value_length", head_dim)
        # Some models give the KV head count per layer.
        kv_heads_total = sum(kv_heads) if isinstance(kv_heads, list) else kv_heads * layers
        return kv_heads_total * (key + value) * 2

    def summary(self) -> dict[str, Any]:
        """The facts a registry entry keeps about the file."""
        return {
            "architecture": self.architecture,
            "name": self.name,
            "parameters": self.parameter_count,
            "quantization": self.quantization,
            "context_length": self.context_length,
            "has_chat_template": self.chat_template is not None,
            "pooling": self.pooling,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "layers": self.layers,
            "size_bytes": self.file_size,
            "gguf_version": self.version,
        }


def read_gguf_info(path: str | Path) -> GGUFInfo:
    path = Path(path)
    try:
        with path.open("rb") as file:
            size = path.stat().st_size
            if size < 24:
                raise GGUFError(f"{path} is not a GGUF model (only {size} bytes)")
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return _parse(view, size, path)
    except IsADirectoryError:
        raise GGUFError(f"{path} is a directory, not a GGUF model") from None
    except OSError as error:
        raise GGUFError(f"cannot read {path}: {error.strerror}") from None


def _parse(view: mmap.mmap, size: int, path: Path) -> GGUFInfo:
    if view[:4] != MAGIC:
        raise GGUFError(f"{path} is not a GGUF model (starts with {bytes(view[:4])!r})")
    reader = _Reader(view, 4, path)
    version = reader.scalar("<I")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"{path}: GGUF version {version} is not supported (need 2 or 3)")
    tensor_count = reader.scalar("<Q")
    kv_count = reader.scalar("<Q")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = reader.string()
        metadata[key] = reader.value(reader.scalar("<I"))
    parameters = 0
    for _ in range(tensor_count):
        reader.string()  # tensor name
        n_dims = reader.scalar("<I")
        if n_dims > 8:
            raise GGUFError(f"{path}: corrupt tensor info ({n_dims} dimensions)")
        count = 1
        for _ in range(n_dims):
            count *= reader.scalar("<Q")
        reader.scalar("<I")  # ggml type
        reader.scalar("<Q")  # data offset
        parameters += count
    return GGUFInfo(version, metadata, tensor_count, parameters, size)


class _Reader:
    def __init__(self, view: mmap.mmap, offset: int, path: Path):
        self.view, self.offset, self.path = view, offset, path

    def _need(self, count: int) -> None:
        if self.offset + count > len(self.view):
            raise GGUFError(f"{self.path} is truncated (header ends early at byte {self.offset})")

    def scalar(self, fmt: str) -> Any:
        width = struct.calcsize(fmt)
        self._need(width)
        (value,) = struct.unpack_from(fmt, self.view, self.offset)
        self.offset += width
        return value

    def string(self) -> str:
        length = self.scalar("<Q")
        self._need(length)
        raw = self.view[self.offset:self.offset + length]
        self.offset += length
        return raw.decode("utf-8", errors="replace")

    def value(self, value_type: int) -> Any:
        if value_type in _SCALARS:
            return self.scalar(_SCALARS[value_type])
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            item_type = self.scalar("<I")
            count = self.scalar("<Q")
            if count > MAX_KEPT_ARRAY:
                self._skip_array(item_type, count)
                return {"array_length": count}
            return [self.value(item_type) for _ in range(count)]
        raise GGUFError(f"{self.path}: corrupt metadata (value type {value_type})")

    def _skip_array(self, item_type: int, count: int) -> None:
        if item_type in _SCALARS:
            width = struct.calcsize(_SCALARS[item_type]) * count
            self._need(width)
            self.offset += width
            return
        for _ in range(count):
            self.value(item_type)
