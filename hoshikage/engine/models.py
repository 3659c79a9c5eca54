"""Which models are in memory: load on first use, reload on change, release when idle."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

from hoshikage.engine import ramdisk
from hoshikage.engine.budget import default_budget_bytes, estimated_bytes
from hoshikage.engine.llama import LoadedModel, LoadOptions, ModelLoadError
from hoshikage.engine.scheduler import ModelScheduler
from hoshikage.registry import ModelEntry, Registry

log = logging.getLogger("hoshikage.models")


class UnknownModel(Exception):
    def __init__(self, alias: str):
        super().__init__(alias)
        self.alias = alias


class ModelTooLarge(Exception):
    """The model alone needs more than the whole memory budget: it can never be loaded."""

    def __init__(self, alias: str, needed: int, budget: int):
        super().__init__(f"model '{alias}' needs about {needed / 2**20:.0f} MiB, more than the whole "
                         f"memory budget of {budget / 2**20:.0f} MiB")


class BudgetBusy(Exception):
    """The budget is taken by models that are serving requests right now."""


@dataclasses.dataclass
class _Slot:
    scheduler: ModelScheduler
    last_used: float
    estimated_bytes: int


class ModelPool:
    def __init__(self, registry: Registry, options: LoadOptions, ramdisk_path: Path | None = None,
                 max_waiting: int = 32, budget_bytes: int = 0):
        self.registry = registry
        self.options = options
        self.max_waiting = max_waiting
        self.budget_bytes = budget_bytes or default_budget_bytes()
        self.ramdisk_path = ramdisk_path
        self._slots: dict[str, _Slot] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self.last_event = ""  # the latest load or unload, for a person reading `systemctl status`

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
                needed = estimated_bytes(entry, entry.context_length or self.options.context_length,
                                         self.options.slots)
                await self._make_room(alias, needed)
                slot = _Slot(await self._load(entry), time.monotonic(), needed)
                self._slots[alias] = slot
            slot.last_used = time.monotonic()
            slot.scheduler.leases += 1
        if self.ramdisk_path is not None:
            ramdisk.touch_stamp(self.ramdisk_path)
        return slot.scheduler

    async def _make_room(self, alias: str, needed: int) -> None:
        """Unload least recently used idle models until NEEDED fits the budget."""
        if needed > self.budget_bytes:
            raise ModelTooLarge(alias, needed, self.budget_bytes)
        while sum(slot.estimated_bytes for slot in self._slots.values()) + needed > self.budget_bytes:
            idle = [(slot.last_used, other) for other, slot in self._slots.items() if not slot.scheduler.busy]
            if not idle:
                raise BudgetBusy(alias)
            _, victim = min(idle)
            log.info("unloading %s to make room for %s (memory budget %d MiB)", victim, alias,
                     self.budget_bytes // 2**20, extra={"MODEL": victim})
            await self._unload(victim)

    async def _load(self, entry: ModelEntry) -> ModelScheduler:
        path = Path(entry.path)
        if self.ramdisk_path is not None:
            path = await asyncio.to_thread(ramdisk.stage, path, self.ramdisk_path,
                                           lambda done, total: self._staging(entry.alias, done, total))
        log.info("loading model %s from %s", entry.alias, path, extra={"MODEL": entry.alias})
        self.last_event = f"loading {entry.alias}"
        try:
            model = await asyncio.to_thread(LoadedModel.load, entry, self.options, path)
        except ModelLoadError:
            self.last_event = f"{entry.alias} failed to load"
            raise
        self.last_event = (f"{entry.alias} loaded ({model.file_size / 2**20:.0f} MiB) "
                           f"in {model.load_seconds:.1f} s")
        log.info("model %s", self.last_event, extra={"MODEL": entry.alias})
        return ModelScheduler(model, self.max_waiting)

    def _staging(self, alias: str, done: int, total: int) -> None:
        # Called from the staging thread; a str assignment is atomic, and the
        # STATUS= line picks it up on its next tick.
        self.last_event = f"staging {alias} into the RAM disk: {100 * done // max(total, 1)}%"

    async def _unload(self, alias: str) -> None:
        slot = self._slots.pop(alias)
        await slot.scheduler.close()
        self.last_event = f"{alias} unloaded"
        log.info("model %s unloaded", alias, extra={"MODEL": alias})

    def touch(self, alias: str) -> None:
        if alias in self._slots:
            self._slots[alias].last_used = time.monotonic()

    @property
    def busy(self) -> bool:
        return any(slot.scheduler.busy for slot in self._slots.values())

    async def unload_idle(self, idle_seconds: float) -> None:
        """Release every model unused for IDLE_SECONDS, or no longer registered."""
        now = time.monotonic()
        registered = self.registry.entries()
        for alias, slot in list(self._slots.items()):
            if slot.scheduler.busy:
                continue
            if alias not in registered or now - slot.last_used >= idle_seconds:
                await self._unload(alias)

    async def close(self) -> None:
        for alias in list(self._slots):
            await self._unload(alias)

    def describe(self) -> list[dict]:
        now = time.monotonic()
        return [
            {
                "model": alias,
                "path": slot.scheduler.model.entry.path,
                "size_bytes": slot.scheduler.model.file_size,
                "estimated_bytes": slot.estimated_bytes,
                "context_length": slot.scheduler.model.context_length,
                "chat_format": slot.scheduler.model.formatter.name,
                "load_seconds": round(slot.scheduler.model.load_seconds, 3),
                "idle_seconds": round(now - slot.last_used, 1),
                "slots": slot.scheduler.describe_slots(),
                "prompt_cache": slot.scheduler.describe_prompt_cache(),
                "running": slot.scheduler.running,
                "waiting": slot.scheduler.waiting,
            }
            for alias, slot in self._slots.items()
        ]
