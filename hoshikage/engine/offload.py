"""How many layers of a model go to the GPU, and what that costs on each side.

``gpu_layers: auto`` (the default) works like Ollama's: every layer when the
model's weights, its KV cache and the compute buffers fit the device memory
the budget allows, and as many layers as fit otherwise. A number offloads
that many layers (-1: all). llama.cpp counts the output layer as one more
"layer" after the repeating blocks, so a model of N blocks is fully offloaded
at N + 1.

The cost of one offloaded layer is its share of the weights and of the KV
cache; compute buffers go where the work is (on the device once any layer
is there). Pure arithmetic: the caller supplies the device memory llama.cpp
reports (engine/native.py) and what is already taken.
"""

from __future__ import annotations

import dataclasses
import math

from hoshikage.config import GPU_LAYERS_AUTO as AUTO


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """The memory a loaded model needs, from its GGUF header (engine/budget.py)."""
    layers: int  # repeating blocks
    weights_bytes: int
    kv_bytes: int  # for all slots
    compute_bytes: int

    @property
    def offloadable(self) -> int:
        return self.layers + 1  # the output layer counts as one more


@dataclasses.dataclass(frozen=True)
class OffloadPlan:
    gpu_layers: int  # for llama.cpp's n_gpu_layers
    device_bytes: int  # estimated on the GPU(s)
    host_bytes: int  # estimated in RAM

    @property
    def on_device(self) -> bool:
        return self.gpu_layers > 0


def plan(requested: int | str, shape: ModelShape, device_bytes_available: int, has_gpu: bool) -> OffloadPlan:
    """Split SHAPE between host and device for REQUESTED layers ("auto", -1 or a count)."""
    if not has_gpu:
        return _split(0, shape)
    if requested == AUTO:
        return _split(layers_that_fit(shape, device_bytes_available), shape)
    layers = shape.offloadable if int(requested) < 0 else min(int(requested), shape.offloadable)
    return _split(layers, shape)


def layers_that_fit(shape: ModelShape, device_bytes: int) -> int:
    """The most layers whose share of weights and KV, plus the compute buffers, fit DEVICE_BYTES."""
    per_layer = _per_layer_bytes(shape)
    room = device_bytes - shape.compute_bytes
    if room < per_layer:
        return 0
    return min(shape.offloadable, math.floor(room / per_layer))


def _per_layer_bytes(shape: ModelShape) -> float:
    return (shape.weights_bytes + shape.kv_bytes) / shape.offloadable


def _split(layers: int, shape: ModelShape) -> OffloadPlan:
    total = shape.weights_bytes + shape.kv_bytes
    if layers <= 0:
        return OffloadPlan(0, 0, total + shape.compute_bytes)
    on_device = total if layers >= shape.offloadable else math.ceil(_per_layer_bytes(shape) * layers)
    return OffloadPlan(layers, on_device + shape.compute_bytes, total - on_device)
