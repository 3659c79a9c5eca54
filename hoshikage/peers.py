"""Who is at the other end of a connection, as the kernel says, and whether the daemon's unix sockets admit them.

The pure part of the access policy (api/http/identity.py applies it to requests): first_request.py asks it too,
before aiohttp is imported, so it imports nothing heavy.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import socket
import struct
from pathlib import Path

from hoshikage import tcp_table


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of unix socket SOCK, as the kernel recorded it at connect."""
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[1]


def loopback_peer_uid(peer: tuple, local: tuple, tables: tuple[Path, ...] = tcp_table.TABLES) -> int | None:
    """The uid owning the TCP socket at PEER connected to LOCAL, from the kernel's socket tables; None when
    it is not listed (another network namespace, or gone)."""
    want = ((tcp_table.plain(ipaddress.ip_address(peer[0].split("%")[0])), peer[1]),
            (tcp_table.plain(ipaddress.ip_address(local[0].split("%")[0])), local[1]))
    for entry in tcp_table.sockets(tables):
        if (entry.local, entry.remote) == want:
            return entry.uid
    return None


def could_open(path: Path, uid: int) -> bool:
    """Whether UID may connect to unix socket PATH: write permission by owner, group (as the account database
    lists the user's groups) or others."""
    try:
        status = path.stat()
    except OSError:
        return False
    if uid == 0:
        return True
    if uid == status.st_uid:
        return bool(status.st_mode & 0o200)
    try:
        account = pwd.getpwuid(uid)
        groups = os.getgrouplist(account.pw_name, account.pw_gid)
    except KeyError:
        groups = []
    if status.st_gid in groups:
        return bool(status.st_mode & 0o020)
    return bool(status.st_mode & 0o002)


def is_loopback(peer) -> bool:
    try:
        return tcp_table.plain(ipaddress.ip_address(peer[0].split("%")[0])).is_loopback
    except (TypeError, ValueError, IndexError):
        return False


def is_loopback_host(host: str) -> bool:
    """Whether HOST, an address or name to listen on, is this machine's loopback."""
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


def admits(uid: int | None, unix_paths: list[Path], daemon_uid: int) -> bool:
    """Whether a loopback TCP peer of UID (None: not found) may ask without a key: with unix sockets served, TCP
    admits whom they admit; with none (``hoshikage serve`` by hand), every local user."""
    if not unix_paths:
        return True
    return uid is not None and (uid in (0, daemon_uid) or any(could_open(path, uid) for path in unix_paths))


def unix_socket_paths(sockets: list[socket.socket]) -> list[Path]:
    """The files of those of SOCKETS that are unix sockets with a path (an abstract one has none)."""
    names = [sock.getsockname() for sock in sockets if sock.family == socket.AF_UNIX]
    return [Path(name) for name in names if isinstance(name, str) and name.startswith("/")]
