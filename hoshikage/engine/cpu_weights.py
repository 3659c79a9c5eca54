"""Whether llama.cpp may repack a model's weights into its extra CPU buffer types: one rule for every load.

llama.cpp can copy weights into CPU-specific layouts at load time (its "extra
buffer types": CPU_REPACK for AVX2/AVX-512 kernels, AMX on Intel CPUs with
Advanced Matrix Extensions). On AMX hosts (Sapphire Rapids and later Xeons) the
AMX buffer type's matrix kernel crashes the process on the first decode
(llama.cpp issue #20824, closed without a fix; Ollama #17249 and #17006), so a
model that lands there takes the daemon down with its first request.

The rule (``cpu_weight_repack``):
- ``auto`` (default): repack only where llama.cpp would not choose the AMX
  buffer type, asked of llama.cpp itself: the extra buffer types its CPU
  backend offers on this host (which exist only when the loaded CPU variant was
  built with AMX *and* the kernel grants AMX state). When llama.cpp cannot be
  asked, /proc/cpuinfo's amx_int8 flag decides, conservatively.
- ``on``: the admin opts in, AMX included.
- ``off``: never (llama-server's ``--no-repack``).

Chat models also keep repacking off while ``batch_invariant`` is on (see
engine/llama.py): this rule only says whether repacking is *allowed*.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

SETTINGS = ("auto", "on", "off")
UPSTREAM_ISSUE = "llama.cpp issue #20824"
AMX_BUFFER_TYPE = "AMX"


@dataclasses.dataclass(frozen=True)
class RepackDecision:
    allowed: bool
    setting: str
    reason: str
    buffer_types: tuple[str, ...] | None  # what llama.cpp offers here; None when it could not be asked

    def describe(self) -> dict:
        return {"allowed": self.allowed, "setting": self.setting, "reason": self.reason,
                "extra_buffer_types": list(self.buffer_types) if self.buffer_types is not None else None}

    @property
    def journal_value(self) -> str:
        return "on" if self.allowed else "off"


def decide(setting: str, buffer_types: Iterable[str] | None, cpu_flags: Iterable[str]) -> RepackDecision:
    """The rule, on what llama.cpp reports (BUFFER_TYPES, None if unknown) and the CPU's flags."""
    if setting not in SETTINGS:
        raise ValueError(f"cpu_weight_repack must be one of {', '.join(SETTINGS)}, not {setting!r}")
    known = tuple(buffer_types) if buffer_types is not None else None
    if known is not None:
        amx = AMX_BUFFER_TYPE in known
        evidence = ("llama.cpp offers its AMX buffer type on this CPU" if amx
                    else "llama.cpp offers no AMX buffer type here")
    else:
        amx = "amx_int8" in set(cpu_flags)
        evidence = ("the CPU has AMX (amx_int8 in /proc/cpuinfo)" if amx
                    else "the CPU has no AMX (/proc/cpuinfo)")
    if setting == "on":
        reason = "cpu_weight_repack: on"
        if amx:
            reason += f"; {evidence}, whose kernel is known to crash ({UPSTREAM_ISSUE})"
        return RepackDecision(True, setting, reason, known)
    if setting == "off":
        return RepackDecision(False, setting, "cpu_weight_repack: off", known)
    if amx:
        return RepackDecision(False, setting, (
            f"{evidence}, whose matrix kernel crashes on the first decode ({UPSTREAM_ISSUE}); weights stay in "
            "plain buffers (cpu_weight_repack: on opts in)"), known)
    return RepackDecision(True, setting, evidence, known)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first CPU's feature flags (every core of a machine has the same)."""
    try:
        with cpuinfo.open() as lines:
            for line in lines:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def for_this_host(setting: str) -> RepackDecision:
    """The rule for this process's llama.cpp on this CPU (loads llama.cpp's backends if not yet loaded)."""
    from hoshikage.engine import native

    return decide(setting, native.cpu_extra_buffer_types(), cpu_flags())
