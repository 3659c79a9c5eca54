"""The daemon's model pool as its settings make it, with the figures it reports to.

Built apart from the HTTP side (api/__init__.py) so that the daemon can start the first request's model
loading before aiohttp and the API are imported (startup.py, first_request.py); nothing here imports them.
"""

from __future__ import annotations

import dataclasses
import logging

from hoshikage.config import Settings
from hoshikage.engine import cpu_weights, native, prompt_cache
from hoshikage.engine.llama import LoadOptions
from hoshikage.engine.models import ModelPool
from hoshikage.metrics import Metrics, live_gauges
from hoshikage.registry import Registry

log = logging.getLogger("hoshikage.api")


@dataclasses.dataclass
class Engine:
    pool: ModelPool
    metrics: Metrics
    cpu_weights: cpu_weights.RepackDecision  # what /v1/status reports of the CPU weights


def set_up(settings: Settings, registry: Registry) -> Engine:
    repack = cpu_weights.for_this_host(settings.cpu_weight_repack)
    log.info("repacked CPU weights %s: %s", "allowed" if repack.allowed else "off", repack.reason,
             extra={"CPU_WEIGHT_REPACK": repack.journal_value})
    pool: ModelPool | None = None
    metrics = Metrics(live=lambda: live_gauges(pool))
    pool = ModelPool(registry, LoadOptions(
        context_length=settings.context_length, gpu_layers=settings.gpu_layers, threads=settings.threads,
        flash_attn=settings.flash_attn,
        prompt_cache_min_tokens=settings.prompt_cache_min_tokens, slots=settings.slots,
        spare_slots=settings.spare_slots,
        batch_invariant=settings.batch_invariant, weight_repack=repack.allowed,
        adaptive_threads=settings.adaptive_threads, prompt_cache_dir=prompt_cache.cache_root(settings),
        prompt_cache_ram_bytes=settings.prompt_cache_ram_mib * 2**20,
        prompt_cache_disk_bytes=settings.prompt_cache_disk_mib * 2**20),
        settings.ramdisk_path,
        max_waiting=settings.max_queue, max_waiting_per_identity=settings.max_queue_per_identity,
        budget_bytes=settings.memory_budget_mib * 2**20,
        devices=native.device_report, device_budget_bytes=settings.gpu_memory_budget_mib * 2**20,
        on_load=lambda alias, seconds: (metrics.count("hoshikage_model_loads", (alias,)),
                                        metrics.observe("hoshikage_model_load_seconds", (alias,), seconds)))
    return Engine(pool, metrics, repack)
