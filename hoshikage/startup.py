"""The daemon's start, up to its HTTP side, importing nothing heavy.

cli.py calls serve() once llama.cpp's backends are up (engine/native.py). The order here is what makes a cold
start fast: the registry and the model pool first; then the request that woke the daemon is read ahead and its
model starts loading (first_request.py); and only then are aiohttp and the API imported (daemon.py), on a
thread, so that the event loop goes on driving the load meanwhile and llama.cpp loads on the other core.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging

from hoshikage import __version__, first_request, systemd
from hoshikage.config import Settings
from hoshikage.engine import pool_setup
from hoshikage.model_files import ensure_embedded_model
from hoshikage.registry import Registry, RegistryError

log = logging.getLogger("hoshikage.daemon")


class ListenError(Exception):
    """An address the daemon cannot listen on; str() is the one line to show the admin."""


def serve(settings: Settings) -> int:
    return asyncio.run(_start(settings))


async def _start(settings: Settings) -> int:
    inherited = systemd.inherited_sockets()
    if inherited:
        # Socket activation: the point is to run only while needed, so idling ends the process.
        settings = dataclasses.replace(settings, exit_when_idle=True)
    log.info("starting hoshikage %s (%s)", __version__,
             "socket-activated" if inherited else "binding " + ", ".join(settings.listen),
             extra={"EVENT": "start"})
    registry = Registry(settings.registry_file)
    if settings.embedded_model:
        await _register_embedded_model(settings, registry)
    engine = pool_setup.set_up(settings, registry)
    first = first_request.take(inherited, settings.tcp_keys) if inherited else None
    if first is not None and first.request is not None:
        try:
            alias = first.request.model_to_load(registry)
        except RegistryError:  # the request itself will be told
            alias = None
        if alias is not None:
            engine.pool.preload(alias)
    daemon = await asyncio.to_thread(importlib.import_module, "hoshikage.daemon")
    return await daemon.run(settings, inherited, registry, engine, first.connection if first else None)


async def _register_embedded_model(settings: Settings, registry: Registry) -> None:
    systemd.notify("STATUS=preparing the embedded default model")
    entry = await asyncio.to_thread(ensure_embedded_model, settings, registry)
    if entry is not None:
        log.info("embedded model registered as %s (%s)", entry.alias, entry.path, extra={"MODEL": entry.alias})
