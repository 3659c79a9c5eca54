"""The aiohttp application: one factory, wiring done by small setup functions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from aiohttp import web

from hoshikage.activity import Activity
from hoshikage.api import openapi, status
from hoshikage.api.http import keys
from hoshikage.api.http.auth import identity_middleware, identity_of
from hoshikage.api.http.connections import ConnectionGuard, keepalive_seconds
from hoshikage.api.http.identity import Access
from hoshikage.api.http.errors import error_middleware
from hoshikage.api.ollama import endpoints as ollama
from hoshikage.api.openai import embeddings
from hoshikage.api.openai import endpoints as openai
from hoshikage.api.responses import conversations
from hoshikage.api.responses import endpoints as responses
from hoshikage.api.responses import websocket
from hoshikage.api.responses.websocket import is_upgrade
from hoshikage.config import Settings
from hoshikage.engine import native, pool_setup
from hoshikage.engine.models import ModelPool
from hoshikage.memory.service import Memory, MemorySettings
from hoshikage.metrics import Metrics, read_previous, write_textfile
from hoshikage.registry import Registry

log = logging.getLogger("hoshikage.api")

# Polled, not tracked: asking how the daemon is must not keep it awake.
# Ollama's front ends poll its version, listing and loaded models the same way.
UNTRACKED_PATHS = frozenset({"/health", "/v1/status", "/openapi.json", "/", "/api/version", "/api/tags", "/api/ps"})


def create_app(settings: Settings, registry: Registry | None = None,
               engine: pool_setup.Engine | None = None) -> web.Application:
    """The API on ENGINE (its model pool and figures; by default, made from SETTINGS)."""
    app = web.Application(client_max_size=settings.max_body_bytes,
                          middlewares=[connection_middleware, request_log_middleware, error_middleware,
                                       identity_middleware])
    registry = registry or Registry(settings.registry_file)
    app[keys.SETTINGS] = settings
    app[keys.ACCESS] = Access(settings.tcp_keys)
    app[keys.REGISTRY] = registry
    app[keys.ACTIVITY] = Activity()
    app[keys.CONNECTIONS] = ConnectionGuard(settings.connection_idle_seconds, settings.max_connections,
                                            keepalive_seconds(settings))
    engine = engine or pool_setup.set_up(settings, registry)
    app[keys.METRICS] = engine.metrics
    app[keys.CPU_WEIGHTS] = engine.cpu_weights
    app[keys.CPU_BACKEND] = native.cpu_backend()  # fixed for the process's life: not asked again per /v1/status
    app[keys.POOL] = engine.pool
    # Opens nothing yet: the store and the embedding model load on the first memory request.
    app[keys.MEMORY] = Memory(MemorySettings.from_settings(settings))
    app[keys.MEMORY].on_forget = app[keys.POOL].forget_prompt_cache
    app[keys.MEMORY].held_tags = app[keys.POOL].prompt_cache_tags
    app.on_response_prepare.append(_add_request_id)
    app.on_response_prepare.append(_close_when_draining)
    openai.setup_routes(app)
    embeddings.setup_routes(app)
    ollama.setup_routes(app)
    responses.setup_routes(app)
    websocket.setup_routes(app)
    conversations.setup_routes(app)
    openapi.setup_routes(app)
    status.setup_routes(app)
    # Before the pool's: cleaned up after it, so the figures left at exit see every model unloaded.
    app.cleanup_ctx.append(_metrics_lifetime)
    app.cleanup_ctx.append(_model_pool_lifetime)
    return app


async def _metrics_lifetime(app: web.Application):
    """Carry the figures over from the last process, keep the textfile current, write it once more at exit."""
    settings, metrics = app[keys.SETTINGS], app[keys.METRICS]
    path = settings.metrics_path
    if path is None:
        yield
        return
    try:
        metrics.restore(await asyncio.to_thread(read_previous, path))
    except ValueError as error:  # not an exposition we wrote: count afresh rather than refuse to start
        log.warning("ignoring unreadable metrics in %s: %s", path, error)
    metrics.count("hoshikage_cold_starts")
    writer = _MetricsWriter(metrics, path)
    await writer.write()  # before READY=1: this start is on file
    task = asyncio.create_task(writer.keep_writing(settings.metrics_interval_seconds))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    metrics.running = False
    await writer.write()


class _MetricsWriter:
    """Renders on the event loop (the model pool changes there, so it is read there) and writes the file on a
    thread; a path it cannot write is one warning, not one every interval."""

    def __init__(self, metrics: Metrics, path):
        self.metrics = metrics
        self.path = path
        self.failing = False

    async def write(self) -> None:
        try:
            await asyncio.to_thread(write_textfile, self.metrics.render(), self.path)
        except OSError as error:  # the admin's to fix; serving goes on
            if not self.failing:
                log.warning("cannot write metrics to %s: %s; set metrics_textfile to a writable path, or "
                            "metrics: false", self.path, error)
            self.failing = True
        else:
            if self.failing:
                log.info("metrics are written to %s again", self.path)
            self.failing = False

    async def keep_writing(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.write()
            except Exception:  # noqa: BLE001 - a bug in the figures must not stop their updates
                log.exception("writing the metrics failed")


async def _model_pool_lifetime(app: web.Application):
    """Release idle models in the background; free every model on shutdown."""
    settings, pool, memory = app[keys.SETTINGS], app[keys.POOL], app[keys.MEMORY]
    # Per model: one unused for the timeout (or its Ollama keep_alive) goes even while another is serving.
    releaser = asyncio.create_task(_release_idle_models(pool, memory, app[keys.ACTIVITY],
                                                        settings.idle_timeout_seconds))
    yield
    releaser.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await releaser
    await pool.close()
    await memory.close()


async def _release_idle_models(pool: ModelPool, memory: Memory, activity: Activity, idle_seconds: int) -> None:
    # A coarse tick is enough: release happens minutes after the last use
    # (an Ollama keep_alive of 0 releases an idle model at once, see api/ollama/endpoints.py).
    tick = max(1.0, min(30.0, idle_seconds / 10)) if idle_seconds else 5.0
    while True:
        await asyncio.sleep(tick)
        try:
            await pool.unload_idle(idle_seconds)
            await memory.sweep_forgotten()  # on a shared Chroma server: what other daemons forgot
            if idle_seconds and activity.in_flight == 0 and activity.idle_for() >= idle_seconds:
                await memory.expire()  # retention, when idle; a store never opened stays closed
        except Exception:  # noqa: BLE001 - a bug here must not leave every model loaded for good
            log.exception("releasing idle models failed")


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    # A signal, not the middleware: streamed responses send their headers early.
    if "request_id" in request:
        response.headers["X-Request-Id"] = request["request_id"]


async def _close_when_draining(request: web.Request, response: web.StreamResponse) -> None:
    # While exiting, answer what was accepted and let the client reconnect to
    # the next instance rather than keep this connection alive.
    if request.app[keys.ACTIVITY].draining:
        response.force_close()


@web.middleware
async def connection_middleware(request: web.Request, handler):
    """Mark the connection busy while its request runs, so the guard never closes it meanwhile."""
    guard = request.app[keys.CONNECTIONS]
    guard.begin(request.protocol)
    try:
        return await handler(request)
    finally:
        guard.end(request.protocol)


def _endpoint(request: web.Request) -> str:
    """The route a request took, as a metrics label: its pattern, never the path (an unbounded set)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_log_middleware(request: web.Request, handler):
    """One structured log line per request; activity tracking for the idle timer."""
    request_id = request["request_id"] = request.headers.get("X-Request-Id") or uuid.uuid4().hex[:16]
    tracked = request.path not in UNTRACKED_PATHS
    # A WebSocket counts while a response runs on it (api/responses/websocket.py), not while it is open.
    counted = tracked and not is_upgrade(request)
    activity = request.app[keys.ACTIVITY]
    started = request["started"] = time.monotonic()
    if counted:
        activity.begin()
    status_code = 499  # the client went away before an answer was complete
    try:
        response = await handler(request)
        status_code = response.status
        return response
    finally:
        if counted:
            activity.end()
        elapsed = time.monotonic() - started
        endpoint = _endpoint(request)
        metrics = request.app[keys.METRICS]
        metrics.count("hoshikage_requests", (endpoint, str(status_code)))
        metrics.observe("hoshikage_request_duration_seconds", (endpoint,), elapsed)
        duration_ms = round(elapsed * 1000)
        log.log(
            logging.INFO if tracked else logging.DEBUG,
            "%s %s %s %d ms", request.method, request.path, status_code, duration_ms,
            extra={"REQUEST_ID": request_id, "IDENTITY": identity_of(request).name, "MODEL": request.get("model", ""),
                   "STATUS": status_code, "TOKENS": request.get("tokens", 0),
                   "DURATION_MS": duration_ms, **request.get("log_fields", {})},
        )
