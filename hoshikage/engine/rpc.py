"""llama.cpp's RPC backend: one model's layers on `rpc-server` processes of other hosts (issue 27).

A model registered with ``rpc_servers`` (``hoshikage add --rpc HOST:PORT,...``)
is loaded with those servers as its only offload devices: llama.cpp spreads its
layers over them by their free memory and keeps the rest on this host's CPU.
The server side is ``hoshikage rpc-server``: the same wheel's
``ggml_backend_rpc_start_server`` on this host's devices, so both ends always
speak the same protocol version (llama.cpp refuses a mismatch).

Once an RPC server is registered, llama.cpp offers its devices to every model
whose device list is left empty; so every model is given its list here: its own
servers, or, for the others, this host's GPUs alone.

Upstream's warning stands: an rpc-server runs whatever graph a client sends it
and has no authentication. It must only listen where nothing untrusted can
reach it (loopback, or a private network between the hosts).
"""

from __future__ import annotations

import ctypes
import re
import socket
import struct

CONNECT_SECONDS = 5.0
ANSWER_SECONDS = 5.0
# The greeting of llama.cpp's RPC protocol (ggml-rpc.cpp): command HELLO (14, fixed across versions), the size of
# the request (u64), the client's transport capabilities (RPC_CONN_CAPS_SIZE bytes, none asked for here); the
# answer is its size (u64), then major, minor, patch, padding and the server's capabilities.
HELLO = 14
CAPS_SIZE = 24
HELLO_ANSWER_SIZE = 4 + CAPS_SIZE
ALL_LAYERS = 999  # n_gpu_layers beyond any model's layer count: llama.cpp offloads every layer
_ENDPOINT = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})$")


class RpcUnavailable(Exception):
    """An RPC server that cannot be used; str() names it and the fix."""


def parse_endpoint(text: str) -> str:
    """HOST:PORT as llama.cpp takes it; ValueError naming the form otherwise."""
    match = _ENDPOINT.match(text.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 192.168.1.20:50052)")
    return text.strip()


def check_reachable(endpoints: list[str]) -> None:
    """Greet each server first, within a few seconds: llama.cpp gives up on an unreachable one without naming it,
    aborts the process when a greeting fails halfway, and waits forever on a server busy with another client
    (an rpc-server serves one at a time)."""
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        if _connected_here(host.strip("[]"), int(port)):
            continue  # serving this process's other model on it: a greeting would wait its turn behind us
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS) as probe:
                probe.settimeout(ANSWER_SECONDS)
                probe.sendall(bytes([HELLO]) + struct.pack("<Q", CAPS_SIZE) + bytes(CAPS_SIZE))
                (size,) = struct.unpack("<Q", _received(probe, 8))
                if size != HELLO_ANSWER_SIZE:
                    raise RpcUnavailable(f"the RPC server {endpoint} answered as no rpc-server of this llama.cpp "
                                         "does: run `hoshikage rpc-server` of the daemon's version there")
                _received(probe, size)
        except TimeoutError:
            raise RpcUnavailable(f"the RPC server {endpoint} accepted but did not answer in {ANSWER_SECONDS:.0f} s: "
                                 "an rpc-server serves one client at a time, and this one is likely serving "
                                 "another daemon") from None
        except OSError as error:
            raise RpcUnavailable(f"the RPC server {endpoint} cannot be reached ({error.strerror or error}): start "
                                 f"`hoshikage rpc-server` there, or take it out of the model's rpc_servers "
                                 "(`hoshikage add ... --rpc ... --replace`)") from None


def _connected_here(host: str, port: int) -> bool:
    """Whether this process holds an established connection to HOST:PORT (llama.cpp's, for a loaded model)."""
    import ipaddress
    import os

    from hoshikage import tcp_table

    try:
        wanted = {(tcp_table.plain(ipaddress.ip_address(info[4][0].split("%")[0])), port)
                  for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)}
    except OSError:
        return False
    mine = set()
    for descriptor in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{descriptor}")
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[len("socket:["):-1])
    return any(entry.state == tcp_table.ESTABLISHED and entry.inode in mine and entry.remote in wanted
               for entry in tcp_table.sockets())


def _received(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("it closed the connection")
        data += chunk
    return data


class DeviceList:
    """A NULL-terminated array of ggml devices for llama_model_params.devices, kept alive as long as the load."""

    def __init__(self, handles: list[int], endpoints: list[str]):
        self.endpoints = endpoints
        self.array = (ctypes.c_void_p * (len(handles) + 1))(*handles, None)

    def apply(self, model_params) -> None:
        model_params.devices = ctypes.cast(self.array, ctypes.c_void_p).value


def devices_for(endpoints: list[str]) -> DeviceList | None:
    """The devices a model of ENDPOINTS is loaded on: those servers' devices; for a model without servers, this
    host's GPUs once any RPC server is registered in the process (None before: llama.cpp's own choice)."""
    if not endpoints:
        from hoshikage.engine.native import _DeviceAPI

        if not _DeviceAPI().reg_by_name(b"RPC"):
            return None  # a build without the RPC backend: no server can be registered
    api = _RpcAPI()
    if endpoints:
        check_reachable(endpoints)
        handles = []
        for endpoint in endpoints:
            registration = api.add_server(endpoint.encode())
            if not registration:
                raise RpcUnavailable(f"the RPC server {endpoint} answered but offers no device: is it an "
                                     "rpc-server of the same llama.cpp version (`hoshikage rpc-server`)?")
            if registration not in api.registrations():
                api.register(registration)
            handles += [api.reg_dev_get(registration, index) for index in range(api.reg_dev_count(registration))]
        return DeviceList(handles, endpoints)
    if not api.rpc_devices():
        return None
    return DeviceList(api.local_offload_devices(), [])


def serve(host: str, port: int, threads: int, cache_dir: str | None) -> None:
    """Run llama.cpp's RPC server on this host's GPUs (else its CPU) until the process is stopped."""
    from hoshikage.engine.native import start_backends

    start_backends()
    api = _RpcAPI()
    devices = api.local_offload_devices() or [api.cpu_device()]
    array = (ctypes.c_void_p * len(devices))(*devices)
    start = api.proc(b"ggml_backend_rpc_start_server", None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                     ctypes.c_size_t, ctypes.c_void_p)
    start(f"{host}:{port}".encode(), cache_dir.encode() if cache_dir else None, threads, len(devices), array)
    raise RpcUnavailable(f"llama.cpp's RPC server could not listen on {host}:{port} (in use, or not an address "
                         "of this host)")


class _RpcAPI:
    """ggml's registry and device calls the RPC backend needs (llama-cpp-python binds none of them)."""

    def __init__(self):
        from hoshikage.engine.native import _DeviceAPI, _function, load_backends

        load_backends()
        self.devices = api = _DeviceAPI()
        from llama_cpp import llama_cpp as bindings

        lib = bindings._lib
        self.reg_dev_get = api.reg_dev_get
        self.reg_dev_count = _function(lib.ggml_backend_reg_dev_count, ctypes.c_size_t, ctypes.c_void_p)
        self.reg_get = _function(lib.ggml_backend_reg_get, ctypes.c_void_p, ctypes.c_size_t)
        self.register = _function(lib.ggml_backend_register, None, ctypes.c_void_p)
        self.dev_reg = api.dev_reg
        self.rpc = api.reg_by_name(b"RPC")
        if not self.rpc:
            raise RpcUnavailable("this llama.cpp was built without its RPC backend: rebuild llama-cpp-python with "
                                 "CMAKE_ARGS=-DGGML_RPC=ON (packaging/llama-wheel.sh does)")

    def proc(self, name: bytes, restype, *argtypes):
        address = self.devices.get_proc_address(self.rpc, name)
        if not address:
            raise RpcUnavailable(f"llama.cpp's RPC backend lacks {name.decode()}")
        return ctypes.CFUNCTYPE(restype, *argtypes)(address)

    def add_server(self, endpoint: bytes) -> int | None:
        return self.proc(b"ggml_backend_rpc_add_server", ctypes.c_void_p, ctypes.c_char_p)(endpoint)

    def registrations(self) -> list[int]:
        return [self.reg_get(index) for index in range(self.devices.reg_count())]

    def _all_devices(self) -> list[int]:
        return [self.devices.get(index) for index in range(self.devices.count())]

    def rpc_devices(self) -> list[int]:
        return [device for device in self._all_devices() if self.dev_reg(device) == self.rpc]

    def local_offload_devices(self) -> list[int]:
        from hoshikage.engine.native import _DEVICE_KINDS, OFFLOAD_KINDS

        return [device for device in self._all_devices() if self.dev_reg(device) != self.rpc
                and _DEVICE_KINDS.get(self.devices.kind(device)) in OFFLOAD_KINDS]

    def cpu_device(self) -> int:
        return next(device for device in self._all_devices() if self.devices.kind(device) == 0)
