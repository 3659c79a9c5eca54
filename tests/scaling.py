"""Real engines for the scaling-out tests (issue 27): a Chroma server, HAProxy and llama.cpp's rpc-server, on
loopback, stopped by the test."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from hoshikage import tcp_table
from tests.conftest import REPO, free_tcp_port

START_TIMEOUT = 60
LISTENING = "0A"  # the kernel's TCP_LISTEN, in its table


class ChromaServer:
    """`chroma run` from the chromadb package, on loopback, its data under PATH."""

    def __init__(self, path: Path):
        self.path = path
        self.port = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        chroma = Path(sys.executable).parent / "chroma"
        log = (self.path.parent / f"{self.path.name}.log").open("ab")
        self.process = subprocess.Popen([str(chroma), "run", "--path", str(self.path), "--host", "127.0.0.1",
                                         "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # the server says nothing when it is ready; its heartbeat answers then
            assert self.process.poll() is None, f"chroma run exited: {self.process.returncode}"
            try:
                if httpx.get(f"{self.url}/api/v2/heartbeat", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the Chroma server never answered"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class HAProxy:
    """Debian's haproxy in the foreground, configured by CONFIG (its admin socket is added here)."""

    def __init__(self, directory: Path, config: str):
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        assert Path(binary).exists(), "haproxy is not installed (packaging/dev.sh setup installs it)"
        directory.mkdir(parents=True, exist_ok=True)
        self.stats_socket = directory / "haproxy.sock"
        self.config_path = directory / "haproxy.cfg"
        self.config_path.write_text(f"global\n    stats socket {self.stats_socket} mode 600 level admin\n" + config)
        self.log_path = directory / "haproxy.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen([binary, "-db", "-f", str(self.config_path)],
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.stats_socket.exists():
            assert self.process.poll() is None, f"haproxy exited:\n{self.log_path.read_text()}"
            assert time.monotonic() < deadline, "haproxy never opened its admin socket"
            time.sleep(0.05)

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as admin:
            admin.connect(str(self.stats_socket))
            admin.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := admin.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self, backend: str) -> dict[str, str]:
        """{server name: UP, DOWN, ...} as HAProxy's health checks see them now."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND", None):
                states[row["svname"]] = row["status"].split()[0]
        return states

    def wait_for(self, backend: str, server: str, state: str, timeout: float = START_TIMEOUT) -> None:
        """Until SERVER's health-check state is STATE (HAProxy's own table: it announces nothing)."""
        deadline = time.monotonic() + timeout
        while (seen := self.server_states(backend).get(server)) != state:
            assert time.monotonic() < deadline, f"{server} stayed {seen}, never {state}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def balance(directory: Path, backends: dict[str, int]) -> tuple[HAProxy, str]:
    """HAProxy in front of daemons on BACKENDS (name: port), every one UP; (the proxy, its URL).

    Round robin; /health checked every 200 ms, out after 2 failures and back after 2 passes; a connection that
    fails is tried on another daemon; X-Served-By names the daemon that answered.
    """
    front = free_tcp_port()
    servers = "\n".join(f"    server {name} 127.0.0.1:{port} check inter 200ms fall 2 rise 2"
                        for name, port in backends.items())
    proxy = HAProxy(directory, f"""
defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    retries 2
    option redispatch
frontend hoshikage
    bind 127.0.0.1:{front}
    default_backend daemons
backend daemons
    balance roundrobin
    option httpchk GET /health
    http-response set-header X-Served-By %s
{servers}
""")
    for name in backends:
        proxy.wait_for("daemons", name, "UP")
    return proxy, f"http://127.0.0.1:{front}"


class RpcServer:
    """`hoshikage rpc-server` on a loopback port: llama.cpp's RPC server on this host's CPU."""

    def __init__(self, log_path, threads: int = 1):
        self.port = free_tcp_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "hoshikage", "rpc-server", "--port",
                                             str(self.port), "--threads", str(threads)], stdout=log,
                                            stderr=subprocess.STDOUT, cwd=REPO)
        self.log_path = log_path
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening():  # its banner waits in stdout's buffer (a file): its socket is the signal
            assert self.process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "rpc-server never listened"
            time.sleep(0.05)

    def _listening(self) -> bool:
        # The kernel's table of sockets: a probe connection would take the server's one client turn.
        return any(entry.state == LISTENING and entry.local[1] == self.port for entry in tcp_table.sockets())

    def resident_bytes(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            line = next(line for line in status if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
