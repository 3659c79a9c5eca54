"""`hoshikage status`: what the daemon is doing, without ever starting it to find out.

Under systemd a connection to the socket would start the daemon, so the
service's state is asked of systemd first, and the daemon itself is only
asked (over its unix socket) when it already runs. Without systemd nothing is
socket-activated, and the configured address can be asked directly.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
from typing import Any

from hoshikage.config import Settings, parse_listen_address
from hoshikage.unix_http import PACKAGED_SOCKET, UnixHTTPConnection

SERVICE = "hoshikage.service"


def systemd_state() -> dict[str, str] | None:
    """The service's ActiveState, SubState, StatusText and MainPID; None without the unit."""
    if shutil.which("systemctl") is None:
        return None
    result = subprocess.run(
        ["systemctl", "show", SERVICE, "--property=LoadState,ActiveState,SubState,StatusText,MainPID"],
        capture_output=True, text=True, timeout=10)
    state = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    if result.returncode != 0 or state.get("LoadState") != "loaded":
        return None
    return state


def ask_daemon(connection: http.client.HTTPConnection) -> dict[str, Any]:
    try:
        connection.request("GET", "/v1/status")
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def query(settings: Settings, timeout: float = 5.0) -> dict[str, Any]:
    state = systemd_state()
    if state is not None:
        report: dict[str, Any] = {"managed_by": "systemd", "service": state.get("ActiveState"),
                                  "status_text": state.get("StatusText", "")}
        if state.get("ActiveState") == "active":
            report["daemon"] = ask_daemon(UnixHTTPConnection(PACKAGED_SOCKET, timeout))
        return report
    kind, host_or_path, port = parse_listen_address(settings.listen[0])
    connection = (http.client.HTTPConnection(host_or_path, port, timeout=timeout) if kind == "tcp"
                  else UnixHTTPConnection(host_or_path, timeout))
    try:
        return {"managed_by": "none", "service": "active", "daemon": ask_daemon(connection)}
    except OSError:
        return {"managed_by": "none", "service": "inactive"}
