"""Prometheus figures that never wake the daemon: a textfile for node_exporter, kept while it runs and at exit.

A ``/metrics`` on the daemon's own sockets would be scraped through
hoshikage.socket: every scrape would start a stopped daemon, and, counted as
use or not, a scraper would keep one alive. So the daemon writes its figures
to a file instead (prometheus-client's exposition, written atomically) every
``metrics_interval_seconds`` while it runs and once more as it exits, and
node_exporter's textfile collector serves that file: scrapes read a file,
whether the daemon runs or not.

Counters and histograms are cumulative over the daemon's whole life, not one
process's: at start they are read back from the file the previous process
left, so a socket-activated daemon that starts and exits a hundred times a day
still gives Prometheus one monotonic series (and ``hoshikage_cold_starts_total``
counts the starts). Gauges (loaded models, queue, busy slots) are read live
from the model pool when the file is written; the file written at exit says
``hoshikage_running 0`` and lists no loaded model.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger("hoshikage.metrics")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclasses.dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[float]  # per bucket, not cumulative; the last one is +Inf
    total: float = 0.0

    @classmethod
    def empty(cls, buckets: tuple[float, ...]) -> _Histogram:
        return cls(buckets, [0.0] * (len(buckets) + 1))

    def observe(self, value: float) -> None:
        index = next((number for number, bound in enumerate(self.buckets) if value <= bound), len(self.buckets))
        self.counts[index] += 1
        self.total += value


# name -> (help, label names); the exposition adds _total to counters
COUNTERS = {
    "hoshikage_requests": ("HTTP requests answered, by route and status", ("endpoint", "status")),
    "hoshikage_prompt_tokens": ("Prompt tokens read (embedding inputs included), by model", ("model",)),
    "hoshikage_generated_tokens": ("Tokens generated, by model", ("model",)),
    "hoshikage_prompt_cache_reused_tokens": ("Prompt tokens taken from a slot's KV cache instead of read again",
                                             ("model",)),
    "hoshikage_kv_cache_saves": ("KV prompt-cache entries saved from slots (host or disk tier), by model",
                                 ("model",)),
    "hoshikage_kv_cache_saved_bytes": ("Bytes of KV state saved into the prompt cache, by model", ("model",)),
    "hoshikage_kv_cache_restores": ("KV prompt-cache entries restored into a slot instead of read, by model",
                                    ("model",)),
    "hoshikage_kv_cache_restored_tokens": ("Prompt tokens restored from the prompt cache, by model", ("model",)),
    "hoshikage_kv_cache_rejected": ("Prompt-cache entries dropped because they did not check out (truncated, "
                                    "checksum, refused by llama.cpp), by model", ("model",)),
    "hoshikage_model_loads": ("Model loads, by model", ("model",)),
    "hoshikage_cold_starts": ("Daemon starts (each socket activation is one)", ()),
}
HISTOGRAMS = {
    "hoshikage_request_duration_seconds": ("Time to answer an HTTP request, by route", ("endpoint",),
                                           LATENCY_BUCKETS),
    "hoshikage_time_to_first_token_seconds": ("From a generating request's arrival to its first token, by model",
                                              ("model",), LATENCY_BUCKETS),
    "hoshikage_model_load_seconds": ("Time to load a model (RAM-disk staging included), by model", ("model",),
                                     LOAD_BUCKETS),
}
# name -> help, read live from the model pool (live_gauges); labelled by model (and where, for memory)
GAUGES = {
    "hoshikage_model_loaded": "1 for each model in memory",
    "hoshikage_model_memory_bytes": "Memory a loaded model takes, by where (host or gpu)",
    "hoshikage_queue_depth": "Requests waiting for a model's slots",
    "hoshikage_queue_depth_by_identity": "Requests waiting for a model's slots, by identity (uid:N, key:NAME)",
    "hoshikage_busy_slots": "A model's slots generating now",
    "hoshikage_slots": "A model's slots",
    "hoshikage_kv_cache_bytes": "KV state held by a model's prompt cache, by tier (host or disk)",
}


class Metrics:
    """The daemon's figures; LIVE() gives the gauges of the moment and counters the pool keeps (live_gauges)."""

    def __init__(self, live: Callable[[], dict] | None = None):
        self._counters: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in COUNTERS}
        self._histograms: dict[str, dict[tuple[str, ...], _Histogram]] = {name: {} for name in HISTOGRAMS}
        self._live = live or dict
        self.started_at = time.time()
        self.ready_seconds: float | None = None  # process start to READY=1
        self.running = True

    # Recording ------------------------------------------------------------------

    def count(self, name: str, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
        values = self._counters[name]
        values[labels] = values.get(labels, 0.0) + amount

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        histograms = self._histograms[name]
        if labels not in histograms:
            histograms[labels] = _Histogram.empty(HISTOGRAMS[name][2])
        histograms[labels].observe(value)

    # Carrying over ------------------------------------------------------------------

    def restore(self, text: str) -> None:
        """Continue the counters and histograms of an earlier process's exposition TEXT."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(text):
            if family.name in COUNTERS:
                names = COUNTERS[family.name][1]
                for sample in family.samples:
                    if sample.name == family.name + "_total":
                        self.count(family.name, tuple(sample.labels.get(name, "") for name in names), sample.value)
            elif family.name in HISTOGRAMS:
                self._restore_histogram(family)

    def _restore_histogram(self, family) -> None:
        names, buckets = HISTOGRAMS[family.name][1], HISTOGRAMS[family.name][2]
        cumulative: dict[tuple[str, ...], dict[float, float]] = {}
        sums: dict[tuple[str, ...], float] = {}
        for sample in family.samples:
            labels = tuple(sample.labels.get(name, "") for name in names)
            if sample.name.endswith("_bucket"):
                cumulative.setdefault(labels, {})[float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_sum"):
                sums[labels] = sample.value
        for labels, by_bound in cumulative.items():
            bounds = [*buckets, float("inf")]
            if set(by_bound) != set(bounds):
                continue  # written with other buckets: start this series afresh rather than misplace counts
            running = [by_bound[bound] for bound in bounds]
            counts = [running[0], *(later - earlier for earlier, later in zip(running, running[1:]))]
            self._histograms[family.name][labels] = _Histogram(buckets, counts, sums.get(labels, 0.0))

    # Exposition ---------------------------------------------------------------------

    def collect(self) -> Iterable:
        """prometheus-client metric families (the Collector protocol)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        live = self._live()
        for name, (help_text, labels) in COUNTERS.items():
            family = CounterMetricFamily(name, help_text, labels=labels)
            values = dict(self._counters[name])
            for key, value in live.get(name, {}).items():  # this process's part, kept by the model pool
                values[key] = values.get(key, 0.0) + value
            for key, value in sorted(values.items()):
                family.add_metric(key, value)
            yield family
        for name, (help_text, labels, buckets) in HISTOGRAMS.items():
            family = HistogramMetricFamily(name, help_text, labels=labels)
            for values, histogram in sorted(self._histograms[name].items()):
                cumulative, points = 0.0, []
                for bound, count in zip([*buckets, float("inf")], histogram.counts):
                    cumulative += count
                    points.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                family.add_metric(values, points, histogram.total)
            yield family
        yield GaugeMetricFamily("hoshikage_running", "1 while the daemon runs; 0 in the figures it leaves at exit",
                                value=1.0 if self.running else 0.0)
        yield GaugeMetricFamily("hoshikage_start_time_seconds", "When the latest daemon process started (Unix time)",
                                value=self.started_at)
        if self.ready_seconds is not None:
            yield GaugeMetricFamily("hoshikage_ready_seconds", "From the latest process's start to READY=1",
                                    value=self.ready_seconds)
        for name, help_text in GAUGES.items():
            labels = {"hoshikage_model_memory_bytes": ("model", "where"),
                      "hoshikage_kv_cache_bytes": ("model", "tier"),
                      "hoshikage_queue_depth_by_identity": ("model", "identity")}.get(name, ("model",))
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for values, value in sorted(live.get(name, {}).items()):
                family.add_metric(values, value)
            yield family

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry)


def live_gauges(pool) -> dict:
    """The model pool's gauges now, and this process's prompt-cache reuse, keyed as Metrics.collect reads them
    (after the pool is closed: no gauges, and the reuse of every model it had)."""
    gauges: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in GAUGES}
    gauges["hoshikage_prompt_cache_reused_tokens"] = {(alias, ): float(tokens)
                                                      for alias, tokens in pool.prompt_cache_reused().items()}
    for alias, counters in pool.kv_cache_counters().items():
        for counter, value in counters.items():
            gauges.setdefault(f"hoshikage_kv_cache_{counter}", {})[(alias,)] = float(value)
    for model in pool.describe():
        alias = model["model"]
        for tier in ("host", "disk"):
            if "tiers" in model["prompt_cache"]:
                gauges["hoshikage_kv_cache_bytes"][(alias, tier)] = float(model["prompt_cache"]["tiers"][tier]["bytes"])
        gauges["hoshikage_model_loaded"][(alias,)] = 1.0
        gauges["hoshikage_model_memory_bytes"][(alias, "host")] = float(model["host_bytes"])
        gauges["hoshikage_model_memory_bytes"][(alias, "gpu")] = float(model["device_bytes"])
        gauges["hoshikage_queue_depth"][(alias,)] = float(model["waiting"])
        for identity, count in model.get("waiting_by_identity", {}).items():
            gauges["hoshikage_queue_depth_by_identity"][(alias, identity)] = float(count)
        slots = model["slots"]
        gauges["hoshikage_busy_slots"][(alias,)] = float(sum(slot["generating"] for slot in slots))
        gauges["hoshikage_slots"][(alias,)] = float(len(slots))
    return gauges


def write_textfile(exposition: bytes, path: Path) -> None:
    """EXPOSITION into PATH, atomically (node_exporter never reads half a file), readable by its user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not *.prom: the collector skips it
    try:
        temporary.write_bytes(exposition)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def read_previous(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as error:
        log.warning("cannot read the previous metrics %s (%s); counting from zero", path, error)
        return ""


def seconds_since_process_start() -> float | None:
    """How long this process has existed, from the kernel's start time (Python's own start-up included)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, counted after "pid (comm)"
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError):
        return None
