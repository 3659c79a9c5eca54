"""GPU offload decisions and the two memory budgets, on a stubbed device report (no GPU needed)."""

from __future__ import annotations

import asyncio

import pytest

from hoshikage.config import parse_gpu_layers
from hoshikage.engine import offload
from hoshikage.engine.budget import COMPUTE_ALLOWANCE
from hoshikage.engine.llama import LoadOptions
from hoshikage.engine.models import DEVICE_RESERVE_BYTES, BudgetBusy, ModelPool, ModelTooLarge, _Slot
from hoshikage.engine.native import Device
from hoshikage.registry import ModelEntry, Registry

GiB = 2**30
SHAPE = offload.ModelShape(layers=27, weights_bytes=5 * GiB, kv_bytes=GiB // 2, compute_bytes=GiB // 4)


def test_auto_offloads_everything_that_fits():
    plan = offload.plan("auto", SHAPE, 8 * GiB, has_gpu=True)
    assert plan.gpu_layers == 28  # 27 blocks and the output layer
    assert plan.device_bytes == 5 * GiB + GiB // 2 + GiB // 4
    assert plan.host_bytes == 0


def test_auto_offloads_as_many_layers_as_fit():
    per_layer = (5 * GiB + GiB // 2) / 28
    plan = offload.plan("auto", SHAPE, 3 * GiB, has_gpu=True)
    assert plan.gpu_layers == int((3 * GiB - GiB // 4) // per_layer)
    assert plan.device_bytes <= 3 * GiB
    assert plan.host_bytes + plan.device_bytes == 5 * GiB + GiB // 2 + GiB // 4


def test_auto_keeps_everything_on_the_host_when_not_one_layer_fits():
    assert offload.plan("auto", SHAPE, GiB // 4, has_gpu=True) == offload.OffloadPlan(0, 0, 5 * GiB + 3 * GiB // 4)


def test_without_a_gpu_nothing_is_offloaded_whatever_was_asked():
    for requested in ("auto", -1, 12):
        assert offload.plan(requested, SHAPE, 0, has_gpu=False).gpu_layers == 0


def test_explicit_counts():
    assert offload.plan(-1, SHAPE, 0, has_gpu=True).gpu_layers == 28
    assert offload.plan(99, SHAPE, 0, has_gpu=True).gpu_layers == 28
    assert offload.plan(10, SHAPE, 0, has_gpu=True).gpu_layers == 10
    assert offload.plan(0, SHAPE, 80 * GiB, has_gpu=True) == offload.OffloadPlan(0, 0, 5 * GiB + 3 * GiB // 4)


@pytest.mark.parametrize("text,expected", [("auto", "auto"), ("AUTO", "auto"), ("-1", -1), ("12", 12), (0, 0)])
def test_gpu_layers_values(text, expected):
    assert parse_gpu_layers(text) == expected


@pytest.mark.parametrize("text", ["-2", "many", "1.5", True, None])
def test_gpu_layers_rejects(text):
    with pytest.raises(ValueError):
        parse_gpu_layers(text)


# The pool's placement: two budgets, LRU swap, busy models kept -------------

class Scheduler:
    """A loaded model's scheduler, as far as placement looks at it."""

    def __init__(self, busy: bool = False):
        self.busy = busy

    def describe_prompt_cache(self) -> dict:  # read when it is unloaded, for the metrics
        return {"reused_tokens": 0, "read_tokens": 0}

    async def close(self) -> None:
        pass


def entry(alias: str, weights_gib: float, gpu_layers=None) -> ModelEntry:
    return ModelEntry(alias=alias, path=f"/models/{alias}.gguf", context_length=1024, gpu_layers=gpu_layers,
                      gguf={"size_bytes": int(weights_gib * GiB), "kv_bytes_per_token": 1024, "layers": 27})


def pool(tmp_path, gpu_free_gib: float | None, host_gib: float = 64, gpu_layers="auto") -> ModelPool:
    gpus = [] if gpu_free_gib is None else [Device("CUDA0", "NVIDIA H100", "gpu", int(gpu_free_gib * GiB), 80 * GiB)]
    devices = [Device("CPU", "a CPU", "cpu", 64 * GiB, 64 * GiB), *gpus]
    return ModelPool(Registry(tmp_path / "models.json"),
                     LoadOptions(context_length=1024, gpu_layers=gpu_layers, threads=1, slots=1),
                     budget_bytes=int(host_gib * GiB), devices=lambda: devices)


def place(pool_: ModelPool, model: ModelEntry) -> offload.OffloadPlan:
    plan, _ = asyncio.run(pool_._place(model))  # (the context is chosen there too: test_context_choice.py)
    return plan


def load(pool_: ModelPool, alias: str, plan: offload.OffloadPlan, busy: bool = False) -> None:
    pool_._slots[alias] = _Slot(Scheduler(busy), len(pool_._slots), plan)


def test_the_gpu_budget_is_the_free_memory_less_a_reserve(tmp_path):
    assert pool(tmp_path, 40).device_budget_bytes == 40 * GiB - DEVICE_RESERVE_BYTES
    assert pool(tmp_path, None).device_budget_bytes == 0


def test_two_models_that_fit_the_gpu_together_both_go_there(tmp_path):
    gpu = pool(tmp_path, 20)
    first = place(gpu, entry("a", 6))
    load(gpu, "a", first)
    second = place(gpu, entry("b", 6))
    assert first.gpu_layers == second.gpu_layers == 28
    assert "a" in gpu._slots  # nothing had to go


def test_a_model_that_needs_the_gpu_swaps_out_the_least_recently_used_idle_one(tmp_path):
    gpu = pool(tmp_path, 12)  # 11 GiB budget: one 6 GiB model at a time
    load(gpu, "old", place(gpu, entry("old", 6)))
    load(gpu, "recent", offload.OffloadPlan(0, 0, GiB))  # on the CPU: holds no GPU memory, but is newer
    plan = place(gpu, entry("b", 6))
    assert plan.gpu_layers == 28
    assert "old" not in gpu._slots


def test_auto_takes_what_busy_models_leave_instead_of_failing(tmp_path):
    gpu = pool(tmp_path, 12)
    load(gpu, "busy", place(gpu, entry("busy", 6)), busy=True)
    plan = place(gpu, entry("b", 6))
    assert 0 < plan.gpu_layers < 28
    assert gpu._used("device_bytes") + plan.device_bytes <= gpu.device_budget_bytes
    assert "busy" in gpu._slots


def test_all_layers_asked_for_while_busy_models_hold_the_gpu_is_busy_not_a_crash(tmp_path):
    gpu = pool(tmp_path, 12)
    load(gpu, "busy", place(gpu, entry("busy", 6)), busy=True)
    with pytest.raises(BudgetBusy):
        place(gpu, entry("b", 6, gpu_layers=-1))


def test_all_layers_of_a_model_larger_than_the_gpu_is_too_large(tmp_path):
    with pytest.raises(ModelTooLarge, match="GPU memory"):
        place(pool(tmp_path, 12), entry("huge", 20, gpu_layers=-1))


def test_auto_puts_a_model_larger_than_the_gpu_partly_on_it(tmp_path):
    plan = place(pool(tmp_path, 12), entry("huge", 20))
    assert 0 < plan.gpu_layers < 28
    assert plan.host_bytes > 0


def test_without_a_gpu_the_host_budget_alone_decides(tmp_path):
    cpu = pool(tmp_path, None, host_gib=10)
    load(cpu, "a", place(cpu, entry("a", 6)))
    plan = place(cpu, entry("b", 6))
    assert plan.gpu_layers == 0 and plan.device_bytes == 0
    assert "a" not in cpu._slots  # swapped out of host memory
    assert plan.host_bytes == int(6 * GiB) + 1024 * 1024 + COMPUTE_ALLOWANCE
