"""The .deb on a clean, booted Debian 12 with no network: install, use, upgrade, remove, purge.

The package is built from this tree (packaging/build-deb.sh, in a copy so the
checkout stays clean); the OpenAI SDK runs inside the container from the test
environment's site-packages (same Debian Python), as a user in group
hoshikage and as one outside it.
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
from tests.system.test_systemd_container import pytestmark, wait_for  # noqa: F401 - same requirements

IDLE_TIMEOUT = 5
CONFIG_EDIT = f"\n# edited by the admin\nidle_timeout_seconds: {IDLE_TIMEOUT}\ngreat_timeout: 0.1\nembedded_model: false\n"
SITE_PACKAGES = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"

CLIENT = """
import json, sys, openai, httpx2
how = sys.argv[1]
if how == "unix":
    client = openai.OpenAI(base_url="http://hoshikage/v1", api_key="unused", max_retries=0,
        http_client=openai.DefaultHttpx2Client(transport=httpx2.HTTPTransport(uds="/run/hoshikage/hoshikage.sock")))
else:
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused", max_retries=0)
try:
    # ignore_eos: a sampled answer may end after one token, which would say nothing about the daemon.
    answer = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                            extra_body={"ignore_eos": True})
    print(json.dumps({"tokens": answer.usage.completion_tokens}))
except openai.APIConnectionError as error:
    print(json.dumps({"refused": repr(error.__cause__)}))
except openai.PermissionDeniedError as error:  # TCP: the daemon refuses whom the socket's group keeps out
    print(json.dumps({"denied": error.code}))
"""

# One chat request over the unix socket: prints [status, error or null].
RAW_CLIENT = """
import json, sys, httpx2
with httpx2.Client(transport=httpx2.HTTPTransport(uds="/run/hoshikage/hoshikage.sock"), timeout=120) as http:
    response = http.post("http://hoshikage/v1/chat/completions", json={
        "model": sys.argv[1], "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
print(json.dumps([response.status_code, response.json().get("error")]))
"""


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    """Build the package in a copy of the working tree; HOSHIKAGE_DEB names a prebuilt one."""
    if os.environ.get("HOSHIKAGE_DEB"):
        return Path(os.environ["HOSHIKAGE_DEB"])
    tree = tmp_path_factory.mktemp("deb-build") / "hoshikage"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        source = REPO / name
        if source.is_file() or source.is_symlink():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name, follow_symlinks=False)
    build = subprocess.run(["packaging/build-deb.sh"], cwd=tree, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return tree / build.stdout.strip().splitlines()[-1]


def test_lintian_reports_no_errors(deb):
    if shutil.which("lintian") is None and os.environ.get("CI") != "true":
        pytest.skip("needs lintian")
    report = subprocess.run(["lintian", str(deb)], capture_output=True, text=True).stdout
    errors = [line for line in report.splitlines() if line.startswith("E:")]
    assert errors == [], "\n".join(errors)


def repacked_as_upgrade(deb: Path, directory: Path) -> Path:
    """The same package with a higher version, to exercise the upgrade path of the maintainer scripts."""
    unpacked = directory / "unpacked"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(unpacked)], check=True)
    control = unpacked / "DEBIAN" / "control"
    control.write_text(control.read_text().replace("Version: 0.1.0", "Version: 0.1.0+upgrade1"))
    upgraded = directory / "hoshikage_0.1.0+upgrade1.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(unpacked), str(upgraded)], check=True,
                   capture_output=True)
    return upgraded


def as_user(machine, user: str, how: str) -> dict:
    result = machine.run("runuser", "-u", user, "--", "env", "PYTHONPATH=/sdk", "/usr/bin/python3", "-c",
                         CLIENT, how, check=False, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def hoshikage_processes(machine) -> str:
    return machine.run("pgrep", "-u", "hoshikage", "-a", check=False).stdout


def test_install_use_upgrade_remove_purge(deb, gemma_path, tmp_path):
    from tests.system.container import Container

    upgrade = repacked_as_upgrade(deb, tmp_path)
    machine = Container(binds={deb.parent: "/debs", upgrade.parent: "/upgrade", gemma_path.parent: "/srv/models",
                               SITE_PACKAGES: "/sdk"}, private_network=True)
    try:
        # Install with no network: everything the package needs is in it or in Debian's base.
        started = time.monotonic()
        install = machine.run("apt-get", "install", "-y", f"/debs/{deb.name}", check=False)
        install_seconds = time.monotonic() - started
        assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
        print(f"\ninstall took {install_seconds:.1f} s; package is {deb.stat().st_size / 2**20:.1f} MiB")

        # The socket is enabled and listening; the service is neither enabled nor running.
        assert machine.run("systemctl", "is-enabled", "hoshikage.socket").stdout.strip() == "enabled"
        assert machine.run("systemctl", "is-active", "hoshikage.socket").stdout.strip() == "active"
        assert machine.run("systemctl", "is-enabled", "hoshikage.service", check=False).stdout.strip() != "enabled"
        assert hoshikage_processes(machine) == ""
        assert machine.run("man", "-w", "hoshikage").stdout.strip().endswith("hoshikage.1.gz")
        assert machine.run("man", "-w", "5", "hoshikage.yaml").stdout.strip().endswith("hoshikage.yaml.5.gz")

        machine.run("sh", "-c", f"printf '{CONFIG_EDIT}' >> /etc/hoshikage/hoshikage.yaml")
        machine.run("systemctl", "daemon-reload")
        added = machine.run("hoshikage", "add", f"/srv/models/{gemma_path.name}", "gemma", "--chat-format", "gemma",
                            "--import", check=False)
        assert added.returncode == 0, added.stderr
        machine.run("useradd", "--create-home", "--groups", "hoshikage", "alice")
        machine.run("useradd", "--create-home", "bob")

        assert as_user(machine, "alice", "unix") == {"tokens": 3}
        assert as_user(machine, "alice", "tcp") == {"tokens": 3}
        refused = as_user(machine, "bob", "unix")
        assert "Permission denied" in refused.get("refused", ""), refused
        # Outside the group on TCP too: the daemon tells bob by his uid and refuses him as the socket does.
        assert as_user(machine, "bob", "tcp") == {"denied": "permission_denied"}

        # A file the service cannot see is refused when it is added, with the fix...
        machine.run("cp", f"/srv/models/{gemma_path.name}", "/root/mine.gguf")
        hidden = machine.run("hoshikage", "add", "/root/mine.gguf", "mine", check=False)
        assert hidden.returncode == 1 and "--import" in hidden.stderr and "Traceback" not in hidden.stderr, hidden
        # ...and one that became unreadable after it was added answers a 503 that names model, cause and fix.
        machine.run("cp", f"/srv/models/{gemma_path.name}", "/srv/private.gguf")
        machine.run("chmod", "644", "/srv/private.gguf")
        machine.run("hoshikage", "add", "/srv/private.gguf", "private", "--chat-format", "gemma")
        machine.run("chmod", "600", "/srv/private.gguf")
        unreadable = machine.run("runuser", "-u", "alice", "--", "env", "PYTHONPATH=/sdk", "/usr/bin/python3", "-c",
                                 RAW_CLIENT, "private", check=False, timeout=180)
        status, error = json.loads(unreadable.stdout.strip().splitlines()[-1])
        assert status == 503 and error["code"] == "model_load_failed", (status, error)
        assert "'private'" in error["message"] and "permission denied" in error["message"], error
        assert "hoshikage add --import" in error["message"], error

        journal = machine.run("journalctl", "-u", "hoshikage.service", "-o", "json", "--no-pager").stdout
        requests = [entry for entry in map(json.loads, journal.splitlines())
                    if entry.get("REQUEST_ID") and entry.get("MODEL") == "gemma"]
        assert len(requests) >= 2, journal[-3000:]

        wait_for(lambda: hoshikage_processes(machine) == "", IDLE_TIMEOUT + 40, "no hoshikage process after idle")

        # Upgrade keeps the registry, the admin's config edit and the imported model.
        upgraded = machine.run("apt-get", "install", "-y", f"/upgrade/{upgrade.name}", check=False)
        assert upgraded.returncode == 0, upgraded.stdout[-2000:] + upgraded.stderr[-2000:]
        assert "# edited by the admin" in machine.run("cat", "/etc/hoshikage/hoshikage.yaml").stdout
        assert "gemma" in json.loads(machine.run("cat", "/var/lib/hoshikage/models.json").stdout)["models"]
        assert as_user(machine, "alice", "unix") == {"tokens": 3}

        # remove: units stopped, data and user kept.
        assert machine.run("apt-get", "remove", "-y", "hoshikage", check=False).returncode == 0
        assert machine.run("systemctl", "is-active", "hoshikage.socket", check=False).stdout.strip() != "active"
        assert hoshikage_processes(machine) == ""
        assert machine.run("test", "-f", "/var/lib/hoshikage/models.json", check=False).returncode == 0
        assert machine.run("getent", "passwd", "hoshikage", check=False).returncode == 0

        # purge: data and user gone.
        assert machine.run("apt-get", "purge", "-y", "hoshikage", check=False).returncode == 0
        assert machine.run("test", "-e", "/var/lib/hoshikage", check=False).returncode != 0
        assert machine.run("getent", "passwd", "hoshikage", check=False).returncode != 0
        assert machine.run("test", "-e", "/etc/hoshikage/hoshikage.yaml", check=False).returncode != 0
    finally:
        machine.stop()


# A Responses chain over the unix socket: "start" stores a first turn and prints its id; "continue ID" asks
# the next turn on top of it and prints the status and what memory gave the model (or the error).
MEMORY_CLIENT = """
import json, sys, httpx2
with httpx2.Client(transport=httpx2.HTTPTransport(uds="/run/hoshikage/hoshikage.sock"), timeout=300) as http:
    if sys.argv[1] == "embed":  # memory's sentence model, through torch and sentence-transformers
        response = http.post("http://hoshikage/v1/embeddings", json={"model": "embedding", "input": "hello"})
        print(json.dumps([response.status_code, len(response.json()["data"][0]["embedding"])
                          if response.status_code == 200 else response.json()["error"]]))
    elif sys.argv[1] == "start":
        response = http.post("http://hoshikage/v1/responses", json={
            "model": "gemma", "input": "My cat is called Tamagawa Mochi.", "max_output_tokens": 3})
        print(json.dumps([response.status_code, response.json().get("id")]))
    else:
        response = http.post("http://hoshikage/v1/responses", json={
            "model": "gemma", "previous_response_id": sys.argv[2], "input": "What is my cat called?",
            "max_output_tokens": 3})
        body = response.json()
        if response.status_code != 200:
            print(json.dumps([response.status_code, body["error"]]))
        else:
            context = http.get(f"http://hoshikage/hoshikage/memory/{body['id']}/context").json()
            print(json.dumps([response.status_code, json.dumps(context, ensure_ascii=False)]))
"""


def memory_client(machine, *args: str) -> list:
    result = machine.run("runuser", "-u", "alice", "--", "env", "PYTHONPATH=/sdk", "/usr/bin/python3", "-c",
                         MEMORY_CLIENT, *args, check=False, timeout=400)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_memory_package_gives_apt_users_memory_and_leaves_plain_chat_when_removed(deb, gemma_path,
                                                                                     embedding_model_dir):
    from tests.system.container import Container

    memory_deb = next(deb.parent.glob("hoshikage-memory_*.deb"))
    print(f"\nhoshikage is {deb.stat().st_size / 2**20:.1f} MiB, hoshikage-memory "
          f"{memory_deb.stat().st_size / 2**20:.1f} MiB")
    machine = Container(binds={deb.parent: "/debs", gemma_path.parent: "/srv/models", SITE_PACKAGES: "/sdk",
                               embedding_model_dir: "/srv/embedding"}, private_network=True)
    try:
        install = machine.run("apt-get", "install", "-y", f"/debs/{deb.name}", f"/debs/{memory_deb.name}",
                              check=False, timeout=900)
        assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
        machine.run("sh", "-c", f"printf '{CONFIG_EDIT}sentence_bert_model: /srv/embedding\\n' "
                                ">> /etc/hoshikage/hoshikage.yaml")
        assert machine.run("hoshikage", "add", f"/srv/models/{gemma_path.name}", "gemma", "--chat-format", "gemma",
                           "--import", check=False).returncode == 0
        machine.run("useradd", "--create-home", "--groups", "hoshikage", "alice")

        machine.run("useradd", "--create-home", "--groups", "hoshikage", "carol")
        machine.run("useradd", "--create-home", "bob")

        status, first = memory_client(machine, "start")
        assert status == 200 and first.startswith("resp_"), (status, first)
        _only_alice_and_root_see_it(machine, first)
        # The daemon exits when idle; the conversation is on disk and the chain goes on in the next one.
        wait_for(lambda: hoshikage_processes(machine) == "", IDLE_TIMEOUT + 60, "the idle exit")
        status, context = memory_client(machine, "continue", first)
        assert status == 200 and "Tamagawa Mochi" in context, (status, context)
        assert memory_client(machine, "embed") == [200, 384]  # the sentence model at /srv/embedding
        _named_keys_own_their_conversations(machine)

        # Without the memory package: plain chat as before, memory a clear 503.
        assert machine.run("apt-get", "remove", "-y", "hoshikage-memory", check=False).returncode == 0
        assert machine.run("test", "-e", "/usr/lib/hoshikage-memory", check=False).returncode != 0
        wait_for(lambda: hoshikage_processes(machine) == "", IDLE_TIMEOUT + 60, "the idle exit")
        assert as_user(machine, "alice", "unix") == {"tokens": 3}
        status, error = memory_client(machine, "continue", first)
        assert status == 503 and error["code"] == "memory_unavailable", (status, error)
        assert "hoshikage-memory" in error["message"], error
        status, error = memory_client(machine, "embed")
        assert status == 404, (status, error)  # no sentence model without sentence-transformers
    finally:
        machine.stop()


# One request as USER: prints [status, error code or null]; a refused connection prints ["refused", errno].
LOOK_CLIENT = """
import json, sys, httpx2
transport = httpx2.HTTPTransport(uds="/run/hoshikage/hoshikage.sock") if sys.argv[1] == "unix" else None
base = "http://hoshikage" if sys.argv[1] == "unix" else "http://127.0.0.1:8000"
headers = {"Authorization": "Bearer " + sys.argv[4]} if len(sys.argv) > 4 else {}
try:
    with httpx2.Client(transport=transport, timeout=300, headers=headers) as http:
        response = http.request(sys.argv[2], base + sys.argv[3])
    body = response.json()
    print(json.dumps([response.status_code, (body.get("error") or {}).get("code") if isinstance(body, dict) else None,
                      body]))
except httpx2.ConnectError as error:
    print(json.dumps(["refused", str(error), None]))
"""


def look(machine, user: str, how: str, method: str, path: str, *key: str) -> list:
    result = machine.run("runuser", "-u", user, "--", "env", "PYTHONPATH=/sdk", "/usr/bin/python3", "-c",
                         LOOK_CLIENT, how, method, path, *key, check=False, timeout=400)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _only_alice_and_root_see_it(machine, response_id: str) -> None:
    """Alice's stored chain is hers: 404 for carol (same group) on every transport, hidden from her `hoshikage
    memory list`, shown to root's with alice as its owner; bob (outside the group) is refused everywhere."""
    conversation = look(machine, "alice", "unix", "GET", f"/hoshikage/memory/{response_id}")[2]["id"]
    for how in ("unix", "tcp"):
        assert look(machine, "alice", how, "GET", f"/v1/responses/{response_id}")[0] == 200
        for path in (f"/v1/responses/{response_id}", f"/v1/conversations/{conversation}",
                     f"/v1/conversations/{conversation}/items", f"/hoshikage/memory/{conversation}/context"):
            assert look(machine, "carol", how, "GET", path)[:2] == [404, "not_found"], (how, path)
        assert look(machine, "carol", how, "DELETE", f"/v1/conversations/{conversation}")[:2] == [404, "not_found"]
    assert look(machine, "bob", "unix", "GET", "/v1/models")[0] == "refused"
    assert look(machine, "bob", "tcp", "GET", "/v1/models")[:2] == [403, "permission_denied"]
    listed = {user: machine.run("runuser", "-u", user, "--", "hoshikage", "memory", "list", check=False)
              for user in ("alice", "carol", "bob")}
    listed["root"] = machine.run("hoshikage", "memory", "list", check=False)
    for user in ("alice", "carol", "root"):
        assert listed[user].returncode == 0, (user, listed[user].stderr)
    assert conversation in listed["alice"].stdout and conversation in listed["root"].stdout
    assert conversation not in listed["carol"].stdout
    assert "alice" in listed["root"].stdout  # its owner, by name
    assert listed["bob"].returncode != 0 and "Traceback" not in listed["bob"].stderr, listed["bob"]
    shown = machine.run("runuser", "-u", "carol", "--", "hoshikage", "memory", "show", conversation, check=False)
    assert shown.returncode != 0 and "Tamagawa" not in shown.stdout, shown
    journal = machine.run("journalctl", "-u", "hoshikage.service", "-o", "json", "--no-pager").stdout
    uid = machine.run("id", "-u", "carol").stdout.strip()
    assert any(json.loads(line).get("IDENTITY") == f"uid:{uid}" for line in journal.splitlines()), journal[-2000:]


def _named_keys_own_their_conversations(machine) -> None:
    """With api_keys set, TCP needs a key (even for alice), and each key's name owns what it creates."""
    machine.run("sh", "-c", "mkdir -p /etc/hoshikage/conf.d && printf 'api_keys:\n  dana: dana-key-0001\n"
                            "  erin: erin-key-0002\n' > /etc/hoshikage/conf.d/keys.yaml")
    wait_for(lambda: hoshikage_processes(machine) == "", IDLE_TIMEOUT + 60, "the idle exit")  # read at next start
    assert look(machine, "alice", "tcp", "GET", "/v1/models")[:2] == [401, "invalid_api_key"]
    created = look(machine, "alice", "tcp", "POST", "/v1/conversations", "dana-key-0001")
    assert created[0] == 200, created
    conversation = created[2]["id"]
    assert look(machine, "alice", "tcp", "GET", f"/v1/conversations/{conversation}", "dana-key-0001")[0] == 200
    assert look(machine, "alice", "tcp", "GET", f"/v1/conversations/{conversation}",
                "erin-key-0002")[:2] == [404, "not_found"]
    journal = machine.run("journalctl", "-u", "hoshikage.service", "-o", "json", "--no-pager").stdout
    assert any(json.loads(line).get("IDENTITY") == "key:dana" for line in journal.splitlines())
    assert "dana-key-0001" not in journal


# An x86-64-v2 CPU: SSE4.2, no AVX, AVX2 or AVX-512 (numpy's wheels need v2 at least).
OLD_CPU = "Nehalem"


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None and os.environ.get("CI") != "true",
                    reason="needs qemu-x86_64 (Debian's qemu-user)")
def test_the_package_runs_on_a_cpu_older_than_the_build_machine(deb, gemma_path, tmp_path):
    """The package's llama.cpp is portable: under qemu emulating a CPU without AVX, its daemon answers."""
    from tests.conftest import Daemon, register

    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    python = root / "usr" / "lib" / "hoshikage" / "bin" / "python3"  # the package's virtualenv
    if not python.exists():  # the package's postinst points its interpreter links at /usr/bin when installed
        python.unlink(missing_ok=True)
        python.symlink_to("/usr/bin/python3")
    # Byte code first, natively, as the package's postinst does: compiled under emulation it takes minutes.
    subprocess.run([str(python), "-m", "compileall", "-q", "-j", "0", str(root / "usr" / "lib" / "hoshikage")],
                   check=True, capture_output=True)
    state = tmp_path / "state"
    state.mkdir()
    register(state, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "256")
    # -P: the package's own hoshikage and llama.cpp, not this checkout's.
    daemon = Daemon(state, {"HOSHIKAGE_THREADS": "2", "HOSHIKAGE_SLOTS": "1"}, "--no-embedded-model",
                    launcher=("-P", "-m", "hoshikage"), python=("qemu-x86_64", "-cpu", OLD_CPU, str(python)),
                    ready_timeout=600)  # emulated: ~10x slower than the machine itself
    try:
        import httpx

        with httpx.Client(base_url=daemon.base_url, timeout=600) as http:
            answer = http.post("/v1/chat/completions", json={
                "model": "gemma", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
            assert answer.status_code == 200, answer.text
            assert answer.json()["usage"]["completion_tokens"] >= 1
            cpu = http.get("/v1/status").json()["cpu"]
    finally:
        daemon.stop()
    assert cpu["variant"] == "sse42", cpu  # the best of the package's variants that this CPU runs
    assert "AVX" not in cpu["features"] and cpu["features"].get("SSSE3") == "1", cpu
    assert "llama.cpp CPU backend: sse42" in daemon.log_text()
