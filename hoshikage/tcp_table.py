"""The kernel's table of this network namespace's TCP sockets (/proc/self/net/tcp and tcp6).

Each line names a socket by its local and remote address, its state, the uid
that owns it and its inode. Used to tell who is behind a loopback connection
(api/http/identity.py) and whether this process already holds a connection to an
RPC server (engine/rpc.py).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from collections.abc import Iterator
from pathlib import Path

TABLES = (Path("/proc/self/net/tcp"), Path("/proc/self/net/tcp6"))
ESTABLISHED = "01"


@dataclasses.dataclass(frozen=True)
class TcpSocket:
    local: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]
    remote: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]
    state: str  # hex, as the kernel writes it: "01" established, "0A" listening
    uid: int
    inode: str


def sockets(tables: tuple[Path, ...] = TABLES) -> Iterator[TcpSocket]:
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9:
                yield TcpSocket(address(fields[1]), address(fields[2]), fields[3], int(fields[7]), fields[9])


def address(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """An address of the table: host-order 32-bit words in hex, then the port in hex."""
    host, _, port = text.partition(":")
    words = [int(host[index:index + 8], 16) for index in range(0, len(host), 8)]
    packed = struct.pack(f"={len(words)}I", *words)
    return plain(ipaddress.ip_address(packed)), int(port, 16)


def plain(address):
    """An IPv4-mapped IPv6 address as the IPv4 address it is."""
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address
