"""The daemon never reaches for the network (issue 21): through the whole Responses and Conversations surface,
no connection and no name lookup leave this machine.

ChromaDB embeds documents it is given without vectors with a default model it downloads first; a metadata
update once did exactly that. Here the daemon runs with an audit hook (a sitecustomize on its PYTHONPATH)
that records and *blocks*, before the system call, every socket.connect and getaddrinfo aimed anywhere but
loopback or a unix socket; the surface is then driven through the OpenAI SDK.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import openai
import pytest

from tests.conftest import Daemon, register

AUDIT_HOOK = '''
import ipaddress, os, sys

_LOG = os.environ["HOSHIKAGE_TEST_NETWORK_LOG"]


def _loopback(host):
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _audit(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple) and not _loopback(args[1][0]):
        target = repr(args[1])
    elif event == "socket.getaddrinfo" and not _loopback(args[0]):
        target = repr(args[0])
    else:
        return
    with open(_LOG, "a") as log:
        log.write(f"{event} {target}\\n")
    raise PermissionError(f"test audit hook: no network ({event} {target})")


sys.addaudithook(_audit)
'''


@pytest.fixture(scope="module")
def audited(tmp_path_factory, gemma_path, embedding_model_dir):
    hook_dir = tmp_path_factory.mktemp("audit-hook")
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    log = hook_dir / "network.log"
    log.touch()
    state = tmp_path_factory.mktemp("no-network-state")
    register(state, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "1024")
    env = {"PYTHONPATH": str(hook_dir), "HOSHIKAGE_TEST_NETWORK_LOG": str(log),
           "SENTENCE_BERT_MODEL": str(embedding_model_dir), "HOSHIKAGE_SENTENCE_MODEL_ALIAS": "sentences"}
    daemon = Daemon(state, env, "--no-embedded-model")
    yield daemon, log, env
    daemon.stop()


def test_the_hook_blocks_and_records_what_leaves_the_machine(audited):
    _, log, env = audited
    # A documentation-range address (RFC 5737): the hook refuses it before any packet is sent.
    probe = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('192.0.2.1', 9), 1)"],
                           env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "test audit hook: no network" in probe.stderr
    assert "192.0.2.1" in log.read_text()
    log.write_text("")


def test_responses_and_conversations_make_no_outbound_connection(audited):
    daemon, log, _ = audited
    with openai.OpenAI(base_url=f"{daemon.base_url}/v1", api_key="unused", max_retries=0) as client:
        conversation = client.conversations.create(metadata={"topic": "lighthouses"},
                                                   items=[{"role": "user", "content": "I keep a lighthouse."}])
        client.conversations.update(conversation.id, metadata={"topic": "harbours"})
        client.conversations.items.create(conversation.id, items=[
            {"type": "message", "role": "user", "content": "It stands on a rock."}])
        assert len(client.conversations.items.list(conversation.id).data) == 2
        first = client.responses.create(model="gemma", input="Where is it?", conversation=conversation.id,
                                        max_output_tokens=3)
        events = list(client.responses.create(model="gemma", input="And the keeper?",
                                              previous_response_id=first.id, max_output_tokens=3, stream=True))
        assert events[-1].type == "response.incomplete"  # cut by max_output_tokens, and stored
        second = events[-1].response
        client.responses.input_items.list(second.id)
        client.responses.retrieve(second.id)
        compacted = httpx.post(f"{daemon.base_url}/v1/responses/compact", json={
            "model": "gemma", "previous_response_id": second.id}, timeout=120)
        assert compacted.status_code == 200, compacted.text
        context = httpx.get(f"{daemon.base_url}/hoshikage/memory/{second.id}/context", timeout=60)
        assert context.status_code == 200, context.text
        embedded = client.embeddings.create(model="sentences", input="a lighthouse")
        assert len(embedded.data[0].embedding) == 384
        client.responses.delete(first.id)
        client.conversations.delete(conversation.id)
    assert log.read_text() == "", log.read_text()
    assert "PermissionError" not in daemon.log_text()
