"""A booted Debian 12 container (systemd as PID 1) for system tests.

The root filesystem comes from debootstrap, using the mirror this machine's
apt is already configured with (never a hard-coded host), and is cached:
each test boots a fresh copy of the pristine tree with systemd-nspawn.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

SUITE = "bookworm"
PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "libgomp1", "procps", "util-linux",
            "man-db", "prometheus-node-exporter", "prometheus"]
# Installed for their tools (promtool) or started by a test itself (node_exporter, on a port it picks):
# masked, so that booting a container starts no server of theirs on the host's network.
MASKED = ["prometheus.service", "prometheus-node-exporter.service"]
CLEAN_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"]
CACHE = Path(os.environ.get("HOSHIKAGE_TEST_CACHE", Path.home() / ".cache" / "hoshikage-test"))


def apt_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive URI this machine's apt uses for SUITE."""
    candidates = []
    for path in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                candidates.extend(fields.get("URIs", "").split())
    for path in [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                    candidates.append(parts[1])
    if not candidates:
        raise RuntimeError(f"no apt source for {SUITE} in {sources_dir}")
    return candidates[0]


def pristine_rootfs() -> Path:
    """The cached debootstrap tree, built once (under a lock, for parallel runs)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    # The package list is part of the name: changing it builds a new tree.
    rootfs = CACHE / f"rootfs-{SUITE}-{hashlib.sha256(' '.join(PACKAGES + MASKED).encode()).hexdigest()[:12]}"
    with open(CACHE / "rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (rootfs / ".complete").exists():
            return rootfs
        shutil.rmtree(rootfs, ignore_errors=True)
        partial = rootfs.with_name(rootfs.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                        SUITE, str(partial), apt_mirror()], check=True, stdout=subprocess.DEVNULL)
        for unit in MASKED:
            (partial / "etc" / "systemd" / "system" / unit).unlink(missing_ok=True)
            (partial / "etc" / "systemd" / "system" / unit).symlink_to("/dev/null")
        (partial / ".complete").touch()
        partial.rename(rootfs)
        return rootfs


class Container:
    def __init__(self, binds: dict[Path, str] | None = None, private_network: bool = False):
        self.root = Path(tempfile.mkdtemp(prefix="hoshikage-ct-"))
        os.chmod(self.root, 0o755)  # dbus will not start under a 0700 root
        subprocess.run(["cp", "-a", "--reflink=auto", f"{pristine_rootfs()}/.", str(self.root)], check=True)
        self.machine = f"hoshikage-{uuid.uuid4().hex[:12]}"  # mkdtemp's names may hold '_'; machine names may not
        args = [f"--bind-ro={host}:{inside}" for host, inside in (binds or {}).items()]
        if private_network:
            args.append("--private-network")  # loopback only: nothing can be downloaded
        self.log = open(self.root.parent / f"{self.machine}.console.log", "wb")
        self.process = subprocess.Popen(
            ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--console=pipe",
             f"--machine={self.machine}", "-D", str(self.root), *args],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self._init_pid()
        self.run("systemctl", "is-system-running", "--wait", check=False, timeout=120)

    def _init_pid(self, timeout: float = 60) -> int:
        """systemd-nspawn's child is the container's PID 1."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"container exited: {Path(self.log.name).read_text(errors='replace')}")
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            if pids and Path(f"/proc/{pids[0]}/root/run/systemd").exists():
                return int(pids[0])
            time.sleep(0.1)  # no event to wait on from outside the container
        raise TimeoutError("container did not start")

    def path(self, inside: str) -> Path:
        """A path inside the running container, as the host sees it."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def run(self, *command: str, check: bool = True, timeout: float = 300,
            input: str | None = None) -> subprocess.CompletedProcess:
        # A clean environment: nothing of the host's (PIP_*, HOSHIKAGE_*) belongs inside.
        return subprocess.run(["nsenter", "-t", str(self.pid), "-a", "--root", "--wd", "--", "env", "-i", *CLEAN_ENV, *command],
                              check=check, capture_output=True, text=True, timeout=timeout, input=input)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM to nspawn: a clean poweroff of the container
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
