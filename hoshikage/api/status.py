"""Health and the seed's /v1/status: what is loaded, what is queued, when it goes idle."""

from __future__ import annotations

from aiohttp import web

from hoshikage import __version__
from hoshikage.api.http import keys


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def status(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    activity = request.app[keys.ACTIVITY]
    models = request.app[keys.POOL].describe()
    idle_timeout = settings.idle_timeout_seconds
    idle_for = activity.idle_for()
    return web.json_response({
        "status": "ok",
        "version": __version__,
        "uptime_seconds": round(activity.uptime(), 1),
        "loaded_models": models,
        # llama.cpp's devices, memory as they report it now; the GPU budget the pool places models in.
        "devices": request.app[keys.POOL].describe_devices(),
        "gpu_memory_budget_bytes": request.app[keys.POOL].device_budget_bytes,
        # llama.cpp's CPU backend (a portable build's chosen variant) and the weight-repacking rule.
        "cpu": {**request.app[keys.CPU_BACKEND], "weight_repack": request.app[keys.CPU_WEIGHTS].describe()},
        "registered_models": sorted(request.app[keys.REGISTRY].entries()),
        "queue": {
            "in_flight_requests": activity.in_flight,
            "running": sum(model["running"] for model in models),
            "waiting": sum(model["waiting"] for model in models),
            "waiting_by_identity": _summed(model["waiting_by_identity"] for model in models),
        },
        "requests_served": activity.served,
        # Where conversations live: a directory of this daemon's, or a Chroma server its fleet shares.
        "memory": {"store": settings.chroma_url or str(settings.memory_dir), "server": settings.chroma_url is not None,
                   "opened": request.app[keys.MEMORY].opened},
        "connections": request.app[keys.CONNECTIONS].describe(),
        "idle": {
            "timeout_seconds": idle_timeout,
            "idle_seconds": round(idle_for, 1),
            # Seconds until models are released; null while a request runs or when disabled.
            "release_in_seconds": (round(max(0.0, idle_timeout - idle_for), 1)
                                   if idle_timeout and not activity.in_flight else None),
        },
    })


def _summed(tallies) -> dict[str, int]:
    total: dict[str, int] = {}
    for tally in tallies:
        for name, count in tally.items():
            total[name] = total.get(name, 0) + count
    return total


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/v1/status", status)
