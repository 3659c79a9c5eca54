"""Who is asking, whose memory it is, and a fair share of the slots, with real credentials.

Users are uids the kernel vouches for (tests/as_user.py drops a child process to
them): SO_PEERCRED on the unix socket and the kernel's TCP table on loopback see
those uids, nothing is mocked. Named keys are tested through TCP. The same, with
real accounts in a booted Debian 12 container from the .deb, is
tests/system/test_deb_container.py.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import types
from pathlib import Path

import httpx
import openai
import pytest

from hoshikage.peers import loopback_peer_uid
from tests.as_user import json_as, run_as
from tests.conftest import REPO, Daemon, register

ALICE, BOB, OUTSIDER, GROUP = 64101, 64102, 64103, 64100  # uids without accounts, and the socket's group
UNKNOWN_RESPONSE = "resp_" + "0" * 48
KEYS = {"alice": "alice-key-0001", "bob": "bob-key-00002", "ops": "ops-key-000003"}


@pytest.fixture(scope="module")
def shared(gemma_path, embedding_model_dir):
    """A daemon whose unix socket admits group GROUP (as the packaged unit's admits group hoshikage)."""
    state = Path(tempfile.mkdtemp(prefix="hk-identity-"))
    os.chmod(state, 0o755)  # the socket is reached through it by the users below
    register(state, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "2048")
    daemon = Daemon(state, {"SENTENCE_BERT_MODEL": str(embedding_model_dir)}, "--no-embedded-model")
    os.chown(daemon.unix_path, -1, GROUP)
    yield daemon
    daemon.stop()
    shutil.rmtree(state, ignore_errors=True)


def _alice_remembers(daemon) -> dict:
    return json_as(ALICE, [GROUP], f"""
        client = sdk({str(daemon.unix_path)!r})
        first = client.responses.create(model="gemma", input="The code word is heron.", max_output_tokens=2)
        conversation = client.conversations.create(items=[{{"type": "message", "role": "user",
                                                           "content": "A private note."}}])
        mine = [client.responses.retrieve(first.id).id, client.conversations.retrieve(conversation.id).id]
        print(json.dumps({{"response": first.id, "conversation": conversation.id, "mine": mine}}))
    """)


OUTCOMES = """
outcomes = {}
def outcome(name, call):
    try:
        call()
        outcomes[name] = "ok"
    except openai.APIStatusError as error:
        outcomes[name] = [error.status_code, error.code]
"""


def test_another_users_conversation_is_not_there_for_them(shared):
    alice = _alice_remembers(shared)
    assert alice["mine"] == [alice["response"], alice["conversation"]]
    response, conversation = alice["response"], alice["conversation"]
    bob = json_as(BOB, [GROUP], OUTCOMES + textwrap.dedent(f"""
        client = sdk({str(shared.unix_path)!r})
        R, C, U = {response!r}, {conversation!r}, {UNKNOWN_RESPONSE!r}
        outcome("retrieve", lambda: client.responses.retrieve(R))
        outcome("input_items", lambda: client.responses.input_items.list(R))
        outcome("continue", lambda: client.responses.create(model="gemma", input="and?", previous_response_id=R,
                                                            max_output_tokens=1))
        outcome("continue_unknown", lambda: client.responses.create(model="gemma", input="and?",
                                                                    previous_response_id=U, max_output_tokens=1))
        outcome("compact", lambda: client.responses.compact(model="gemma", previous_response_id=R))
        outcome("compact_unknown", lambda: client.responses.compact(model="gemma", previous_response_id=U))
        outcome("conversation", lambda: client.conversations.retrieve(C))
        outcome("update", lambda: client.conversations.update(C, metadata={{"x": "y"}}))
        outcome("items", lambda: client.conversations.items.list(C))
        outcome("add_items", lambda: client.conversations.items.create(
            C, items=[{{"type": "message", "role": "user", "content": "mine now"}}]))
        outcome("respond_in_it", lambda: client.responses.create(model="gemma", input="x", conversation=C,
                                                                 max_output_tokens=1))
        outcome("context", lambda: client.get(f"http://hoshikage/hoshikage/memory/{{C}}/context", cast_to=object))
        outcome("show", lambda: client.get(f"http://hoshikage/hoshikage/memory/{{R}}", cast_to=object))
        outcome("delete_response", lambda: client.responses.delete(R))
        outcome("delete_conversation", lambda: client.conversations.delete(C))
        outcome("forget", lambda: client.delete(f"http://hoshikage/hoshikage/memory/{{C}}", cast_to=object))
        listed = client.get("http://hoshikage/hoshikage/memory", cast_to=object)["data"]
        bob_forgets_all = client.delete("http://hoshikage/hoshikage/memory", cast_to=object)
        print(json.dumps({{"outcomes": outcomes, "listed": [entry["id"] for entry in listed],
                          "forgot": bob_forgets_all["forgotten"]}}))
    """))
    outcomes = bob["outcomes"]
    not_found = [404, "not_found"]
    for name in ("retrieve", "input_items", "conversation", "update", "items", "add_items", "respond_in_it",
                 "context", "show", "delete_response", "delete_conversation", "forget"):
        assert outcomes[name] == not_found, (name, outcomes[name])
    # A previous_response_id is answered as OpenAI answers one that does not exist: the same for both.
    assert outcomes["continue"] == outcomes["continue_unknown"] == [400, "previous_response_not_found"]
    assert outcomes["compact"] == outcomes["compact_unknown"]
    assert conversation not in bob["listed"] and bob["forgot"] == 0
    # Nothing Bob did touched it: Alice still has both, and root (an admin, over loopback TCP) sees them.
    again = json_as(ALICE, [GROUP], f"""
        client = sdk({str(shared.unix_path)!r})
        print(json.dumps([client.responses.retrieve({response!r}).id,
                          len(client.conversations.items.list({conversation!r}).data)]))
    """)
    assert again == [response, 1]
    listed = httpx.get(f"{shared.base_url}/hoshikage/memory", timeout=60).json()["data"]
    owners = {entry["id"]: entry["owner"] for entry in listed}
    assert owners[conversation] == f"uid:{ALICE}"
    assert f"identity=uid:{BOB}" in shared.log_text()  # who asked, in the request's log line


def test_a_user_runs_hoshikage_memory_through_the_socket_and_sees_only_their_own(shared):
    alice = _alice_remembers(shared)
    environment = {"HOSHIKAGE_LISTEN": f"unix:{shared.unix_path}", "HOSHIKAGE_CONFIG": "/dev/null"}
    code = f"""
        os.environ.update({environment!r})
        sys.argv = ["hoshikage", "--state-dir", {str(shared.state_dir)!r}, "memory"] + sys.argv[1:]
        sys.exit(hoshikage.cli.main(sys.argv[1:]))
    """

    def memory(uid: int, *verb: str) -> subprocess.CompletedProcess:
        return run_as(uid, [GROUP], code.replace("sys.argv[1:]", repr(list(verb)), 1))

    listed_by_alice = memory(ALICE, "list")
    assert listed_by_alice.returncode == 0, listed_by_alice.stderr
    assert alice["conversation"] in listed_by_alice.stdout
    listed_by_bob = memory(BOB, "list")
    assert listed_by_bob.returncode == 0, listed_by_bob.stderr
    assert alice["conversation"] not in listed_by_bob.stdout
    refused = memory(BOB, "show", alice["conversation"])
    assert refused.returncode != 0 and "No conversation or response found" in refused.stderr
    shown = memory(ALICE, "show", alice["response"])
    assert shown.returncode == 0 and "A private note." not in shown.stdout and "heron" in shown.stdout
    forgotten = memory(ALICE, "forget", alice["conversation"])
    assert forgotten.returncode == 0, forgotten.stderr
    assert httpx.get(f"{shared.base_url}/v1/conversations/{alice['conversation']}", timeout=60).status_code == 404


def test_a_uid_outside_the_sockets_group_is_refused_on_both_transports(shared):
    refused = run_as(OUTSIDER, [OUTSIDER], f"""
        import socket
        try:
            socket.socket(socket.AF_UNIX).connect({str(shared.unix_path)!r})
            print("unix: connected")
        except PermissionError:
            print("unix: refused")
        client = openai.OpenAI(base_url={shared.base_url + "/v1"!r}, api_key="unused", max_retries=0)
        try:
            client.models.list()
            print("tcp: answered")
        except openai.PermissionDeniedError as error:
            print("tcp:", error.status_code, error.code, error.message)
    """)
    assert refused.returncode == 0, refused.stderr
    assert "unix: refused" in refused.stdout
    assert "tcp: 403 permission_denied" in refused.stdout and "usermod -aG" in refused.stdout
    assert httpx.get(f"{shared.base_url}/health", timeout=30).status_code == 200  # /health stays open


def test_the_kernels_tcp_table_names_the_user_behind_a_loopback_connection():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        child = subprocess.Popen([sys.executable, "-c", f"""
import os, socket, sys
os.setgroups([]); os.setgid({BOB}); os.setuid({BOB})
with socket.create_connection(("127.0.0.1", {port})) as connection:
    connection.recv(1)
"""], cwd=REPO)
        try:
            connection, peer = server.accept()
            with connection:
                assert loopback_peer_uid(peer, connection.getsockname()) == BOB
                connection.sendall(b"x")
        finally:
            child.wait(timeout=30)
    assert loopback_peer_uid(("127.0.0.1", 1), ("127.0.0.1", 2)) is None  # no such connection


def _keyed_daemon(tmp_path_factory, gemma_path, spare_slots: int) -> Daemon:
    state = tmp_path_factory.mktemp("keyed")
    register(state, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "4096")
    config = state / "keys.yaml"
    config.write_text(json.dumps({"api_keys": {"alice": KEYS["alice"], "bob": KEYS["bob"],
                                               "ops": {"key": KEYS["ops"], "admin": True}}}))
    return Daemon(state, {"HOSHIKAGE_CONFIG": str(config), "HOSHIKAGE_SLOTS": "2",
                          "HOSHIKAGE_SPARE_SLOTS": str(spare_slots), "HOSHIKAGE_MAX_QUEUE_PER_IDENTITY": "3"},
                  "--no-embedded-model")


@pytest.fixture(scope="module")
def keyed(gemma_path, tmp_path_factory):
    """Named keys; two slots and one spare sequence."""
    daemon = _keyed_daemon(tmp_path_factory, gemma_path, spare_slots=1)
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def keyed_without_spare(gemma_path, tmp_path_factory):
    """Two slots and no spare: the round-robin queue alone shares them."""
    daemon = _keyed_daemon(tmp_path_factory, gemma_path, spare_slots=0)
    yield daemon
    daemon.stop()


def _client(daemon, name: str | None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{daemon.base_url}/v1", api_key=KEYS.get(name, "not-a-key"), max_retries=0)


def test_named_keys_own_what_they_create_and_an_admin_key_sees_all(keyed):
    alice, bob, ops = _client(keyed, "alice"), _client(keyed, "bob"), _client(keyed, "ops")
    conversation = alice.conversations.create(items=[{"type": "message", "role": "user", "content": "Alice's"}])
    with pytest.raises(openai.NotFoundError):
        bob.conversations.retrieve(conversation.id)
    assert ops.conversations.retrieve(conversation.id).id == conversation.id
    with pytest.raises(openai.AuthenticationError):
        _client(keyed, None).models.list()
    listed = {name: [entry["id"] for entry in client.get(f"{keyed.base_url}/hoshikage/memory", cast_to=object)["data"]]
              for name, client in (("alice", alice), ("bob", bob), ("ops", ops))}
    assert conversation.id in listed["alice"] and conversation.id in listed["ops"]
    assert conversation.id not in listed["bob"]
    log = keyed.log_text()
    assert "identity=key:alice" in log and KEYS["alice"] not in log  # the name, never the key


HOLD = {"model": "gemma", "messages": [{"role": "user", "content": "Tell a long story."}], "temperature": 0,
        "stream": True, "extra_body": {"ignore_eos": True}}


class _Held:
    """A streamed request that keeps its slot until released (ignore_eos, no max_tokens: it would run to the
    end of its 4096-token context, far beyond anything the test waits for)."""

    def __init__(self, client: openai.OpenAI):
        self.client = client
        self.first_token = threading.Event()
        self.release = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with self.client.chat.completions.create(**HOLD) as stream:
                for _ in stream:
                    self.first_token.set()
                    if self.release.is_set():
                        break
        except Exception as error:  # noqa: BLE001 - the test reads it
            self.error = error
        finally:
            self.first_token.set()


def _waiting(daemon) -> dict[str, int]:
    return httpx.get(f"{daemon.base_url}/v1/status", headers={"Authorization": f"Bearer {KEYS['ops']}"},
                     timeout=30).json()["queue"]["waiting_by_identity"]


def _until(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


@contextlib.contextmanager
def _alice_floods(daemon):
    """Alice holds both slots and has three more requests waiting, as many as one identity may; Bob's request is
    ready (flood.ask() sends it). Everything is let go when the block ends."""
    alice = _client(daemon, "alice")
    running, queued, late = [_Held(alice) for _ in range(2)], [_Held(alice) for _ in range(3)], _Held(
        _client(daemon, "bob"))
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        try:
            for held in running:
                pool.submit(held.run)
                assert held.first_token.wait(120) and held.error is None, held.error
            for held in queued:
                pool.submit(held.run)
            _until(lambda: _waiting(daemon) == {"key:alice": 3}, "alice's three requests wait")
            yield types.SimpleNamespace(alice=alice, running=running, queued=queued, late=late,
                                        ask=lambda: pool.submit(late.run))
        finally:
            for held in running + queued + [late]:
                held.release.set()


def test_while_one_key_holds_every_slot_anothers_request_starts_in_the_spare_and_the_flood_is_capped(keyed):
    with _alice_floods(keyed) as flood:
        with pytest.raises(openai.RateLimitError) as capped:
            flood.alice.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=1)
        assert capped.value.code == "queue_full_for_identity" and "max_queue_per_identity" in str(capped.value)
        assert capped.value.response.headers.get("Retry-After")
        flood.ask()
        # Nothing of Alice's ends: Bob's request starts beside her two, in the spare sequence.
        assert flood.late.first_token.wait(120) and flood.late.error is None, flood.late.error
        assert not any(held.first_token.is_set() for held in flood.queued)
        assert _waiting(keyed) == {"key:alice": 3}
        assert sum(slot["generating"] for slot in _gemma_slots(keyed)) == 3


def test_without_a_spare_the_next_free_slot_goes_to_the_key_holding_none(keyed_without_spare):
    daemon = keyed_without_spare
    with _alice_floods(daemon) as flood:
        flood.ask()
        _until(lambda: _waiting(daemon) == {"key:alice": 3, "key:bob": 1}, "bob's request waits")
        flood.running[0].release.set()  # one slot frees: it is Bob's, though Alice's three came first
        assert flood.late.first_token.wait(120) and flood.late.error is None, flood.late.error
        assert _waiting(daemon) == {"key:alice": 3}
        assert not any(held.first_token.is_set() for held in flood.queued)


def _gemma_slots(daemon) -> list[dict]:
    status = httpx.get(f"{daemon.base_url}/v1/status", headers={"Authorization": f"Bearer {KEYS['ops']}"},
                       timeout=30).json()
    return next(model for model in status["loaded_models"] if model["model"] == "gemma")["slots"]
