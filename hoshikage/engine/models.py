"""Which models are in memory: load on first use, reload on change, release when idle."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from hoshikage.engine import native, offload, ramdisk
from hoshikage.engine.budget import COMPUTE_ALLOWANCE, default_budget_bytes, model_shape
from hoshikage.engine.context_choice import ContextChoice, choose_context, embedding_context
from hoshikage.engine.cpu_share import CpuShare
from hoshikage.engine.embedding import EmbeddingModel, EmbeddingRunner
from hoshikage.engine.llama import LoadedModel, LoadOptions, ModelLoadError
from hoshikage.engine.model_access import why_unloadable
from hoshikage.engine.native import Device, offload_devices
from hoshikage.engine.prompt_cache import PromptCache, forget_everywhere, identity_digest, saved_tags
from hoshikage.engine.scheduler import ModelScheduler
from hoshikage.registry import ModelEntry, Registry

log = logging.getLogger("hoshikage.models")


class UnknownModel(Exception):
    def __init__(self, alias: str):
        super().__init__(alias)
        self.alias = alias


class ModelTooLarge(Exception):
    """The model alone needs more than the whole memory budget: it can never be loaded."""

    def __init__(self, alias: str, needed: int, budget: int, where: str = "memory", cache: int = 0):
        cached = f" (of which {cache / 2**20:.0f} MiB for its prompt cache, prompt_cache_ram_mib)" if cache else ""
        super().__init__(f"model '{alias}' needs about {needed / 2**20:.0f} MiB{cached}, more than the whole "
                         f"{where} budget of {budget / 2**20:.0f} MiB")


class BudgetBusy(Exception):
    """The budget is taken by models that are serving requests right now."""


# Device memory left to the driver, other processes and llama.cpp's own
# allocations beyond the estimate (llama.cpp's --fit keeps the same margin).
DEVICE_RESERVE_BYTES = 2**30


def _keep(slot, idle_seconds: float) -> float:
    """Seconds SLOT's model stays loaded unused: its keep-alive, else the idle timeout (0: forever)."""
    return slot.keep_alive if slot.keep_alive is not None else (idle_seconds or math.inf)


@dataclasses.dataclass
class _Slot:
    scheduler: ModelScheduler | EmbeddingRunner
    last_used: float
    plan: offload.OffloadPlan
    context: ContextChoice | None = None  # a chat model's context per slot, and why (None: an embedding model)
    keep_alive: float | None = None  # seconds unused before release; None: the daemon's idle timeout


class ModelPool:
    """Loaded models within two budgets: host memory and GPU memory, each counted on its own.

    DEVICES reports llama.cpp's devices and their memory (engine/native.py);
    the GPU budget is what they had free when first asked, less a reserve,
    unless DEVICE_BUDGET_BYTES says otherwise.
    """

    def __init__(self, registry: Registry, options: LoadOptions, ramdisk_path: Path | None = None,
                 max_waiting: int = 32, budget_bytes: int = 0,
                 devices: Callable[[], list[Device]] = list, device_budget_bytes: int = 0,
                 on_load: Callable[[str, float], None] | None = None, max_waiting_per_identity: int | None = None):
        self.registry = registry
        self.options = options
        self.max_waiting = max_waiting
        self.max_waiting_per_identity = max_waiting_per_identity
        self.budget_bytes = budget_bytes or default_budget_bytes()
        self.ramdisk_path = ramdisk_path
        self._devices = devices
        self._device_budget_bytes = device_budget_bytes
        self._gpus: list[Device] | None = None  # asked once, when a model is first placed
        self._slots: dict[str, _Slot] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self.last_event = ""  # the latest load or unload, for a person reading `systemctl status`
        self._on_load = on_load  # (alias, seconds including RAM-disk staging): the metrics' hook
        self._retired_reuse: dict[str, int] = {}  # prompt-cache reuse of models since unloaded
        self._retired_kv: dict[str, Counter] = {}  # the KV prompt caches' counters of models since unloaded
        self._preloading: asyncio.Task | None = None

    def preload(self, alias: str) -> None:
        """Start loading ALIAS for a request on its way (first_request.py), which then finds it loading or loaded.
        A failure is left to that request: its own scheduler_for tries again and reports it."""
        async def load() -> None:
            try:
                scheduler = await self.scheduler_for(alias)
            except Exception as error:  # noqa: BLE001 - the request's own attempt reports it
                log.info("loading %s ahead of its request failed (%s); the request will try again", alias,
                         error, extra={"MODEL": alias})
                return
            scheduler.release_lease()

        log.info("the request that started the daemon asks for %s: loading it while the daemon starts", alias,
                 extra={"MODEL": alias, "EVENT": "preload"})
        self._preloading = asyncio.ensure_future(load())

    async def scheduler_for(self, alias: str) -> ModelScheduler:
        """The scheduler of ALIAS, loading (or reloading a changed) model first.

        The scheduler comes leased: it counts as busy, so nothing unloads it,
        until the caller's ``release_lease()`` (after submitting its job).
        """
        entry = self.registry.get(alias)
        if entry is None:
            raise UnknownModel(alias)
        lock = self._loading.setdefault(alias, asyncio.Lock())
        async with lock:
            slot = self._slots.get(alias)
            if slot is not None and slot.scheduler.model.entry != entry and not slot.scheduler.busy:
                log.info("model %s changed in the registry; reloading", alias, extra={"MODEL": alias})
                await self._unload(alias)
                slot = None
            if slot is None:
                plan, context = await self._place(entry)
                slot = _Slot(await self._load(entry, plan, context), time.monotonic(), plan, context)
                self._slots[alias] = slot
            slot.last_used = time.monotonic()
            slot.scheduler.leases += 1
        if self.ramdisk_path is not None:
            ramdisk.touch_stamp(self.ramdisk_path)
        return slot.scheduler

    @property
    def device_budget_bytes(self) -> int:
        """GPU memory all loaded models may take together (0 without a GPU)."""
        if self._gpus is None:
            self._gpus = offload_devices(self._devices())
            if self._gpus and not self._device_budget_bytes:
                free = sum(device.free_bytes for device in self._gpus)
                self._device_budget_bytes = max(0, free - DEVICE_RESERVE_BYTES)
        return self._device_budget_bytes if self._gpus else 0

    def context_choice(self, entry: ModelEntry) -> ContextChoice | None:
        """A chat model's context per slot and why (engine/context_choice.py); None for an embedding model."""
        if entry.embedding:
            return None
        return choose_context(entry, self.options.context_length, self.options.sequences, self.budget_bytes,
                              COMPUTE_ALLOWANCE + self.options.prompt_cache_ram_bytes)

    async def _place(self, entry: ModelEntry) -> tuple[offload.OffloadPlan, ContextChoice | None]:
        """Decide ENTRY's context and how it splits between host and GPU, unloading idle models until it fits
        both budgets."""
        alias = entry.alias
        context = self.context_choice(entry)
        context_length = (context.tokens if context is not None
                          else embedding_context(entry, self.options.context_length, entry.gguf.get("context_length")))
        shape = await asyncio.to_thread(model_shape, entry, context_length,
                                        1 if entry.embedding else self.options.sequences)
        requested = entry.gpu_layers if entry.gpu_layers is not None else self.options.gpu_layers
        if entry.rpc_servers:  # its layers go to the servers (engine/rpc.py), none to this host's GPUs
            requested = 0
        device_budget = self.device_budget_bytes
        # As it would be placed with the GPU to itself: auto takes as many layers as fit then.
        # The prompt cache's host tier is the model's memory too, and counted so.
        cache_bytes = 0 if entry.embedding else self.options.prompt_cache_ram_bytes

        def placed(*args) -> offload.OffloadPlan:
            plan = offload.plan(*args)
            return dataclasses.replace(plan, host_bytes=plan.host_bytes + cache_bytes)

        plan = placed(requested, shape, device_budget, bool(self._gpus))
        if plan.host_bytes > self.budget_bytes:
            raise ModelTooLarge(alias, plan.host_bytes, self.budget_bytes, cache=cache_bytes)
        if plan.device_bytes > device_budget:
            raise ModelTooLarge(alias, plan.device_bytes, device_budget, "GPU memory")
        while not self._fits(plan):
            idle = [(slot.last_used, other) for other, slot in self._slots.items() if not slot.scheduler.busy]
            if not idle:
                if requested == offload.AUTO and self._fits(smaller := placed(
                        requested, shape, device_budget - self._used("device_bytes"), True)):
                    log.info("%s gets %d of %d layers on the GPU: the rest of its memory is held by busy models",
                             alias, smaller.gpu_layers, shape.offloadable, extra={"MODEL": alias})
                    return smaller, context
                raise BudgetBusy(alias)
            _, victim = min(idle)
            log.info("unloading %s to make room for %s (memory budget %d MiB, GPU %d MiB)", victim, alias,
                     self.budget_bytes // 2**20, device_budget // 2**20, extra={"MODEL": victim})
            await self._unload(victim)
        return plan, context

    def _used(self, side: str) -> int:
        return sum(getattr(slot.plan, side) for slot in self._slots.values())

    def _fits(self, plan: offload.OffloadPlan) -> bool:
        return (self._used("host_bytes") + plan.host_bytes <= self.budget_bytes
                and self._used("device_bytes") + plan.device_bytes <= self.device_budget_bytes)

    async def _load(self, entry: ModelEntry, plan: offload.OffloadPlan,
                    context: ContextChoice | None) -> ModelScheduler | EmbeddingRunner:
        path = Path(entry.path)
        problem = await asyncio.to_thread(why_unloadable, entry.alias, path)
        if problem:
            self.last_event = f"{entry.alias} cannot be loaded"
            raise ModelLoadError(f"The model '{entry.alias}' cannot be loaded: {problem}")
        started = time.monotonic()
        if self.ramdisk_path is not None:
            path = await asyncio.to_thread(ramdisk.stage, path, self.ramdisk_path,
                                           lambda done, total: self._staging(entry.alias, done, total))
        repacked = self.options.repacks_weights(entry.embedding)
        log.info("loading model %s from %s (repacked CPU weights: %s)", entry.alias, path, "yes" if repacked else "no",
                 extra={"MODEL": entry.alias, "CPU_WEIGHT_REPACK": "on" if repacked else "off"})
        self.last_event = f"loading {entry.alias}"
        kind = EmbeddingModel if entry.embedding else LoadedModel
        options = self.options if context is None else dataclasses.replace(self.options, context_length=context.tokens)
        if context is not None:
            log.info("%s gets a context of %d tokens per slot: %s", entry.alias, context.tokens, context.reason,
                     extra={"MODEL": entry.alias})
        try:
            model = await asyncio.to_thread(kind.load, entry, options, path, plan.gpu_layers)
        except ModelLoadError:
            self.last_event = f"{entry.alias} failed to load"
            raise
        self.last_event = (f"{entry.alias} loaded ({model.file_size / 2**20:.0f} MiB) "
                           f"in {model.load_seconds:.1f} s")
        log.info("model %s", self.last_event, extra={"MODEL": entry.alias})
        if self._on_load is not None:
            self._on_load(entry.alias, time.monotonic() - started)
        if entry.embedding:
            return EmbeddingRunner(model, self.max_waiting)
        cpu_share = CpuShare(self.options.threads) if self.options.adaptive_threads else None
        cache = await asyncio.to_thread(self._prompt_cache, model, plan)
        return ModelScheduler(model, self.max_waiting, cpu_share, cache, self.max_waiting_per_identity)

    def _prompt_cache(self, model: LoadedModel, plan: offload.OffloadPlan) -> PromptCache | None:
        """MODEL's KV prompt cache, bound to everything its saved state depends on (engine/prompt_cache.py)."""
        options = self.options
        if not (options.prompt_cache_ram_bytes or options.prompt_cache_disk_bytes):
            return None
        import llama_cpp

        source = Path(model.entry.path).resolve()
        facts = {"model": str(source), "size": source.stat().st_size, "mtime_ns": source.stat().st_mtime_ns,
                 "llama_cpp": llama_cpp.__version__, "cpu": native.loaded_cpu_variant(),
                 "context_per_slot": model.context_length, "flash_attn": options.flash_attn, "kv_type": "f16",
                 "swa_full": True, "gpu_layers": plan.gpu_layers, "repacked": options.repacks_weights(False),
                 "rpc_servers": list(model.entry.rpc_servers)}
        safe_alias = re.sub(r"[^A-Za-z0-9._-]", "_", model.entry.alias)
        try:
            return PromptCache(options.prompt_cache_dir, f"{safe_alias}-{identity_digest(facts)}",
                               options.prompt_cache_ram_bytes, options.prompt_cache_disk_bytes,
                               options.prompt_cache_min_tokens)
        except OSError as error:  # an unwritable directory: the admin's to fix; serving goes on, in memory only
            log.warning("the prompt cache's disk tier at %s cannot be used (%s); set prompt_cache_dir",
                        options.prompt_cache_dir, error)
            return PromptCache(None, "", options.prompt_cache_ram_bytes, 0, options.prompt_cache_min_tokens)

    def forget_prompt_cache(self, conversation_id: str | None) -> None:
        """Drop what every model holds of CONVERSATION_ID (None: everything), loaded or not, on disk too.
        Thread-safe (memory calls it on its own thread): schedulers and caches take their own locks."""
        for slot in list(self._slots.values()):
            scheduler = slot.scheduler
            if isinstance(scheduler, ModelScheduler) and scheduler.cache is not None:
                if conversation_id is None:
                    scheduler.cache.clear()
                else:
                    scheduler.forget_tag(conversation_id)
        if self.options.prompt_cache_dir is not None:
            removed = forget_everywhere(self.options.prompt_cache_dir, conversation_id)
            if removed:
                log.info("forgot %d saved KV entries of %s", removed, conversation_id or "every conversation")

    def prompt_cache_tags(self) -> set[str]:
        """The conversations whose KV state any model holds, loaded or saved. Thread-safe, as forget_prompt_cache."""
        tags = set()
        for slot in list(self._slots.values()):
            scheduler = slot.scheduler
            if isinstance(scheduler, ModelScheduler) and scheduler.cache is not None:
                tags |= scheduler.cache.tags()
        if self.options.prompt_cache_dir is not None:
            tags |= saved_tags(self.options.prompt_cache_dir)
        return tags

    def _staging(self, alias: str, done: int, total: int) -> None:
        # Called from the staging thread; a str assignment is atomic, and the
        # STATUS= line picks it up on its next tick.
        self.last_event = f"staging {alias} into the RAM disk: {100 * done // max(total, 1)}%"

    async def _unload(self, alias: str) -> None:
        slot = self._slots.pop(alias, None)
        if slot is None:  # released meanwhile by another path (idle release, eviction, Ollama's unload)
            return
        reused = slot.scheduler.describe_prompt_cache()["reused_tokens"]
        self._retired_reuse[alias] = self._retired_reuse.get(alias, 0) + reused
        await slot.scheduler.close()  # saves the slots' KV state to the disk tier first
        if isinstance(slot.scheduler, ModelScheduler) and slot.scheduler.cache is not None:
            self._retired_kv.setdefault(alias, Counter()).update(slot.scheduler.cache.counters_now())
        self.last_event = f"{alias} unloaded"
        log.info("model %s unloaded", alias, extra={"MODEL": alias})

    def touch(self, alias: str) -> None:
        if alias in self._slots:
            self._slots[alias].last_used = time.monotonic()

    @property
    def busy(self) -> bool:
        return any(slot.scheduler.busy for slot in self._slots.values())

    async def unload_idle(self, idle_seconds: float) -> None:
        """Release every model unused for its keep-alive (else IDLE_SECONDS; 0: never), or no longer registered."""
        registered = self.registry.entries()
        for alias, slot in list(self._slots.items()):
            if alias in registered and time.monotonic() - slot.last_used < _keep(slot, idle_seconds):
                continue
            # Unloading another model took awaits: this one may have been unloaded, reloaded or leased since.
            async with self._loading.setdefault(alias, asyncio.Lock()):
                if self._slots.get(alias) is slot and not slot.scheduler.busy:
                    await self._unload(alias)

    def keep_alive(self, alias: str, seconds: float | None) -> None:
        """Keep ALIAS loaded SECONDS after its last use (math.inf: while the daemon runs; None: the default)."""
        if alias in self._slots:
            self._slots[alias].keep_alive = seconds

    def expires_in(self, alias: str, idle_seconds: float) -> float:
        """Seconds until ALIAS is released if unused (math.inf: never by the timer; IDLE_SECONDS 0 is never)."""
        slot = self._slots[alias]
        keep = _keep(slot, idle_seconds)
        if slot.scheduler.busy:
            return keep
        return max(0.0, keep - (time.monotonic() - slot.last_used))

    async def unload(self, alias: str) -> None:
        """Release ALIAS now unless it is serving (then at its next idle check, with keep-alive 0)."""
        if alias not in self._slots:
            return
        async with self._loading.setdefault(alias, asyncio.Lock()):
            slot = self._slots.get(alias)
            if slot is not None and not slot.scheduler.busy:
                await self._unload(alias)
            elif slot is not None:
                slot.keep_alive = 0

    def prompt_cache_reused(self) -> dict[str, int]:
        """Prompt tokens each model took from its cache in this process, unloaded instances included."""
        totals = dict(self._retired_reuse)
        for alias, slot in self._slots.items():
            totals[alias] = totals.get(alias, 0) + slot.scheduler.describe_prompt_cache()["reused_tokens"]
        return totals

    def kv_cache_counters(self) -> dict[str, Counter]:
        """Each model's KV prompt-cache counters in this process (saves, restores, ...), unloaded ones included."""
        totals = {alias: Counter(counters) for alias, counters in self._retired_kv.items()}
        for alias, slot in list(self._slots.items()):
            if isinstance(slot.scheduler, ModelScheduler) and slot.scheduler.cache is not None:
                totals.setdefault(alias, Counter()).update(slot.scheduler.cache.counters_now())
        return totals

    async def close(self) -> None:
        if self._preloading is not None and not self._preloading.done():
            self._preloading.cancel()  # a load under way goes on in its thread; the process is ending anyway
            with contextlib.suppress(asyncio.CancelledError):
                await self._preloading
        for alias in list(self._slots):
            await self._unload(alias)

    def _device_name(self, plan: offload.OffloadPlan, entry: ModelEntry) -> str:
        if entry.rpc_servers:
            return "rpc " + ", ".join(entry.rpc_servers)
        if not plan.on_device or not self._gpus:
            return "cpu"
        return ", ".join(device.description or device.name for device in self._gpus)

    def describe_devices(self) -> list[dict]:
        """llama.cpp's devices with their memory now, and the GPU budget."""
        return [device.describe() for device in self._devices()]

    def describe(self) -> list[dict]:
        now = time.monotonic()
        return [
            {
                "model": alias,
                "path": slot.scheduler.model.entry.path,
                "size_bytes": slot.scheduler.model.file_size,
                "estimated_bytes": slot.plan.host_bytes + slot.plan.device_bytes,
                "device": self._device_name(slot.plan, slot.scheduler.model.entry),
                # Every layer on these llama.cpp rpc-servers, by their free memory (engine/rpc.py).
                "rpc_servers": list(slot.scheduler.model.entry.rpc_servers),
                "gpu_layers": slot.plan.gpu_layers,
                "device_bytes": slot.plan.device_bytes,
                "host_bytes": slot.plan.host_bytes,
                "context_length": slot.scheduler.model.context_length,
                "context_reason": slot.context.reason if slot.context else None,
                "kind": "embedding" if slot.scheduler.model.entry.embedding else "chat",
                "chat_format": getattr(getattr(slot.scheduler.model, "formatter", None), "name", None),
                "load_seconds": round(slot.scheduler.model.load_seconds, 3),
                "idle_seconds": round(now - slot.last_used, 1),
                "slots": slot.scheduler.describe_slots(),
                "prompt_cache": slot.scheduler.describe_prompt_cache(),
                "threads": slot.scheduler.cpu_share.threads if slot.scheduler.cpu_share else self.options.threads,
                "running": slot.scheduler.running,
                "waiting": slot.scheduler.waiting,
                # Embedding requests are short and taken in arrival order: only chat models queue per identity.
                "waiting_by_identity": (slot.scheduler.waiting_by_identity()
                                        if hasattr(slot.scheduler, "waiting_by_identity") else {}),
            }
            for alias, slot in self._slots.items()
        ]
