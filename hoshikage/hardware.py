"""Facts about the machine that decide performance defaults."""

from __future__ import annotations

import math
import os
from pathlib import Path


def physical_core_count(sysfs: Path = Path("/sys/devices/system/cpu"),
                        cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Physical cores this process may run on.

    llama.cpp decodes fastest with one thread per physical core: SMT siblings
    share the FPU, and llama-cpp-python's own default (half the logical CPUs)
    leaves half of a non-SMT machine idle. A cgroup CPU quota caps the count
    too, since threads beyond it only add scheduling stalls.
    """
    allowed = os.sched_getaffinity(0)
    cores: set[tuple[str, str]] = set()
    for cpu in allowed:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            cores.add(("cpu", str(cpu)))  # no topology: count the CPU itself
            continue
        cores.add((package, core))
    count = len(cores) or len(allowed) or 1
    quota = _cgroup_cpu_quota(cgroup_cpu_max)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return count


def _cgroup_cpu_quota(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)
