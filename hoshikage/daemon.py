"""The daemon's HTTP side and its life: inherit or bind sockets, serve, exit on a signal or when idle."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import stat
import sys
import threading
from pathlib import Path

from aiohttp import web

from hoshikage import lifecycle, systemd
from hoshikage.api import create_app
from hoshikage.api.http import keys
from hoshikage.api.http.framing import shape_parser_errors
from hoshikage.config import Settings, parse_listen_address
from hoshikage.engine.pool_setup import Engine
from hoshikage.metrics import seconds_since_process_start
from hoshikage.peers import is_loopback_host, unix_socket_paths
from hoshikage.registry import Registry
from hoshikage.startup import ListenError

log = logging.getLogger("hoshikage.daemon")

# A stop (SIGTERM, SIGINT, the idle exit) ends the process within STOP_TIMEOUT_SECONDS whatever requests are
# doing: they get STOP_GRACE_SECONDS to finish, then are cancelled; a watchdog exits if that is not enough.
STOP_GRACE_SECONDS = 5.0
STOP_TIMEOUT_SECONDS = 10.0
EXIT_STOP_TIMEOUT = 70  # EX_SOFTWARE: the stop was not clean (a stop systemd asked for is not restarted)


async def run(settings: Settings, inherited: list[socket.socket], registry: Registry, engine: Engine,
              first_connection: socket.socket | None) -> int:
    """Serve until a stop signal or, when exiting on idle, the idle timeout (startup.py has done what comes
    before). FIRST_CONNECTION: the one that woke the daemon, accepted and not yet read (first_request.py)."""
    app = create_app(settings, registry, engine)
    # Signals are ours from here: a SIGTERM that comes right after READY=1 (or
    # during start-up) must stop the daemon cleanly, not kill it by default.
    signalled = _catch_stop_signals()
    keepalive = app[keys.CONNECTIONS].keepalive_seconds
    # handler_cancellation: a client that disconnects cancels its handler, which
    # cancels its generation at the next token instead of running to the end.
    # auto_decompress off: api/http/body.py decodes Content-Encoding itself, so a
    # body that lies about it is a 400 and not a broken connection.
    # shutdown_timeout: requests still running at a stop are cancelled after this long, well inside the
    # watchdog's STOP_TIMEOUT_SECONDS.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, keepalive_timeout=keepalive,
                           handle_signals=False, auto_decompress=False, shutdown_timeout=STOP_GRACE_SECONDS)
    await runner.setup()
    shape_parser_errors(runner.server)
    app[keys.CONNECTIONS].attach(runner.server)
    try:
        sites = await _start_sites(runner, inherited, settings)
    except ListenError:
        await runner.cleanup()
        raise
    if first_connection is not None:  # served like any connection the sites accept
        await asyncio.get_running_loop().connect_accepted_socket(runner.server, first_connection)
    app[keys.ACCESS].unix_paths = _unix_paths(inherited, settings)
    _warn_if_open(inherited, settings)
    log.info("listening on %s (threads=%d, idle timeout %d s%s)", ", ".join(site.name for site in sites),
             settings.threads, settings.idle_timeout_seconds,
             ", exits when idle" if settings.exit_when_idle else "")
    systemd.notify("READY=1", "STATUS=ready, no model loaded yet")
    app[keys.METRICS].ready_seconds = seconds_since_process_start()
    if not inherited and sys.stderr.isatty():  # someone started it by hand and is looking: what to try first
        log.info("%s", first_try(sites, registry))

    reason = await _run_until_exit(runner, sites, app, settings, signalled)

    systemd.notify("STOPPING=1", f"STATUS=stopping: {reason}")
    if reason == "idle":  # bounded by the keep-alive; what arrived in the last moment is answered
        await lifecycle.drain(runner, app[keys.ACTIVITY], app[keys.CONNECTIONS], grace_seconds=keepalive)
    else:  # a stop signal: requests in flight get the runner's grace below
        await lifecycle.wind_down(app[keys.ACTIVITY], app[keys.CONNECTIONS])
    _exit_if_stuck(STOP_TIMEOUT_SECONDS, reason)
    await runner.cleanup()  # stops accepting, lets requests finish, frees models
    log.info("exiting: %s after serving %d requests", reason, app[keys.ACTIVITY].served,
             extra={"EVENT": "exit", "EXIT_REASON": reason})
    return 0


def _exit_if_stuck(timeout: float, reason: str) -> None:
    """A watchdog for the stop: if the graceful path has not ended the process within TIMEOUT seconds (a
    request stuck in llama.cpp, a wedged thread), exit anyway, non-zero, so that a stop never hangs and
    systemd starts a fresh daemon on the next connection (issue 21)."""
    def stuck() -> None:
        log.error("stopping (%s) took more than %g s; exiting without finishing the stop", reason, timeout,
                  extra={"EVENT": "exit", "EXIT_REASON": "stop timeout"})
        logging.shutdown()
        os._exit(EXIT_STOP_TIMEOUT)

    watchdog = threading.Timer(timeout, stuck)
    watchdog.daemon = True  # a clean exit does not wait for it
    watchdog.start()


def _catch_stop_signals() -> asyncio.Future:
    """A future that SIGTERM or SIGINT resolves with its reason."""
    loop = asyncio.get_running_loop()
    signalled = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _resolve_once, signalled, f"{signal.Signals(signum).name} received")
    return signalled


async def _run_until_exit(runner: web.AppRunner, sites: list[web.BaseSite], app: web.Application,
                          settings: Settings, signalled: asyncio.Future) -> str:
    """Wait for SIGTERM/SIGINT (SIGNALLED) or, when exiting on idle, the idle timeout; return why."""
    loop = asyncio.get_running_loop()
    watcher = asyncio.ensure_future(lifecycle.watch(
        runner, sites, app[keys.ACTIVITY], app[keys.POOL], app[keys.CONNECTIONS], settings.idle_timeout_seconds,
        settings.exit_when_idle))
    done, _ = await asyncio.wait({signalled, watcher}, return_when=asyncio.FIRST_COMPLETED)
    watcher.cancel()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)
    return (signalled if signalled in done else watcher).result()


def _resolve_once(future: asyncio.Future, value: str) -> None:
    if not future.done():  # a second signal while stopping changes nothing
        future.set_result(value)


def first_try(sites: list[web.BaseSite], registry: Registry) -> str:
    """A first request to make, with the URL it listens on and a model it has."""
    tcp = next((site.name for site in sites if not site.name.startswith("http://unix:")), None)
    if tcp is not None:
        url = tcp.rstrip("/")
    else:  # unix sockets only: curl reaches them with --unix-socket and any host name
        url = "--unix-socket " + sites[0].name.removeprefix("http://unix:").removesuffix(":") + " http://hoshikage"
    model = next(iter(sorted(registry.entries())), "MODEL")
    return (f"try: curl {url}/v1/chat/completions -H 'Content-Type: application/json' "
            f"-d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'")


_BIND_CAUSES = {
    errno.EADDRINUSE: "the address is already in use (another hoshikage, or another program, listens there)",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EADDRNOTAVAIL: "this machine has no such address",
    errno.ENOENT: "its directory does not exist",
    errno.ENOTDIR: "a part of its directory is not a directory",
}


async def _start_sites(runner: web.AppRunner, inherited: list[socket.socket],
                       settings: Settings) -> list[web.BaseSite]:
    if inherited:
        sites: list[web.BaseSite] = [web.SockSite(runner, sock) for sock in inherited]
        for site in sites:
            await site.start()
        return sites
    sites = []
    for address in settings.listen:
        kind, host_or_path, port = parse_listen_address(address)
        try:
            if kind == "tcp":
                site: web.BaseSite = web.TCPSite(runner, host_or_path, port, reuse_address=True)
            else:
                site = web.SockSite(runner, _bind_unix(Path(host_or_path)))
            await site.start()
        except OSError as error:
            cause = _BIND_CAUSES.get(error.errno, error.strerror or str(error))
            raise ListenError(f"cannot listen on {address}: {cause}") from None
        sites.append(site)
    return sites


def _unix_paths(inherited: list[socket.socket], settings: Settings) -> list[Path]:
    """The unix sockets served: their permissions say who may use TCP without a key (api/http/identity.py)."""
    if inherited:
        return unix_socket_paths(inherited)
    return [Path(path) for kind, path, _ in map(parse_listen_address, settings.listen) if kind == "unix"]


def _warn_if_open(inherited: list[socket.socket], settings: Settings) -> None:
    """TCP beyond loopback with no key lets anyone who reaches it in, as one shared identity: say so once."""
    if settings.tcp_keys:
        return
    if inherited:
        hosts = [sock.getsockname()[0] for sock in inherited if sock.family in (socket.AF_INET, socket.AF_INET6)]
    else:
        hosts = [host for kind, host, _ in map(parse_listen_address, settings.listen) if kind == "tcp"]
    exposed = [host for host in hosts if not is_loopback_host(host)]
    if exposed:
        log.warning("TCP on %s has no API key: anyone who reaches it is let in, all as one 'anonymous' identity "
                    "sharing its conversations; set api_keys to tell them apart", ", ".join(exposed))


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False  # ECONNREFUSED: nobody listens, the file is left over
    return True


def _bind_unix(path: Path) -> socket.socket:
    """Bind a unix socket, replacing a stale one left by a crash, never a live one or a regular file."""
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            if _socket_answers(path):
                raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
            path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    os.chmod(path, 0o660)  # owner and group, like the systemd socket unit
    sock.listen(128)
    return sock
