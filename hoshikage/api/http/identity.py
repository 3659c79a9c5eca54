"""Who is asking, and whether they may: the kernel's word on the unix socket, a named key on TCP.

- **Unix socket**: the peer's uid, from SO_PEERCRED. Whether it could connect at
  all, the socket file's owner, group and mode decided (the packaged unit: root,
  group hoshikage, 0660).
- **TCP with keys** (``api_keys``, ``api_key``): the name of the key sent as
  ``Authorization: Bearer``; none or a wrong one is 401.
- **TCP without keys, from loopback**: the peer's uid, from the kernel's table
  of TCP sockets (the connecting socket is listed there with its owner). It is
  let in only where that uid could also open one of the daemon's unix sockets,
  so the packaged ``127.0.0.1:8000`` admits no one the socket's group keeps out
  (nor a peer whose uid cannot be found). A daemon with no unix socket
  (``hoshikage serve`` by hand) admits every local user, each as itself.
- **TCP without keys, from elsewhere** (a container's published port, a bind to
  a LAN address): one shared ``anonymous`` identity, as before identities existed.
  Listening beyond loopback without keys is the admin's choice; the daemon warns.

Admins are root, the daemon's own user (it can read the store files anyway),
and keys marked ``admin``. systemd hands us every socket under one name, so the
transport is told by the socket's own address family, never by configuration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd
import socket
import weakref
from pathlib import Path

from aiohttp import web

from hoshikage.api.http.errors import APIError
from hoshikage.api_keys import find_key
from hoshikage.peers import admits, is_loopback, loopback_peer_uid, peer_uid



@dataclasses.dataclass(frozen=True)
class Identity:
    name: str  # "uid:1000", "key:alice" or "anonymous": what owns conversations, what the journal shows
    admin: bool = False

    @property
    def label(self) -> str:
        """For people: a uid with its user name."""
        if self.name.startswith("uid:"):
            try:
                return f"{self.name} ({pwd.getpwuid(int(self.name[4:])).pw_name})"
            except KeyError:
                pass
        return self.name


ANONYMOUS = Identity("anonymous")


def _socket_of(request: web.Request) -> socket.socket | None:
    transport = request.transport
    return transport.get_extra_info("socket") if transport is not None else None


class Access:
    """The daemon's access policy: its keys, its own uid, the unix sockets whose permissions TCP follows."""

    def __init__(self, tcp_keys, daemon_uid: int | None = None):
        self.tcp_keys = tcp_keys
        self.daemon_uid = os.getuid() if daemon_uid is None else daemon_uid
        self.unix_paths: list[Path] = []  # set once the sockets are open (daemon.py)
        # transport -> (uid or None, refusal or None): decided once per connection
        self._tcp_peers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def of_uid(self, uid: int) -> Identity:
        return Identity(f"uid:{uid}", admin=uid in (0, self.daemon_uid))

    async def identify(self, request: web.Request) -> Identity:
        """The identity of REQUEST, or APIError 401/403 saying what to do."""
        sock = _socket_of(request)
        if sock is not None and sock.family == socket.AF_UNIX:
            return self.of_uid(peer_uid(sock))
        if self.tcp_keys:
            return self._by_key(request)
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the client went away")
        peer = transport.get_extra_info("peername")
        if not is_loopback(peer):
            return ANONYMOUS
        if transport not in self._tcp_peers:  # once per connection, off the event loop (files, the user database)
            self._tcp_peers[transport] = await asyncio.to_thread(
                self._loopback_verdict, peer, transport.get_extra_info("sockname"))
        uid, refusal = self._tcp_peers[transport]
        if refusal is not None:
            raise APIError(403, refusal, code="permission_denied", error_type="permission_error")
        return ANONYMOUS if uid is None else self.of_uid(uid)

    def _loopback_verdict(self, peer, local) -> tuple[int | None, str | None]:
        """(the loopback peer's uid or None, why it may not ask or None): peers.admits."""
        uid = loopback_peer_uid(peer, local)
        if admits(uid, self.unix_paths, self.daemon_uid):
            return uid, None
        if uid is None:  # whoever it is might be someone the socket's group keeps out
            return None, ("The daemon cannot tell which local user this TCP connection comes from (it is not in "
                          "this network namespace's socket table), and without that TCP admits only whom its unix "
                          f"socket {self.unix_paths[0]} admits: use that socket, or a key from api_keys")
        return uid, _refusal(uid, self.unix_paths[0])

    def _by_key(self, request: web.Request) -> Identity:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        key = find_key(self.tcp_keys, given.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise APIError(401, "Incorrect API key provided. Send it as 'Authorization: Bearer KEY'; "
                                "the unix socket needs none.", code="invalid_api_key")
        return Identity(f"key:{key.name}", admin=key.admin)


def _refusal(uid: int, path: Path) -> str:
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        import grp

        group = grp.getgrgid(path.stat().st_gid).gr_name
    except (KeyError, OSError):
        group = "the socket's group"
    return (f"User {user} may not use this daemon: its unix socket {path} admits group {group}, and TCP without a "
            f"key admits the same users. An admin adds you with `usermod -aG {group} {user}`, or gives you a key "
            "in api_keys.")


