"""How much memory a model will take once loaded, from its registry entry alone.

Weights are the file (mmapped, so they count once however often they are
used); the KV cache is its context times the per-token cost read from the
GGUF's attention shape; compute buffers are a fixed allowance. Entries
registered before the KV cost was recorded are estimated from the file alone,
with a generous margin; their layer count is read from the file when needed. Where those bytes live, host or GPU, is offload.py's
question.
"""

from __future__ import annotations

from hoshikage.engine.offload import ModelShape
from hoshikage.registry import ModelEntry

COMPUTE_ALLOWANCE = 256 * 2**20
UNKNOWN_KV_MARGIN = 0.25  # of the file size, when the GGUF's attention shape is unknown


def model_shape(entry: ModelEntry, context_length: int, slots: int = 1) -> ModelShape:
    """Weights, a KV cache of CONTEXT_LENGTH for each of SLOTS, compute buffers, and the layer count."""
    gguf = entry.gguf or {}
    weights = int(gguf.get("size_bytes") or 0)
    per_token = gguf.get("kv_bytes_per_token")
    kv = int(per_token) * context_length * slots if per_token else int(weights * UNKNOWN_KV_MARGIN) * slots
    return ModelShape(layers=int(gguf.get("layers") or _layers_from_file(entry.path)), weights_bytes=weights,
                      kv_bytes=kv, compute_bytes=COMPUTE_ALLOWANCE)


def _layers_from_file(path: str) -> int:
    """For entries registered before the layer count was recorded: read it from the header now."""
    from hoshikage.gguf_meta import GGUFError, read_gguf_info

    try:
        return read_gguf_info(path).layers or 1
    except (GGUFError, OSError):
        return 1  # one "layer" of everything: offloaded whole or not at all; loading will say what is wrong


def default_budget_bytes() -> int:
    """Three quarters of the machine's memory: the rest is the system's and the page cache's."""
    import os

    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.75)
