"""Thin glue over systemd's daemon protocols; every function is a no-op outside systemd.

Sockets come from LISTEN_FDS (socket activation), readiness and status go to
NOTIFY_SOCKET (sd_notify). Nothing else in Hoshikage reads those variables.
"""

from __future__ import annotations

import os
import socket


def inherited_sockets() -> list[socket.socket]:
    """The listening sockets systemd passed us, or [] when started any other way."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    from systemd import daemon

    descriptors = daemon.listen_fds(unset_environment=False)
    # Unset here, not in C: os.environ would still hand them to child processes.
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return [socket.socket(fileno=descriptor) for descriptor in descriptors]


def notify(*lines: str) -> None:
    """Send READY=1, STATUS=..., STOPPING=1 and the like to systemd, if it listens."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    from systemd import daemon

    daemon.notify("\n".join(lines))
