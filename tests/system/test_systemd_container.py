"""Hoshikage under a real systemd: a booted Debian 12 container, installed from this source tree.

Socket activation, the daemon's user, journald fields, idle exit, the RAM disk
mount and its release, and the sandbox, each checked from outside the
container the way an admin would check them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

IDLE_TIMEOUT = 8
GREAT_TIMEOUT_MINUTES = 0.4  # 24 s
CONFIG = f"""\
idle_timeout_seconds: {IDLE_TIMEOUT}
great_timeout: {GREAT_TIMEOUT_MINUTES}
ramdisk_size: 1
embedded_model: false
metrics_interval_seconds: 1
"""

needs = [tool for tool in ("systemd-nspawn", "debootstrap", "nsenter") if shutil.which(tool) is None]
if os.geteuid() != 0:
    needs.append("root")
pytestmark = pytest.mark.skipif(bool(needs) and os.environ.get("CI") != "true",
                                reason=f"needs {', '.join(needs)}")


def wait_for(predicate, timeout: float, what: str, poll: float = 0.25):
    """Poll state we cannot subscribe to from outside the container, with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """This source tree and its pinned runtime dependencies as wheels (pip's cache makes it quick)."""
    directory = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(directory),
                    "--constraint", str(REPO / "packaging" / "requirements-dev.txt"), str(REPO)],
                   check=True, cwd=REPO)
    return directory


@pytest.fixture(scope="module")
def container(wheels, gemma_path):
    from tests.system.container import Container

    machine = Container(binds={REPO: "/src", wheels: "/wheels", gemma_path.parent: "/srv/models"})
    try:
        install = machine.run("/src/packaging/install-from-source.sh", "--wheels", "/wheels", check=False)
        assert install.returncode == 0, install.stdout + install.stderr
        machine.run("sh", "-c", f"cat > /etc/hoshikage/hoshikage.yaml <<'EOF'\n{CONFIG}EOF")
        machine.run("systemctl", "daemon-reload")
        added = machine.run("hoshikage", "add", f"/srv/models/{gemma_path.name}", "gemma",
                            "--chat-format", "gemma", "--import", check=False)
        assert added.returncode == 0, added.stderr
        yield machine
    finally:
        machine.stop()


def service_state(machine) -> str:
    return machine.run("systemctl", "is-active", "hoshikage.service", check=False).stdout.strip()


def hoshikage_processes(machine) -> list[str]:
    return machine.run("pgrep", "-u", "hoshikage", "-a", check=False).stdout.split("\n")[:-1]


def ramdisk_mounted(machine) -> bool:
    return machine.run("findmnt", "-n", "/mnt/temp/hoshikage", check=False).returncode == 0


def openai_client(machine):
    import httpx2
    import openai

    socket_path = machine.path("/run/hoshikage/hoshikage.sock")
    return openai.OpenAI(base_url="http://hoshikage/v1", api_key="unused", max_retries=0,
                         http_client=openai.DefaultHttpx2Client(
                             transport=httpx2.HTTPTransport(uds=str(socket_path))))


def test_units_verify_clean_and_service_is_hardened(container):
    units = ["/usr/lib/systemd/system/hoshikage.socket", "/usr/lib/systemd/system/hoshikage.service",
             "/usr/lib/systemd/system/hoshikage-ramdisk.service", "/run/systemd/generator/mnt-temp-hoshikage.mount"]
    verify = container.run("systemd-analyze", "verify", *units, check=False)
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stdout + verify.stderr
    security = container.run("systemd-analyze", "security", "--no-pager", "hoshikage.service").stdout
    score = float(security.rsplit("Overall exposure level for hoshikage.service:", 1)[1].split()[0])
    assert score <= 2.0, security[-2000:]


def test_units_and_socket_activation_lifecycle(container):
    machine = container
    machine.run("systemctl", "start", "hoshikage.socket")
    assert machine.run("systemctl", "is-active", "hoshikage.socket").stdout.strip() == "active"
    assert service_state(machine) == "inactive"
    assert hoshikage_processes(machine) == [], "nothing may run before the first connection"
    socket_stat = machine.path("/run/hoshikage/hoshikage.sock").stat()
    assert oct(socket_stat.st_mode & 0o777) == "0o660"
    # Asking how it is must not wake it.
    assert "not running" in machine.run("hoshikage", "status").stdout
    assert service_state(machine) == "inactive"

    with openai_client(machine) as client:
        answer = client.chat.completions.create(  # ignore_eos: a sampled answer may end early
            model="gemma", messages=[{"role": "user", "content": "Hello"}], max_tokens=4,
            extra_body={"ignore_eos": True})
    assert answer.usage.completion_tokens == 4

    # The answer came from a process running as the unprivileged user.
    main_pid = machine.run("systemctl", "show", "-p", "MainPID", "--value", "hoshikage.service").stdout.strip()
    assert machine.run("ps", "-o", "user=", "-p", main_pid).stdout.strip() == "hoshikage"
    assert service_state(machine) == "active"
    status = machine.run("systemctl", "show", "-p", "StatusText", "--value", "hoshikage.service").stdout
    assert "gemma loaded" in status or "serving" in status or "idle, exits in" in status, status
    report = json.loads(machine.run("hoshikage", "status", "--json").stdout)
    assert [model["model"] for model in report["daemon"]["loaded_models"]] == ["gemma"]

    # The model was staged into the RAM disk, a tmpfs the daemon owns but did not mount.
    mount = json.loads(machine.run("findmnt", "-J", "-o", "FSTYPE,OPTIONS", "/mnt/temp/hoshikage").stdout)
    options = mount["filesystems"][0]["options"]
    assert mount["filesystems"][0]["fstype"] == "tmpfs"
    assert {"nosuid", "nodev", "noexec"} <= set(options.split(","))
    staged = machine.run("sh", "-c", "stat -c '%U %s' /mnt/temp/hoshikage/*.gguf").stdout.split()
    assert staged[0] == "hoshikage" and int(staged[1]) > 100 * 2**20

    # The sandbox: /etc is read-only for the daemon, even for root inside its namespace.
    probe = machine.run("nsenter", "-t", main_pid, "-m", "touch", "/etc/hoshikage/probe", check=False)
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr

    # One journal entry per request, with structured fields.
    def request_entry():
        lines = machine.run("journalctl", "-u", "hoshikage.service", "-o", "json", "--no-pager").stdout
        entries = [json.loads(line) for line in lines.splitlines() if line.strip()]
        return next((entry for entry in entries if entry.get("REQUEST_ID") and entry.get("TOKENS") == "4"), None)

    entry = wait_for(request_entry, 10, "the request's journal entry")
    assert entry["MODEL"] == "gemma" and entry["STATUS"] == "200" and int(entry["DURATION_MS"]) > 0

    # Idle: the daemon exits by itself, cleanly, and nothing of it is left.
    wait_for(lambda: service_state(machine) == "inactive", IDLE_TIMEOUT + 30, "the idle exit")
    assert hoshikage_processes(machine) == [] or all("ramdisk-hold" in p for p in hoshikage_processes(machine))
    result = machine.run("systemctl", "show", "-p", "Result", "--value", "hoshikage.service").stdout.strip()
    assert result == "success"
    journal = machine.run("journalctl", "-u", "hoshikage.service", "--no-pager").stdout
    assert "exiting: idle" in journal

    # The RAM disk outlives the daemon, then is released after GREAT_TIMEOUT without use.
    assert ramdisk_mounted(machine)
    wait_for(lambda: not ramdisk_mounted(machine), GREAT_TIMEOUT_MINUTES * 60 + 40, "the RAM disk release")

    # The next connection starts everything again.
    with openai_client(machine) as client:
        assert client.models.list().data[0].id == "gemma"
    assert service_state(machine) == "active"


def test_metrics_reach_node_exporter_and_scrapes_never_wake_the_daemon(container):
    """node_exporter's textfile collector serves the daemon's figures whether it runs or not; a scrape is
    only a read of a file, so it neither starts nor keeps alive the socket-activated daemon."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from tests.conftest import free_tcp_port

    machine = container
    # As the README tells an admin: link the figures into node_exporter's textfile directory.
    port = free_tcp_port()
    machine.run("ln", "-sf", "/var/lib/hoshikage-metrics/hoshikage.prom",
                "/var/lib/prometheus/node-exporter/hoshikage.prom")
    machine.run("sh", "-c", "echo 'ARGS=\"--web.listen-address=127.0.0.1:%d --collector.disable-defaults "
                            "--collector.textfile --collector.textfile.directory=/var/lib/prometheus/node-exporter\"'"
                            " > /etc/default/prometheus-node-exporter" % port)
    machine.run("systemctl", "unmask", "prometheus-node-exporter.service")
    machine.run("systemctl", "restart", "prometheus-node-exporter.service")

    def scrape() -> dict:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples
                if sample.name.startswith("hoshikage_")}

    wait_for(lambda: service_state(machine) == "inactive", IDLE_TIMEOUT + 30, "the idle exit")
    wait_for(lambda: scrape(), 30, "node_exporter to serve the textfile")
    for _ in range(3):
        idle = scrape()
        assert service_state(machine) == "inactive", "a scrape woke the daemon"
        assert all("ramdisk-hold" in process for process in hoshikage_processes(machine))
    # The figures outlived the daemon: what the earlier test asked is still there.
    gemma = (("model", "gemma"),)
    assert idle[("hoshikage_running", ())] == 0
    assert idle[("hoshikage_generated_tokens_total", gemma)] >= 4
    assert idle[("hoshikage_cold_starts_total", ())] >= 2  # started, exited when idle, started again
    assert idle[("hoshikage_model_loads_total", gemma)] >= 1
    assert ("hoshikage_model_loaded", gemma) not in idle
    check = machine.run("sh", "-c", "promtool check metrics < /var/lib/hoshikage-metrics/hoshikage.prom",
                        check=False)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check.stdout + check.stderr

    # A real request starts it; the next scrape sees it running, with the start counted.
    with openai_client(machine) as client:
        client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert service_state(machine) == "active"
    woken = scrape()  # written before READY=1
    assert woken[("hoshikage_running", ())] == 1
    assert woken[("hoshikage_cold_starts_total", ())] == idle[("hoshikage_cold_starts_total", ())] + 1
    # Loaded models are gauges of the moment, in the next periodic write.
    wait_for(lambda: scrape().get(("hoshikage_model_loaded", gemma)) == 1, 40, "the loaded model in the figures")
