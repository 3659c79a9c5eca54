"""How much memory a model will take once loaded, from its registry entry alone.

Weights are the file (mmapped, so they count once however often they are
used); the KV cache is its context times the per-token cost read from the
GGUF's attention shape; compute buffers are a fixed allowance. Entries
registered before the KV cost was recorded are estimated from the file alone,
with a generous margin.
"""

from __future__ import annotations

from hoshikage.registry import ModelEntry

COMPUTE_ALLOWANCE = 256 * 2**20
UNKNOWN_KV_MARGIN = 0.25  # of the file size, when the GGUF's attention shape is unknown


def estimated_bytes(entry: ModelEntry, context_length: int, slots: int = 1) -> int:
    """Weights, plus a KV cache of CONTEXT_LENGTH for each of SLOTS, plus compute buffers."""
    gguf = entry.gguf or {}
    weights = int(gguf.get("size_bytes") or 0)
    per_token = gguf.get("kv_bytes_per_token")
    kv = int(per_token) * context_length * slots if per_token else int(weights * UNKNOWN_KV_MARGIN) * slots
    return weights + kv + COMPUTE_ALLOWANCE


def default_budget_bytes() -> int:
    """Three quarters of the machine's memory: the rest is the system's and the page cache's."""
    import os

    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.75)
