"""A stand-in for systemd's socket units, for tests without PID 1.

It holds the listening sockets for the whole test, like systemd does, and
keeps one `systemd-socket-activate` waiting on them: that waits for the first
connection, then execs `hoshikage serve` with the sockets as LISTEN_FDS. When
the daemon exits (idle), the next `systemd-socket-activate` takes over the
same sockets, so a connection made meanwhile waits in the backlog, as under
systemd.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tests.conftest import REPO, free_tcp_port


class Activator:
    def __init__(self, state_dir: Path, *serve_args: str, env: dict[str, str] | None = None):
        self.port = free_tcp_port()
        self.unix_path = Path(tempfile.mkdtemp(prefix="hk-act-")) / "hoshikage.sock"
        self.tcp = socket.create_server(("127.0.0.1", self.port), backlog=128)
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(str(self.unix_path))
        self.unix.listen(128)
        self.command = [sys.executable, "-m", "hoshikage", "--state-dir", str(state_dir), "serve",
                        "--no-embedded-model", *serve_args]
        self.env = {**os.environ, **(env or {})}
        # systemd-socket-activate hands its child a fresh environment: name what to keep.
        self.keep_env = [arg for name in ("HOSHIKAGE_CONFIG", *(env or {})) for arg in ("-E", name)]
        self.log_path = state_dir / "activation.log"
        self.exit_codes: list[int] = []
        self.current: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._spawning = threading.Lock()  # stop() sees either no new waiter, or the one it must end
        self._launched = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()
        self._launched.wait(10)

    def _spawn(self) -> subprocess.Popen:
        # Copies far above 3 and 4 first, so placing one cannot overwrite the other.
        tcp_fd = fcntl.fcntl(self.tcp.fileno(), fcntl.F_DUPFD_CLOEXEC, 100)
        unix_fd = fcntl.fcntl(self.unix.fileno(), fcntl.F_DUPFD_CLOEXEC, 100)

        def place_sockets_at_3_and_4():  # where sd_listen_fds() expects them
            os.dup2(tcp_fd, 3)
            os.dup2(unix_fd, 4)

        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=2 exec systemd-socket-activate "$@"',
                 "sh", "--fdname=hoshikage", *self.keep_env, *self.command],
                preexec_fn=place_sockets_at_3_and_4,
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                close_fds=False)  # fds 3 and 4 must survive; closing the rest is not worth a helper
        os.close(tcp_fd)
        os.close(unix_fd)
        return process

    def _supervise(self) -> None:
        while True:
            with self._spawning:
                if self._stopping.is_set():
                    return
                self.current = self._spawn()
            self._launched.set()
            code = self.current.wait()
            if not self._stopping.is_set():
                self.exit_codes.append(code)

    def daemon_running(self) -> bool:
        """True once the waiting systemd-socket-activate has become hoshikage."""
        process = self.current
        if process is None or process.poll() is not None:
            return False
        program = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")[0]
        # Empty while the process is between two execs (sh -> systemd-socket-activate): not hoshikage yet.
        return Path(program.decode()).name not in {"", "sh", "systemd-socket-activate"}

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        # Under the lock: a daemon that has just exited cannot be replaced by a waiter nobody would end.
        with self._spawning:
            self._stopping.set()
            current = self.current
        if current and current.poll() is None:
            current.terminate()
            current.wait(30)
        self._thread.join(30)
        self.tcp.close()
        self.unix.close()
