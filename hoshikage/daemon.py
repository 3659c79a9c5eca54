"""Process lifecycle: bind or inherit sockets, serve, stop cleanly on a signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import stat
from pathlib import Path

from aiohttp import web

from hoshikage import __version__, systemd
from hoshikage.api import create_app
from hoshikage.config import Settings, parse_listen_address
from hoshikage.model_files import ensure_embedded_model
from hoshikage.registry import Registry

log = logging.getLogger("hoshikage.daemon")


def serve(settings: Settings) -> int:
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    registry = Registry(settings.registry_file)
    if settings.embedded_model:
        await _register_embedded_model(settings, registry)
    app = create_app(settings, registry)
    # handler_cancellation: a client that disconnects cancels its handler, which
    # cancels its generation at the next token instead of running to the end.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    sites = _sites(runner, settings)
    for site in sites:
        await site.start()
    log.info("hoshikage %s listening on %s (threads=%d)", __version__,
             ", ".join(site.name for site in sites), settings.threads)
    systemd.notify("READY=1", "STATUS=listening, no model loaded yet")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    log.info("stopping: signal received")
    systemd.notify("STOPPING=1", "STATUS=stopping")
    await runner.cleanup()  # stops accepting, lets requests finish, frees models
    log.info("stopped")
    return 0


async def _register_embedded_model(settings: Settings, registry: Registry) -> None:
    systemd.notify("STATUS=preparing the embedded default model")
    entry = await asyncio.to_thread(ensure_embedded_model, settings, registry)
    if entry is not None:
        log.info("embedded model registered as %s (%s)", entry.alias, entry.path, extra={"MODEL": entry.alias})


def _sites(runner: web.AppRunner, settings: Settings) -> list[web.BaseSite]:
    inherited = systemd.inherited_sockets()
    if inherited:
        return [web.SockSite(runner, sock) for sock in inherited]
    sites: list[web.BaseSite] = []
    for address in settings.listen:
        kind, host_or_path, port = parse_listen_address(address)
        if kind == "tcp":
            sites.append(web.TCPSite(runner, host_or_path, port, reuse_address=True))
        else:
            sites.append(web.SockSite(runner, _bind_unix(Path(host_or_path))))
    return sites


def _bind_unix(path: Path) -> socket.socket:
    """Bind a unix socket, replacing a stale one left by a crash, but never a regular file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o660)  # owner and group, like the systemd socket unit
    sock.listen(128)
    return sock
