"""One model over several hosts (issue 27): its layers on two `hoshikage rpc-server` processes on loopback."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys

import openai
import pytest

from hoshikage.engine import rpc
from tests.conftest import REPO, Daemon, free_tcp_port, register
from tests.scaling import RpcServer

PROMPT = [{"role": "user", "content": "Name three colours and say why the sky is blue."}]


@pytest.fixture(scope="module")
def rpc_fleet(tmp_path_factory, gemma_path):
    """Two rpc-servers and a daemon with the model registered four ways: local, twice over both servers, and over
    a server that does not exist."""
    root = tmp_path_factory.mktemp("rpc")
    servers = [RpcServer(root / f"rpc-{index}.log") for index in range(2)]
    nowhere = f"127.0.0.1:{free_tcp_port()}"
    state = root / "state"
    register(state, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "2048")
    register(state, gemma_path, "gemma-rpc", "--chat-format", "gemma", "--ctx", "2048",
             "--rpc", ",".join(server.endpoint for server in servers))
    register(state, gemma_path, "gemma-rpc-again", "--chat-format", "gemma", "--ctx", "2048",
             "--rpc", ",".join(server.endpoint for server in servers))
    register(state, gemma_path, "gemma-nowhere", "--chat-format", "gemma", "--ctx", "2048", "--rpc", nowhere)
    daemon = Daemon(state, {"HOSHIKAGE_SLOTS": "1"}, "--no-embedded-model")
    yield {"servers": servers, "daemon": daemon, "nowhere": nowhere}
    with contextlib.suppress(Exception):
        daemon.stop()
    for server in servers:
        server.stop()


def _answer(client: openai.OpenAI, model: str) -> str:
    return client.chat.completions.create(model=model, messages=PROMPT, max_tokens=32, temperature=0,
                                          seed=1).choices[0].message.content


def test_a_model_spread_over_two_rpc_servers_answers_as_the_local_one(rpc_fleet):
    daemon, servers = rpc_fleet["daemon"], rpc_fleet["servers"]
    before = [server.resident_bytes() for server in servers]
    with openai.OpenAI(base_url=f"{daemon.base_url}/v1", api_key="unused", max_retries=0) as client:
        remote = _answer(client, "gemma-rpc")
        local = _answer(client, "gemma")
        assert remote == local and remote  # greedy: the same tokens, wherever the layers ran
        status = client.get("/status", cast_to=object)
    grown = [server.resident_bytes() - size for server, size in zip(servers, before)]
    assert all(growth > 32 * 2**20 for growth in grown), grown  # each holds a share of the 241 MiB of weights
    placed = {model["model"]: model for model in status["loaded_models"]}
    endpoints = [server.endpoint for server in servers]
    assert placed["gemma-rpc"]["rpc_servers"] == endpoints
    assert placed["gemma-rpc"]["device"] == "rpc " + ", ".join(endpoints)
    assert placed["gemma"]["rpc_servers"] == [] and placed["gemma"]["device"] == "cpu"  # not put on the servers
    assert not [device for device in status["devices"] if device["name"].startswith("RPC")]
    shown = subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(daemon.state_dir), "status"],
                           capture_output=True, text=True, cwd=REPO, check=True,
                           env={**os.environ, "HOSHIKAGE_LISTEN": f"tcp:127.0.0.1:{daemon.port}", "COLUMNS": "200"})
    assert f"its layers on the RPC servers {', '.join(endpoints)}" in shown.stdout, shown.stdout


def test_a_second_model_on_the_same_servers_loads_beside_the_first(rpc_fleet):
    """The servers already serve this daemon (the first model): it is not taken for another daemon keeping them busy."""
    with openai.OpenAI(base_url=f"{rpc_fleet['daemon'].base_url}/v1", api_key="unused", max_retries=0) as client:
        first = _answer(client, "gemma-rpc")
        assert _answer(client, "gemma-rpc-again") == first
        loaded = {model["model"] for model in client.get("/status", cast_to=object)["loaded_models"]}
    assert {"gemma-rpc", "gemma-rpc-again"} <= loaded


def test_an_unreachable_rpc_server_is_a_503_naming_it(rpc_fleet):
    daemon = rpc_fleet["daemon"]
    with openai.OpenAI(base_url=f"{daemon.base_url}/v1", api_key="unused", max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as refused:
            _answer(client, "gemma-nowhere")
        assert refused.value.status_code == 503
        assert refused.value.body["code"] == "model_load_failed"
        assert rpc_fleet["nowhere"] in refused.value.body["message"]
        assert "hoshikage rpc-server" in refused.value.body["message"]
        assert _answer(client, "gemma")  # the daemon is unharmed


def test_show_names_the_servers(rpc_fleet):
    shown = subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(rpc_fleet["daemon"].state_dir),
                            "show", "gemma-rpc"], capture_output=True, text=True, cwd=REPO, check=True,
                           env={**os.environ, "COLUMNS": "200"})
    assert ", ".join(server.endpoint for server in rpc_fleet["servers"]) + " (every layer)" in shown.stdout


def test_a_server_busy_with_another_client_is_a_503_in_seconds_not_a_wait_forever(rpc_fleet, tmp_path, gemma_path):
    busy = RpcServer(tmp_path / "busy.log")
    try:
        with socket.create_connection(("127.0.0.1", busy.port)) as other_client:  # greeted: the server is ours now
            other_client.sendall(bytes([rpc.HELLO]) + struct.pack("<Q", rpc.CAPS_SIZE) + bytes(rpc.CAPS_SIZE))
            assert len(other_client.recv(8 + rpc.HELLO_ANSWER_SIZE, socket.MSG_WAITALL)) == 8 + rpc.HELLO_ANSWER_SIZE
            register(rpc_fleet["daemon"].state_dir, gemma_path, "gemma-busy", "--chat-format", "gemma", "--ctx",
                     "2048", "--rpc", busy.endpoint)
            with openai.OpenAI(base_url=f"{rpc_fleet['daemon'].base_url}/v1", api_key="unused", max_retries=0,
                               timeout=60) as client:
                with pytest.raises(openai.APIStatusError) as refused:
                    _answer(client, "gemma-busy")
            assert refused.value.status_code == 503
            assert busy.endpoint in refused.value.body["message"] and "another" in refused.value.body["message"]
    finally:
        busy.stop()


def test_add_refuses_a_server_that_is_not_host_and_port(tmp_path, gemma_path):
    added = subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(tmp_path), "add", str(gemma_path),
                            "gemma-bad", "--rpc", "127.0.0.1"], capture_output=True, text=True, cwd=REPO)
    assert added.returncode != 0 and "is not HOST:PORT" in added.stderr


def test_rpc_server_is_listening_only_where_asked(rpc_fleet):
    for server in rpc_fleet["servers"]:
        with socket.socket() as probe:  # nothing answers on another address of this host
            assert probe.connect_ex(("127.0.0.2", server.port)) != 0
