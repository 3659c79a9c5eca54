"""The hoshikage command line, run as a user would run it."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys

from tests.conftest import REPO, free_tcp_port, register, write_tiny_gguf


def hoshikage(state_dir, *args, env=None):
    import os

    return subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(state_dir), *args],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})})


def test_add_list_show_remove(tmp_path, gemma_path):
    added = hoshikage(tmp_path, "add", str(gemma_path), "gem", "--ctx", "1024", "--chat-format", "gemma")
    assert added.returncode == 0, added.stderr
    assert "gemma3" in added.stderr and "Q4_K_M" in added.stderr
    listing = hoshikage(tmp_path, "list")
    assert "gem" in listing.stdout and "268M" in listing.stdout and "1024" in listing.stdout
    shown = hoshikage(tmp_path, "show", "gem")
    assert "Q4_K_M" in shown.stdout and "gemma" in shown.stdout
    registry = json.loads((tmp_path / "models.json").read_text())
    assert registry["models"]["gem"]["gguf"]["architecture"] == "gemma3"
    assert hoshikage(tmp_path, "remove", "gem").returncode == 0
    assert "no models registered" in hoshikage(tmp_path, "list").stdout


def test_list_never_cuts_an_alias_on_an_80_column_terminal(tmp_path, gemma_path):
    alias = "gemma3-27b-instruct-q4_k_m-long"
    assert hoshikage(tmp_path, "add", str(gemma_path), alias).returncode == 0
    listing = hoshikage(tmp_path, "list", env={"COLUMNS": "80"}).stdout
    assert alias in listing and max(len(line) for line in listing.splitlines()) <= 80


def test_non_gguf_is_a_clear_error_and_registry_untouched(tmp_path, gemma_path):
    assert hoshikage(tmp_path, "add", str(gemma_path), "good").returncode == 0
    before = (tmp_path / "models.json").read_bytes()
    not_gguf = tmp_path / "notes.txt"
    not_gguf.write_text("just text, not a model")
    for path in (not_gguf, tmp_path / "missing.gguf"):
        result = hoshikage(tmp_path, "add", str(path), "bad")
        assert result.returncode == 1
        assert result.stderr.startswith("hoshikage: ") and len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr
    assert (tmp_path / "models.json").read_bytes() == before


def test_unknown_alias_and_bad_chat_format(tmp_path, tiny_gguf):
    assert "no model is registered as 'ghost'" in hoshikage(tmp_path, "show", "ghost").stderr
    assert hoshikage(tmp_path, "remove", "ghost").returncode == 1
    result = hoshikage(tmp_path, "add", str(tiny_gguf), "t", "--chat-format", "klingon")
    assert result.returncode == 1 and "unknown chat format" in result.stderr


def test_concurrent_adds_all_land(tmp_path):
    models = [write_tiny_gguf(tmp_path / f"m{n}.gguf") for n in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda n: hoshikage(tmp_path, "add", str(models[n]), f"m{n}"), range(6)))
    assert all(result.returncode == 0 for result in results), [r.stderr for r in results]
    registry = json.loads((tmp_path / "models.json").read_text())
    assert sorted(registry["models"]) == [f"m{n}" for n in range(6)]


def test_import_copies_into_state_dir_and_remove_deletes_the_copy(tmp_path, tiny_gguf):
    state = tmp_path / "state"
    result = hoshikage(state, "add", str(tiny_gguf), "t", "--import")
    assert result.returncode == 0, result.stderr
    copy = state / "models" / "t.gguf"  # named after the alias: two imports never collide
    assert copy.read_bytes() == tiny_gguf.read_bytes()
    assert json.loads((state / "models.json").read_text())["models"]["t"]["path"] == str(copy)
    assert hoshikage(state, "remove", "t").returncode == 0
    assert not copy.exists() and tiny_gguf.exists()


def test_warns_when_the_service_cannot_read_the_path(tmp_path, tiny_gguf):
    result = hoshikage(tmp_path, "add", str(tiny_gguf), "t")  # pytest's tmp_path is under /tmp
    assert "use --import" in result.stderr


def test_config_error_is_one_line_and_exit_2(tmp_path):
    result = hoshikage(tmp_path, "list", env={"IDLE_TIMEOUT_SECONDS": "soon"})
    assert result.returncode == 2
    assert result.stderr.strip() == ("hoshikage: config error: idle_timeout_seconds: must be an integer "
                                     "(got 'soon' from environment IDLE_TIMEOUT_SECONDS)")
    served = hoshikage(tmp_path, "serve", env={"HOSHIKAGE_LISTEN": "nowhere"})
    assert served.returncode == 2 and "listen:" in served.stderr


def test_two_imports_of_files_with_the_same_name_do_not_collide(tmp_path):
    first = write_tiny_gguf((tmp_path / "one").mkdir() or tmp_path / "one" / "model.gguf", architecture="llama")
    second = write_tiny_gguf((tmp_path / "two").mkdir() or tmp_path / "two" / "model.gguf", architecture="qwen2")
    state = tmp_path / "state"
    assert hoshikage(state, "add", str(first), "a", "--import").returncode == 0
    assert hoshikage(state, "add", str(second), "b", "--import").returncode == 0
    models = json.loads((state / "models.json").read_text())["models"]
    assert models["a"]["path"] != models["b"]["path"]
    assert (state / "models" / "a.gguf").read_bytes() == first.read_bytes()
    assert (state / "models" / "b.gguf").read_bytes() == second.read_bytes()


def test_an_address_that_cannot_be_listened_on_is_one_line_and_exit_2(tmp_path, daemon):
    """A port in use, a live unix socket, a missing directory: the address and the cause, no traceback."""
    cases = {
        f"tcp:127.0.0.1:{daemon.port}": "already in use",
        f"unix:{daemon.unix_path}": "already in use",  # a live socket is never taken over
        f"unix:{tmp_path}/no/such/dir/h.sock": "its directory does not exist",
        "tcp:192.0.2.1:8000": "no such address",  # TEST-NET-1: never one of this machine's addresses
    }
    for address, cause in cases.items():
        result = hoshikage(tmp_path, "serve", "--listen", address, "--no-embedded-model")
        assert result.returncode == 2, result.stderr
        last_line = result.stderr.strip().splitlines()[-1]  # after the start-up log lines
        assert last_line.startswith(f"hoshikage: cannot listen on {address}: ") and cause in last_line, last_line
        assert "Traceback" not in result.stderr
    # The daemon whose addresses they were still serves.
    assert daemon.process.poll() is None


def test_a_stale_unix_socket_left_by_a_crash_is_replaced(tmp_path):
    import socket

    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left_over:
        left_over.bind(str(stale))  # bound, never listening: what a killed process leaves behind
    from hoshikage.daemon import _bind_unix

    replaced = _bind_unix(stale)
    try:
        assert replaced.getsockname() == str(stale)
    finally:
        replaced.close()


def test_a_daemon_started_by_hand_in_a_terminal_says_what_to_try(tmp_path, gemma_path):
    """Under a pseudo-terminal, as from `packaging/dev.sh serve`: the first request to make, with its URL."""
    import pty
    import select

    register(tmp_path, gemma_path, "gemma")
    port = free_tcp_port()
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "hoshikage", "--state-dir", str(tmp_path), "serve",
                                "--no-embedded-model", "--listen", f"tcp:127.0.0.1:{port}"],
                               stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, cwd=REPO)
    os.close(terminal)
    seen = b""
    try:
        while b"try: curl" not in seen or not seen.endswith(b"\n"):
            ready, _, _ = select.select([controller], [], [], 60)
            assert ready, seen.decode(errors="replace")  # nothing for a minute: it never said it
            seen += os.read(controller, 4096)
    finally:
        process.terminate()
        process.wait(timeout=30)
        os.close(controller)
    hint = next(line for line in seen.decode().splitlines() if "try: curl" in line)
    assert f"curl http://127.0.0.1:{port}/v1/chat/completions" in hint and '"model": "gemma"' in hint
