"""sd_notify and LISTEN_FDS handling, against real sockets, with the environment restored."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from unittest import mock

from hoshikage import systemd
from hoshikage.activity import Activity
from hoshikage.lifecycle import format_duration, status_text


def test_notify_sends_lines_to_the_notify_socket(tmp_path):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(5)
        with mock.patch.dict(os.environ, {"NOTIFY_SOCKET": str(path)}):
            systemd.notify("READY=1", "STATUS=serving 2 requests")
        assert receiver.recv(4096).decode().split("\n") == ["READY=1", "STATUS=serving 2 requests"]


def test_notify_is_a_no_op_outside_systemd():
    with mock.patch.dict(os.environ, clear=False):
        os.environ.pop("NOTIFY_SOCKET", None)
        systemd.notify("READY=1")  # must not raise


CHILD = """
import json, os, socket
from hoshikage import systemd
names = os.environ["LISTEN_FDNAMES"]
sockets = systemd.inherited_sockets()
print(json.dumps({"families": [s.family.name for s in sockets], "names": names,
                  "left": [k for k in os.environ if k.startswith("LISTEN_")]}))
"""


def test_inherited_sockets_are_told_apart_by_family(tmp_path):
    """systemd names every fd of one .socket unit alike: the family must tell TCP from unix."""
    tcp = socket.create_server(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(tmp_path / "sock"))
    unix.listen()

    def place_at_3_and_4():
        os.dup2(tcp.fileno(), 3)
        os.dup2(unix.fileno(), 4)

    with tcp, unix:
        result = subprocess.run(
            ["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", sys.executable, "-c", CHILD],
            env={**os.environ, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "hoshikage:hoshikage"},
            preexec_fn=place_at_3_and_4, close_fds=False, capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    assert report["families"] == ["AF_INET", "AF_UNIX"]
    assert report["left"] == [], "LISTEN_* must not leak into processes the daemon starts"


def test_sockets_meant_for_another_process_are_ignored():
    with mock.patch.dict(os.environ, {"LISTEN_PID": "1", "LISTEN_FDS": "2"}):
        assert systemd.inherited_sockets() == []


def test_status_lines_read_like_a_person_wrote_them():
    class Pool:
        last_event = "gemma loaded (241 MiB) in 0.4 s"

    activity = Activity()
    activity.begin()
    activity.begin()
    assert status_text(activity, Pool(), 300, True) == "serving 2 requests; gemma loaded (241 MiB) in 0.4 s"
    activity.end()
    activity.end()
    text = status_text(activity, Pool(), 300, True)
    assert text.startswith("idle, exits in 4m 50s") or text.startswith("idle, exits in 5m")
    assert format_duration(250) == "4m 10s" and format_duration(59) == "59s" and format_duration(120) == "2m"
