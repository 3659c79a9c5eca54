"""Beyond one machine (issue 27): memory on a real Chroma server, and two daemons sharing it behind HAProxy."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from hoshikage.engine.prompt_cache import saved_tags
from hoshikage.memory.store import MemoryUnavailable, NotFound, Store, new_response_id
from tests.conftest import REPO, Daemon, free_tcp_port, register
from tests.memory_corpus import FACTS, conversation
from tests.scaling import ChromaServer, HAProxy, balance
from tests.stored import remember

TOKEN = "chroma-proxy-token"
KEYS = {"alice": "alice-fleet-key", "bob": "bob-fleet-key"}
# Runs until the test kills its daemon: no end-of-generation token, no max_tokens (see test_queue.py's HOLD).
HOLD = {"model": "gemma", "messages": [{"role": "user", "content": "Tell a long story."}], "temperature": 0,
        "ignore_eos": True, "stream": True}


@pytest.fixture(scope="module")
def chroma(tmp_path_factory):
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server") / "data")
    yield server
    server.stop()


def test_the_store_on_a_chroma_server_keeps_and_forgets_as_on_disk(chroma, tmp_path):
    unused = tmp_path / "never-created"
    store = Store(unused, chroma.url)
    kept = remember(store, "an unrelated note", owner="uid:1000")
    forgotten = remember(store, "a secret")
    store.append(kept, [("user", "second", {"n": 2})])
    assert [turn.text for turn in store.turns(kept)] == ["an unrelated note", "noted", "second"]
    assert store.conversation(kept).owner == "uid:1000"
    (record,) = store.responses(kept)
    assert store.response(record["id"])["input_positions"] == [0]
    rows, vectors = store.sentences(kept, "test-model", [0])
    assert rows == [(0, 0, "an unrelated note")] and vectors.shape == (1, 16)

    # A second client (another daemon) sees the same records.
    other = Store(unused, chroma.url)
    assert {info.id for info in other.conversations()} >= {kept, forgotten}
    other.forget(forgotten)
    with pytest.raises(NotFound):  # an unknown id is NotFound on a server too, not an outage
        store.conversation(forgotten)
    names = [collection.name for collection in other._client.list_collections()]
    assert not [name for name in names if forgotten[5:] in name]  # its records and its vectors are gone
    assert kept in {info.id for info in store.conversations()}
    store.keep_summary(kept, "digest", [(0, 0, "an unrelated note")])
    assert other.summaries(kept, ["digest", "absent"]) == {"digest": [(0, 0, "an unrelated note")]}
    assert store.expire(30) == [] and kept in {info.id for info in other.conversations()}  # retention: in use
    assert not unused.exists()  # nothing of the server's records was written here
    store.forget(kept)
    store.close()
    other.close()


def test_hoshikage_memory_lists_and_forgets_on_the_chroma_server(chroma, tmp_path):
    store = Store(tmp_path / "unused", chroma.url)
    remembered = remember(store, "a note for the command line", owner="uid:1000")
    store.close()

    def memory(*words: str) -> str:
        done = subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(tmp_path), "memory", *words],
                              capture_output=True, text=True, cwd=REPO, check=True,
                              env={**os.environ, "HOSHIKAGE_CHROMA_URL": chroma.url, "COLUMNS": "200"})
        return done.stdout

    assert remembered in memory("list")
    assert f"forgot {remembered}" in memory("forget", remembered)
    assert remembered not in memory("list")


def test_two_daemons_appending_to_one_conversation_at_once_lose_no_turn(chroma, tmp_path):
    """The race, made to happen: this daemon counts the turns, the other appends, then this one writes."""
    other = Store(tmp_path, chroma.url)

    class Late(Store):
        race = raced = False

        def _next_position(self, records):
            counted = super()._next_position(records)
            if self.race and not self.raced:  # the other daemon's turn lands between the count and the write
                self.raced = True
                other.append(conversation_id, [("user", "theirs", {"n": "theirs"})])
            return counted

    mine = Late(tmp_path, chroma.url)
    conversation_id = mine.create_conversation({}, implicit=False).id
    mine.append(conversation_id, [("user", "first", {"n": 1})])
    mine.race = True
    response = {"id": new_response_id(conversation_id), "object": "response"}
    positions = mine.append(conversation_id, [("user", "mine", {"n": 2}), ("assistant", "reply", {"n": 3})],
                            response, None, 1)
    assert mine.raced
    assert [turn.text for turn in mine.turns(conversation_id)] == ["first", "theirs", "mine", "reply"]
    assert positions == [2, 3] and mine.response(response["id"])["positions"] == [2, 3]
    mine.forget(conversation_id)
    mine.close()
    other.close()


def test_an_unreachable_or_refusing_chroma_server_is_memory_unavailable_naming_it(chroma, tmp_path):
    dead = f"http://127.0.0.1:{free_tcp_port()}"
    with pytest.raises(MemoryUnavailable, match=f"Chroma server at {dead} .setting chroma_url"):
        Store(tmp_path, dead)
    with _proxy_asking_for_token(tmp_path, chroma) as url:
        with pytest.raises(MemoryUnavailable, match=f"Chroma server at {url} "):
            Store(tmp_path, url)  # no token
        with pytest.raises(MemoryUnavailable, match=f"Chroma server at {url} "):
            Store(tmp_path, url, "wrong")
        admitted = Store(tmp_path, url, TOKEN)
        assert admitted.conversations() is not None
        admitted.close()


@contextlib.contextmanager
def _proxy_asking_for_token(directory: Path, chroma: ChromaServer):
    """HAProxy in front of the Chroma server, refusing requests without the bearer TOKEN: a server that checks it."""
    port = free_tcp_port()
    proxy = HAProxy(directory, f"""
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend chroma
    bind 127.0.0.1:{port}
    http-request deny deny_status 401 unless {{ req.hdr(authorization) -m str "Bearer {TOKEN}" }}
    default_backend chroma
backend chroma
    server chroma 127.0.0.1:{chroma.port}
""")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proxy.stop()


def _memory_daemon(state: Path, gemma_path: Path, embedding_model_dir: Path, chroma_url: str, port=None,
                   **env: str) -> Daemon:
    if not (state / "models.json").exists():
        register(state, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "4096")
    return Daemon(state, {"HOSHIKAGE_CHROMA_URL": chroma_url, "SENTENCE_BERT_MODEL": str(embedding_model_dir),
                          "HOSHIKAGE_SLOTS": "2", **env}, "--no-embedded-model", port=port)


def test_a_chroma_server_outage_is_503_naming_it_chat_goes_on_and_no_partial_turn_is_kept(
        tmp_path, gemma_path, embedding_model_dir):
    server = ChromaServer(tmp_path / "chroma")
    daemon = _memory_daemon(tmp_path / "state", gemma_path, embedding_model_dir, server.url)
    try:
        with openai.OpenAI(base_url=f"{daemon.base_url}/v1", api_key="unused", max_retries=0) as client:
            first = client.responses.create(model="gemma", input="Say hi.", max_output_tokens=4)
            server.stop()
            with pytest.raises(openai.APIStatusError) as refused:
                client.responses.create(model="gemma", input="And again.", previous_response_id=first.id,
                                        max_output_tokens=4)
            assert refused.value.status_code == 503
            error = refused.value.body
            assert error["code"] == "memory_unavailable" and server.url in error["message"], error
            with pytest.raises(openai.APIStatusError) as refused_new:
                client.responses.create(model="gemma", input="A new chain.", max_output_tokens=4)
            assert refused_new.value.status_code == 503
            chat = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Hi"}],
                                                  max_tokens=4)
            assert chat.choices[0].message.content is not None  # chat never needed memory
            server.start()
            # Back: the chain is as it was before the outage, and the refused turns left nothing.
            stored = Store(tmp_path / "unused", server.url)
            (conversation,) = stored.conversations()
            assert [turn.text for turn in stored.turns(conversation.id)] == ["Say hi.", first.output_text]
            again = client.responses.create(model="gemma", input="And again.", previous_response_id=first.id,
                                            max_output_tokens=4)
            assert [turn.text for turn in stored.turns(conversation.id)][2:] == ["And again.", again.output_text]
            stored.close()
    finally:
        daemon.stop()
        server.stop()


BACKENDS = ("one", "two")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, chroma, gemma_path, embedding_model_dir):
    """Two daemons (own state directories, one Chroma server, the same model file) behind HAProxy."""
    root = tmp_path_factory.mktemp("fleet")
    ports = {name: free_tcp_port() for name in BACKENDS}
    keys = ",".join(f"{name}={key}" for name, key in KEYS.items())
    daemons = {name: _memory_daemon(root / name, gemma_path, embedding_model_dir, chroma.url, ports[name],
                                    HOSHIKAGE_API_KEYS=keys) for name in BACKENDS}
    proxy, url = balance(root, ports)
    fleet = {"daemons": daemons, "ports": ports, "proxy": proxy, "url": url,
             "root": root, "gemma": gemma_path, "embedding": embedding_model_dir, "keys": keys, "chroma": chroma}
    yield fleet
    proxy.stop()
    for daemon in fleet["daemons"].values():
        daemon.stop()


def _client(fleet, who: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fleet['url']}/v1", api_key=KEYS[who], max_retries=0)


def test_a_responses_chain_started_on_one_daemon_continues_on_the_other(fleet):
    with _client(fleet, "alice") as alice, _client(fleet, "bob") as bob:
        first = alice.responses.with_raw_response.create(model="gemma", input="My code word is umbrella.",
                                                         max_output_tokens=8)
        second = alice.responses.with_raw_response.create(model="gemma", input="What is my code word?",
                                                          previous_response_id=first.parse().id,
                                                          max_output_tokens=8)
        # Round robin: the second turn went to the other daemon, which found the first in the shared store.
        assert {first.headers["x-served-by"], second.headers["x-served-by"]} == set(BACKENDS)
        continued = second.parse()
        assert continued.previous_response_id == first.parse().id
        alone = alice.responses.create(model="gemma", input="What is my code word?", max_output_tokens=8)
        assert continued.usage.input_tokens > alone.usage.input_tokens  # the first turn was in its context
        # Ownership is the key's name on every daemon of the fleet: Bob cannot reach Alice's chain on either.
        for _ in BACKENDS:
            with pytest.raises(openai.NotFoundError):
                bob.responses.retrieve(continued.id)


def test_a_killed_daemon_fails_only_its_own_streams_and_the_balancer_takes_it_out_and_back(fleet):
    proxy, http = fleet["proxy"], httpx.Client(base_url=fleet["url"], timeout=120,
                                               headers={"Authorization": f"Bearer {KEYS['alice']}"})
    with http:
        with http.stream("POST", "/v1/chat/completions", json=HOLD) as held, \
                http.stream("POST", "/v1/chat/completions", json={**HOLD, "ignore_eos": False, "max_tokens": 16}) \
                as other:
            victim, survivor = held.headers["x-served-by"], other.headers["x-served-by"]
            assert {victim, survivor} == set(BACKENDS)
            held_lines, other_lines = held.iter_lines(), other.iter_lines()
            next(line for line in held_lines if line.startswith("data:"))  # generating now, and until killed
            next(line for line in other_lines if line.startswith("data:"))
            fleet["daemons"][victim].process.send_signal(signal.SIGKILL)
            fleet["daemons"][victim].process.wait()
            with pytest.raises(httpx.HTTPError):  # the stream breaks off: no [DONE]
                for line in held_lines:
                    assert line != "data: [DONE]"
            assert [line for line in other_lines if line.startswith("data:")][-1] == "data: [DONE]"
        proxy.wait_for("daemons", victim, "DOWN")
        served = {http.post("/v1/chat/completions", json={"model": "gemma", "max_tokens": 2, "messages": [
            {"role": "user", "content": "Hi"}]}).headers["x-served-by"] for _ in range(4)}
        assert served == {survivor}
        fleet["daemons"][victim].stop()
        fleet["daemons"][victim] = _memory_daemon(fleet["root"] / victim, fleet["gemma"], fleet["embedding"],
                                                  fleet["chroma"].url, fleet["ports"][victim],
                                                  HOSHIKAGE_API_KEYS=fleet["keys"])
        proxy.wait_for("daemons", victim, "UP")
        served = {http.post("/v1/chat/completions", json={"model": "gemma", "max_tokens": 2, "messages": [
            {"role": "user", "content": "Hi"}]}).headers["x-served-by"] for _ in range(4)}
        assert served == set(BACKENDS)


def test_the_fleet_status_names_the_shared_store(fleet):
    for name, port in fleet["ports"].items():
        status = httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=30,
                           headers={"Authorization": f"Bearer {KEYS['alice']}"}).json()
        assert json.dumps(status).count(fleet["chroma"].url) >= 1, (name, status.get("memory"))


def test_the_recipes_haproxy_config_serves_the_fleet(fleet, tmp_path):
    """packaging/docker/fleet/haproxy.cfg as shipped, its addresses pointed at this test's daemons."""
    recipe = (Path(__file__).parents[2] / "packaging/docker/fleet/haproxy.cfg").read_text()
    front = free_tcp_port()
    config = (recipe.replace("bind :8000", f"bind 127.0.0.1:{front}")
              .replace("one:8000", f"127.0.0.1:{fleet['ports']['one']}")
              .replace("two:8000", f"127.0.0.1:{fleet['ports']['two']}"))
    assert config.count("127.0.0.1:") == 3, "the recipe's addresses moved: update this test"
    proxy = HAProxy(tmp_path, config)
    try:
        for name in BACKENDS:
            proxy.wait_for("daemons", name, "UP")
        served = []
        for who in KEYS:
            with openai.OpenAI(base_url=f"http://127.0.0.1:{front}/v1", api_key=KEYS[who], max_retries=0) as client:
                for _ in range(2):
                    chat = client.chat.completions.with_raw_response.create(
                        model="gemma", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
                    served.append((who, chat.http_response.status_code))
        assert served == [(who, 200) for who in KEYS for _ in range(2)]
    finally:
        proxy.stop()


def test_a_conversation_forgotten_on_one_daemon_leaves_no_kv_state_on_the_other(
        chroma, tmp_path, gemma_path, embedding_model_dir):
    caches = {name: tmp_path / f"{name}-kv" for name in BACKENDS}

    def start(name: str) -> Daemon:
        return _memory_daemon(tmp_path / name, gemma_path, embedding_model_dir, chroma.url,
                              HOSHIKAGE_PROMPT_CACHE_DIR=str(caches[name]), HOSHIKAGE_PROMPT_CACHE_MIN_TOKENS="1")

    daemons = {name: start(name) for name in BACKENDS}
    try:
        with openai.OpenAI(base_url=f"{daemons['one'].base_url}/v1", api_key="unused", max_retries=0) as one, \
                openai.OpenAI(base_url=f"{daemons['two'].base_url}/v1", api_key="unused", max_retries=0) as two:
            first = one.responses.create(model="gemma", input="Remember: the vault code is 4417.",
                                         max_output_tokens=4)
            second = two.responses.create(model="gemma", input="And the door?", max_output_tokens=4,
                                          previous_response_id=first.id)
        conversation_id = "conv_" + second.id[5:37]
        daemons["two"].stop()  # it saves its slots' KV state as it exits (engine/prompt_cache.py)
        assert conversation_id in saved_tags(caches["two"])  # the control: kept while the conversation is
        daemons["two"] = start("two")  # a later run of it, holding what the last one saved
        with openai.OpenAI(base_url=f"{daemons['one'].base_url}/v1", api_key="unused", max_retries=0) as one:
            one.conversations.delete(conversation_id)  # forgotten through the other daemon
        daemons["two"].stop()
        assert conversation_id not in saved_tags(caches["two"])
        assert "was forgotten on the Chroma server" in daemons["two"].log_text()
    finally:
        for daemon in daemons.values():
            daemon.stop()


def test_summary_and_recall_work_across_the_fleet(fleet):
    """A long conversation written through one daemon is compressed and recalled by the other, from the server."""
    history = conversation(300)  # many times the 4096-token context
    fact = FACTS[2]
    ports = fleet["ports"]
    headers = {"Authorization": f"Bearer {KEYS['alice']}"}
    with openai.OpenAI(base_url=f"http://127.0.0.1:{ports['one']}/v1", api_key=KEYS["alice"], max_retries=0) as one, \
            openai.OpenAI(base_url=f"http://127.0.0.1:{ports['two']}/v1", api_key=KEYS["alice"], max_retries=0) as two:
        created = one.conversations.create(items=history[:100])
        one.conversations.items.create(created.id, items=history[100:])
        response = two.responses.create(model="gemma", input=fact.question, conversation=created.id,
                                        max_output_tokens=8, temperature=0)
    report = httpx.get(f"http://127.0.0.1:{ports['two']}/hoshikage/memory/{response.id}/context", headers=headers,
                       timeout=30).json()
    assert report["compressed"] and 0 < len(report["summary_sentences"]) <= 20
    assert any(fact.answer in passage for passage in report["recalled_passages"])
    assert not any(fact.answer in message["content"] for message in history[-40:])  # recalled, not verbatim
