"""The daemon's clock: STATUS= lines for `systemctl status`, and the decision to exit when idle.

Exiting on idle must not lose a connection at the boundary. The decision and
the act happen in one event-loop step: no request in flight, no connection
open (not even an idle keep-alive one; after connection_idle_seconds more,
open connections that make no request no longer count), then every listening
socket is closed before the loop can accept again, and what was accepted is
drained. Under socket activation systemd keeps its
own copy of those sockets, so a client connecting from that moment on waits in
the kernel's backlog and is served by the next instance.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from hoshikage import systemd
from hoshikage.activity import Activity
from hoshikage.api.http.connections import ConnectionGuard
from hoshikage.engine.models import ModelPool

log = logging.getLogger("hoshikage.lifecycle")

TICK_SECONDS = 1.0
DRAIN_POLL_SECONDS = 0.05


def format_duration(seconds: float) -> str:
    """'4m 10s', in 10-second steps above a minute, so STATUS= changes at most every 10 s."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    seconds -= seconds % 10
    return f"{seconds // 60}m {seconds % 60}s" if seconds % 60 else f"{seconds // 60}m"


def status_text(activity: Activity, pool: ModelPool, idle_timeout: int, exit_when_idle: bool) -> str:
    if activity.in_flight:
        plural = "" if activity.in_flight == 1 else "s"
        text = f"serving {activity.in_flight} request{plural}"
    elif not idle_timeout:
        text = "idle"
    else:
        remaining = format_duration(idle_timeout - activity.idle_for())
        text = f"idle, exits in {remaining}" if exit_when_idle else f"idle, models released in {remaining}"
    return f"{text}; {pool.last_event}" if pool.last_event else text


class StatusLine:
    """Sends STATUS= only when the text changes."""

    def __init__(self) -> None:
        self.text = ""

    def show(self, text: str) -> None:
        if text != self.text:
            self.text = text
            systemd.notify(f"STATUS={text}")


async def watch(runner: web.AppRunner, sites: list[web.BaseSite], activity: Activity, pool: ModelPool,
                connections: ConnectionGuard, idle_timeout: int, exit_when_idle: bool) -> str:
    """Keep STATUS= current; return "idle" once the daemon has stopped accepting to exit."""
    status = StatusLine()
    while True:
        status.show(status_text(activity, pool, idle_timeout, exit_when_idle))
        connections.forget()
        idle_for = activity.idle_for()
        # Open connections hold the exit back (a keep-alive client may send its next request any
        # moment), but not for ever: clients that keep opening connections and sending nothing
        # (slowloris) would. After connection_idle_seconds more, whatever is open is drained.
        if (exit_when_idle and idle_timeout and activity.in_flight == 0 and idle_for >= idle_timeout
                and (not runner.server.connections or idle_for >= idle_timeout + connections.idle_seconds)):
            # No await may come between the check above and closing the sockets.
            for site in sites:
                await site.stop()  # synchronous inside: closes the listening socket
            return "idle"
        await asyncio.sleep(TICK_SECONDS)


async def wind_down(activity: Activity, connections: ConnectionGuard) -> None:
    """The daemon is leaving, whatever the reason: answers from now on close their connection, and WebSockets
    waiting for their next message are closed as going away (1001); a busy one closes after its response."""
    activity.draining = True
    await connections.close_idle_sockets()


async def drain(runner: web.AppRunner, activity: Activity, connections: ConnectionGuard, grace_seconds: float) -> None:
    """After the listening sockets closed: serve what was already accepted, then return.

    A connection accepted in the last loop steps before the close registers a
    moment later; it gets its answer with ``Connection: close`` (see
    ``activity.draining``) instead of being cut off by the shutdown.
    """
    await wind_down(activity, connections)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_seconds
    await asyncio.sleep(DRAIN_POLL_SECONDS)  # let accepted sockets reach the server
    while (runner.server.connections or activity.in_flight) and loop.time() < deadline:
        await asyncio.sleep(DRAIN_POLL_SECONDS)
