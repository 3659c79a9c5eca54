"""llama.cpp's native libraries and compute devices: started once, on the main thread, first.

Why first and why here (issue 9): on a CUDA build the daemon died with a
segmentation fault inside ``llama_model_load_from_file`` on its first
request, whatever the settings, while llama-server from the same build served
the same model. It crashed only when numpy (which starts OpenBLAS's thread
pool as it is imported) was loaded before llama.cpp's libraries *and*
llama.cpp's backends were first brought up on a worker thread: llama.cpp
builds its backend registry lazily, on the first call that needs it, and on a
CUDA build that first call initialises the CUDA driver and loads its
libraries. Loading in the main thread, or llama.cpp's libraries before numpy,
did not crash. This is the family of failures where a library with static
thread-local storage is loaded after other threads exist (glibc's static TLS
surplus is sized at start-up).

So the daemon does what llama-server does: before any other thread exists
and before numpy is imported, it loads llama.cpp's libraries, initialises the
backends and asks every device for its memory, on the main thread
(``start_backends``). Model loads on worker threads then find everything
initialised. tests/integration/test_native_order.py guards the order in the
real daemon process.

A portable build (``GGML_BACKEND_DL`` with ``GGML_CPU_ALL_VARIANTS``, as
packaging/dev.sh, the .deb and the image build it) has no CPU backend linked in:
one library per CPU generation, of which llama.cpp loads the best this CPU
runs. llama.cpp looks for them beside the executable (here: python3's
directory), so ``load_backends`` points it at the directory the wheel
installed them in, before anything else asks for a backend.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import sys
import threading
from pathlib import Path

log = logging.getLogger("hoshikage.native")

# ggml_backend_dev_type (ggml-backend.h)
_DEVICE_KINDS = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}
OFFLOAD_KINDS = frozenset({"gpu", "igpu"})


@dataclasses.dataclass(frozen=True)
class Device:
    """One compute device as llama.cpp reports it."""
    name: str
    description: str
    kind: str  # cpu, gpu, igpu, accel
    free_bytes: int
    total_bytes: int

    def describe(self) -> dict:
        return dataclasses.asdict(self)


def start_backends() -> list[Device]:
    """Load llama.cpp and bring up its backends here, on the main thread; return its devices."""
    if threading.current_thread() is not threading.main_thread():
        log.warning("llama.cpp's backends are being started off the main thread; CUDA builds may crash")
    if "numpy" in sys.modules:
        log.warning("numpy was imported before llama.cpp's libraries; CUDA builds may crash")
    import llama_cpp  # loads libllama and the ggml libraries it links (then imports numpy)

    load_backends()
    llama_cpp.llama_backend_init()  # registers the backends: on CUDA, initialises the driver
    devices = device_report()
    gpus = offload_devices(devices)
    log.info("compute devices: %s", ", ".join(
        f"{device.description or device.name} ({device.kind}, {device.free_bytes / 2**30:.1f} of "
        f"{device.total_bytes / 2**30:.1f} GiB free)" for device in gpus) or "CPU only")
    variant = loaded_cpu_variant()
    log.info("llama.cpp CPU backend: %s", variant, extra={"CPU_VARIANT": variant})
    return devices


def backend_directory() -> Path | None:
    """Where the wheel put ggml's dynamically loaded backends (libggml-cpu-*.so), if it has any.

    llama-cpp-python installs its own libraries in llama_cpp/lib; ggml installs
    dynamic backends in the install prefix's bin/, which is site-packages/bin.
    """
    import llama_cpp

    package = Path(llama_cpp.__file__).parent
    for directory in (package / "lib", package.parent / "bin"):
        if any(directory.glob("libggml-cpu*.so")):
            return directory
    return None


def load_backends() -> None:
    """Load a portable build's backends from the wheel's directory; nothing for a build that links them in."""
    api = _DeviceAPI()
    if api.reg_count():
        return  # linked in (or loaded already)
    directory = backend_directory()
    if directory is None:
        return  # llama.cpp's own search, and its own error if that finds nothing
    api.load_all_from_path(str(directory).encode())


def cpu_backend() -> dict:
    """The CPU backend llama.cpp runs: the variant a portable build chose, and the features it was built with."""
    api = _DeviceAPI()
    load_backends()
    registration = api.reg_by_name(b"CPU")
    features: dict[str, str] = {}
    if registration:
        address = api.get_proc_address(registration, b"ggml_backend_get_features")
        if address:
            listing = ctypes.CFUNCTYPE(ctypes.POINTER(_Feature), ctypes.c_void_p)(address)(registration)
            index = 0
            while listing and listing[index].name:
                features[listing[index].name.decode()] = (listing[index].value or b"").decode()
                index += 1
    return {"variant": loaded_cpu_variant(), "features": features}


def cpu_extra_buffer_types() -> tuple[str, ...] | None:
    """The names of the extra (repacked) buffer types llama.cpp's CPU device offers; None if it cannot say."""
    api = _DeviceAPI()
    load_backends()
    registration = api.reg_by_name(b"CPU")
    if not registration:
        return None
    address = api.get_proc_address(registration, b"ggml_backend_dev_get_extra_bufts")
    if not address:
        return None
    device = api.reg_dev_get(registration, 0)
    listing = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)(device)
    names = []
    index = 0
    while listing and listing[index]:
        names.append((api.buft_name(listing[index]) or b"").decode())
        index += 1
    return tuple(names)


def loaded_cpu_variant(maps: Path = Path("/proc/self/maps")) -> str:
    """Which libggml-cpu-VARIANT.so this process mapped; "built-in" for a build that links its CPU backend."""
    try:
        text = maps.read_text()
    except OSError:
        return "unknown"
    for line in text.splitlines():
        name = line.rpartition("/")[2]
        if name.startswith("libggml-cpu-") and name.endswith(".so"):
            return name.removeprefix("libggml-cpu-").removesuffix(".so")
    return "built-in"


def device_report() -> list[Device]:
    """Every device of this host llama.cpp knows, with its memory now (free and total bytes).

    RPC servers' devices (engine/rpc.py) are another host's, and asking one for its memory is a network call:
    they are left out, and each model's status names the servers it uses.
    """
    api = _DeviceAPI()
    rpc = api.reg_by_name(b"RPC")
    devices = []
    for index in range(api.count()):
        handle = api.get(index)
        if rpc and api.dev_reg(handle) == rpc:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        api.memory(handle, ctypes.byref(free), ctypes.byref(total))
        devices.append(Device(name=(api.name(handle) or b"").decode(errors="replace"),
                              description=(api.description(handle) or b"").decode(errors="replace"),
                              kind=_DEVICE_KINDS.get(api.kind(handle), "other"),
                              free_bytes=free.value, total_bytes=total.value))
    return devices


def offload_devices(devices: list[Device]) -> list[Device]:
    """The devices llama.cpp offloads layers to."""
    return [device for device in devices if device.kind in OFFLOAD_KINDS]


class _DeviceAPI:
    """ggml's device functions, which llama-cpp-python does not bind.

    They live in libggml and libggml-base; looking them up through libllama's
    handle finds them, since dlsym searches a library's dependencies too.
    """

    def __init__(self):
        from llama_cpp import llama_cpp as bindings

        lib = bindings._lib
        self.count = _function(lib.ggml_backend_dev_count, ctypes.c_size_t)
        self.get = _function(lib.ggml_backend_dev_get, ctypes.c_void_p, ctypes.c_size_t)
        self.name = _function(lib.ggml_backend_dev_name, ctypes.c_char_p, ctypes.c_void_p)
        self.description = _function(lib.ggml_backend_dev_description, ctypes.c_char_p, ctypes.c_void_p)
        self.kind = _function(lib.ggml_backend_dev_type, ctypes.c_int, ctypes.c_void_p)
        self.memory = _function(lib.ggml_backend_dev_memory, None, ctypes.c_void_p,
                                ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t))
        self.reg_count = _function(lib.ggml_backend_reg_count, ctypes.c_size_t)
        self.reg_by_name = _function(lib.ggml_backend_reg_by_name, ctypes.c_void_p, ctypes.c_char_p)
        self.reg_dev_get = _function(lib.ggml_backend_reg_dev_get, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
        self.get_proc_address = _function(lib.ggml_backend_reg_get_proc_address, ctypes.c_void_p, ctypes.c_void_p,
                                          ctypes.c_char_p)
        self.buft_name = _function(lib.ggml_backend_buft_name, ctypes.c_char_p, ctypes.c_void_p)
        self.dev_reg = _function(lib.ggml_backend_dev_backend_reg, ctypes.c_void_p, ctypes.c_void_p)
        self.load_all_from_path = _function(lib.ggml_backend_load_all_from_path, None, ctypes.c_char_p)


class _Feature(ctypes.Structure):
    """struct ggml_backend_feature: a name and a value; a NULL name ends the list."""
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


def _function(symbol, restype, *argtypes):
    symbol.restype = restype
    symbol.argtypes = list(argtypes)
    return symbol
