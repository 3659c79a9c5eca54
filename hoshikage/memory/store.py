"""The conversation store: ChromaDB on disk, one collection pair per conversation.

Why per conversation: forgetting must leave nothing behind. ChromaDB keeps the
records it was given in its write-ahead log until an index flush, so a record
deleted from a shared collection can linger on disk; a dropped collection takes
its log, its index files and its rows with it, and a VACUUM then rewrites the
SQLite file without the freed pages.

Collection ``c<key>`` holds records of four kinds (its vectors are a
placeholder; nothing is searched there):
  conversation  one, id "conversation": created_at, last_used, metadata
  turn          "t<position>": one input or output item, its text and JSON
  response      "r<response id>": the response object, its parent, its turns, the context it was given
  summary       "s<digest>": a segment's K-Means summary, computed once
Collection ``c<key>-e<model digest>`` holds the sentence vectors of the
conversation's turns for one embedding model (a different model gets its own).

Ids carry the conversation: ``conv_<key>``, ``resp_<key><suffix>``, so any id
finds its collection without an index that would outlive a forget.

Every method blocks; the memory service calls them from its one worker thread.
A turn is written in the same ChromaDB call as its response record: one SQLite
transaction, on disk before the answer ends.

The same records live on a Chroma server (setting ``chroma_url``, issue 27) when
several daemons share conversations. There the write is one request, so a turn is
stored whole or not at all; an unreachable server is MemoryUnavailable naming the
URL, never a 404. What this module does to the embedded store's files after a
forget (VACUUM, removing and zeroing index files) cannot reach a server's disk:
there a forget deletes the collections through the server's API, and the
server's own storage decides when their bytes leave its disk (README, "Scaling out").
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import resource
import shutil
import sqlite3
import struct
import time
import uuid
from pathlib import Path
from typing import Any

_KEY = re.compile(r"^[0-9a-f]{32}$")
HNSW_FORMAT = 1  # header.bin's version: int32, then offsetLevel0, max_elements, cur_element_count, size per element
_SEGMENT_DIR = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PLACEHOLDER = [0.0]
SERVER_TIMEOUT_SECONDS = 30.0  # longest one call to a Chroma server may take
SERVER_CONNECT_SECONDS = 5.0
APPEND_ATTEMPTS = 8  # writes of one conversation colliding with other daemons' before one gives up


class MemoryUnavailable(Exception):
    """The store cannot be used; str() says why and what to do."""


class NotFound(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Turn:
    position: int
    role: str  # system, user, assistant, tool
    text: str
    item: dict[str, Any]  # the item as the API shows it
    response_id: str
    created_at: int


@dataclasses.dataclass(frozen=True)
class ConversationInfo:
    id: str
    created_at: int
    last_used: int
    metadata: dict[str, str]
    implicit: bool  # created for a chain of responses, not by POST /v1/conversations
    owner: str = ""  # the identity that created it (memory/ownership.py); "": stored before owners, the admins'


def new_conversation_id() -> str:
    return "conv_" + uuid.uuid4().hex


def conversation_key(conversation_id: str) -> str | None:
    key = conversation_id.removeprefix("conv_")
    return key if conversation_id.startswith("conv_") and _KEY.match(key) else None


def response_key(response_id: str) -> str | None:
    key = response_id.removeprefix("resp_")[:32]
    return key if response_id.startswith("resp_") and _KEY.match(key) else None


def new_response_id(conversation_id: str) -> str:
    return f"resp_{conversation_key(conversation_id)}{uuid.uuid4().hex[:16]}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# Vector indexes ChromaDB keeps open at once (each holds its files open and its vectors in memory). ChromaDB
# sizes this cache from the process's open-file limit (a fifth of RLIMIT_NOFILE), which is effectively
# unbounded where that limit is high: every conversation ever touched then stayed open, ~8 descriptors and
# ~5 MiB each, and a soak of conversations grew without end (issue 21). The least recently used are closed.
INDEX_CACHE = 64


@contextlib.contextmanager
def _index_cache_of(count: int):
    """While open, ChromaDB's Rust client sizes its index cache to COUNT (it reads the limit from its own module's
    ``resource`` name once, at construction; nothing else in the process is affected)."""
    from chromadb.api import rust

    class Limits:
        RLIMIT_NOFILE = resource.RLIMIT_NOFILE

        @staticmethod
        def getrlimit(which):
            return (count * 5, count * 5) if which == resource.RLIMIT_NOFILE else resource.getrlimit(which)

    real = getattr(rust, "resource", None)
    if real is None:  # another ChromaDB: its own sizing stands
        yield
        return
    rust.resource = Limits
    try:
        yield
    finally:
        rust.resource = real


def _server_failure(error: Exception) -> bool:
    """Whether ERROR is the Chroma server failing (unreachable, timed out, answering 5xx, refusing the token now),
    not a record missing nor a request of ours it rejects (that is a bug here, and stays one)."""
    from chromadb.errors import ChromaError

    if isinstance(error, ChromaError):
        return error.code() >= 500 or error.code() in (401, 403)
    return type(error).__module__.split(".")[0] in ("httpx", "httpcore")


def _missing(error: Exception) -> bool:
    from chromadb.errors import NotFoundError

    return isinstance(error, (NotFoundError, ValueError)) and not _server_failure(error)


def _server_failures_unavailable(cls):
    """Every public method of CLS raises MemoryUnavailable naming the URL when its Chroma server fails."""
    def wrap(method):
        @functools.wraps(method)
        def wrapped(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except Exception as error:
                if self.url is None or not _server_failure(error):
                    raise
                raise MemoryUnavailable(f"the Chroma server at {self.url} (setting chroma_url) failed: "
                                        f"{type(error).__name__}: {error}") from None
        return wrapped

    for name, member in list(vars(cls).items()):
        if callable(member) and not name.startswith("_"):
            setattr(cls, name, wrap(member))
    return cls


def _not_installed() -> MemoryUnavailable:
    return MemoryUnavailable("conversation memory needs chromadb, which is not installed: install the "
                             "hoshikage-memory package (`apt install hoshikage-memory`), or from source "
                             "the memory extra, `pip install 'hoshikage[memory]'`")


@_server_failures_unavailable
class Store:
    """PATH: the embedded store's directory; URL (and TOKEN): a Chroma server instead."""

    def __init__(self, path: Path, url: str | None = None, token: str | None = None):
        self.path = path
        self.url = url
        try:
            import chromadb
        except ImportError:
            raise _not_installed() from None
        if url is not None:
            self._client = _server_client(chromadb, url, token)
            return
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(path, 0o700)  # what users said is theirs: the daemon user's alone
            with _index_cache_of(INDEX_CACHE):
                self._client = chromadb.PersistentClient(
                    path=str(path), settings=chromadb.Settings(anonymized_telemetry=False, allow_reset=False))
        except Exception as error:  # PermissionError, a corrupt database, a newer schema...
            raise MemoryUnavailable(f"the conversation store at {path} (setting chroma_path) cannot be opened: "
                                    f"{type(error).__name__}: {error}") from None

    @property
    def location(self) -> str:
        return self.url or str(self.path)

    def close(self) -> None:
        """Close a server's connections (the embedded store has nothing to close before exit)."""
        if self.url is not None:
            self._client.close()
            for session in _sessions_of(self._client):
                session.close()

    # Collections -------------------------------------------------------------

    def _records(self, key: str, create: bool = False):
        name = f"c{key}"
        if create:
            return self._client.get_or_create_collection(name, embedding_function=None)
        try:
            return self._client.get_collection(name, embedding_function=None)
        except Exception as error:  # chromadb raises NotFoundError (a ValueError in older releases)
            if _missing(error):
                raise NotFound("conv_" + key) from None
            raise

    def _sentences(self, key: str, model_name: str):
        return self._client.get_or_create_collection(
            f"c{key}-e{_digest(model_name)}", embedding_function=None,
            metadata={"hnsw:space": "cosine", "embedding_model": model_name})

    # Conversations ----------------------------------------------------------

    def create_conversation(self, metadata: dict[str, str], implicit: bool, conversation_id: str | None = None,
                            owner: str = "") -> ConversationInfo:
        conversation_id = conversation_id or new_conversation_id()
        now = int(time.time())
        records = self._records(conversation_key(conversation_id), create=True)
        records.add(ids=["conversation"], embeddings=[PLACEHOLDER], documents=[json.dumps(metadata)],
                    metadatas=[{"kind": "conversation", "created_at": now, "last_used": now, "implicit": implicit,
                                "owner": owner}])
        return ConversationInfo(conversation_id, now, now, metadata, implicit, owner)

    def conversation(self, conversation_id: str) -> ConversationInfo:
        key = conversation_key(conversation_id)
        if key is None:
            raise NotFound(conversation_id)
        found = self._records(key).get(ids=["conversation"])
        if not found["ids"]:
            raise NotFound(conversation_id)
        meta = found["metadatas"][0]
        return ConversationInfo(conversation_id, meta["created_at"], meta["last_used"],
                                json.loads(found["documents"][0]), bool(meta["implicit"]), meta.get("owner", ""))

    def update_metadata(self, conversation_id: str, metadata: dict[str, str]) -> ConversationInfo:
        self.conversation(conversation_id)
        # With its vector: given documents alone, ChromaDB would embed them with its default model, which it
        # downloads first (issue 21). Every write here passes our own vectors.
        self._records(conversation_key(conversation_id)).update(ids=["conversation"], embeddings=[PLACEHOLDER],
                                                                documents=[json.dumps(metadata)])
        return self.conversation(conversation_id)

    def conversations(self) -> list[ConversationInfo]:
        infos = []
        for name in self._collection_names():
            if name.startswith("c") and _KEY.match(name[1:]):
                try:
                    infos.append(self.conversation("conv_" + name[1:]))
                except NotFound:
                    continue
        return sorted(infos, key=lambda info: info.last_used, reverse=True)

    def forget(self, conversation_id: str) -> None:
        """Drop the conversation's collections and rewrite the database without their pages."""
        key = conversation_key(conversation_id)
        if key is None:
            raise NotFound(conversation_id)
        self._records(key)  # NotFound when there is nothing to forget
        self._drop(key)
        self.compact()

    def forget_all(self) -> int:
        """Drop every conversation's collections, half-written ones included; how many conversations."""
        keys = set()
        for name in self._collection_names():
            if name.startswith("c") and _KEY.match(name[1:33]):
                keys.add(name[1:33])
                self._client.delete_collection(name)
        self.compact()
        return len(keys)

    def _collection_names(self) -> list[str]:
        return [collection.name if hasattr(collection, "name") else str(collection)
                for collection in self._client.list_collections()]

    def _drop(self, key: str) -> None:
        for name in self._collection_names():
            if name == f"c{key}" or name.startswith(f"c{key}-"):
                self._client.delete_collection(name)

    def compact(self) -> None:
        """Leave nothing of dropped collections on disk: VACUUM ChromaDB's SQLite file (deleted rows' pages
        are rewritten away, not left readable), and remove the index directories of segments that no
        longer exist (ChromaDB leaves them behind, and hnswlib writes its files from uninitialised
        memory, which can hold any text the process has seen). Nothing to do on a server: its files are
        not this process's."""
        database = self.path / "chroma.sqlite3"
        if self.url is not None or not database.exists():
            return
        connection = sqlite3.connect(database, timeout=30)
        try:
            live = {row[0] for row in connection.execute("SELECT id FROM segments")}
            connection.execute("VACUUM")
        finally:
            connection.close()
        for entry in self.path.iterdir():
            if entry.is_dir() and _SEGMENT_DIR.match(entry.name) and entry.name not in live:
                shutil.rmtree(entry)
        self.scrub_indexes()

    def scrub_indexes(self) -> None:
        """Zero the unused slots of every vector index file.

        hnswlib allocates an index for many elements with malloc and writes it whole, so the slots
        not holding an element carry whatever the process's memory held before: text of other
        conversations, forgotten ones included. Run after a forget and when the daemon exits (an index
        still open in this process may write its slots again; the next process loads them zeroed).
        """
        if self.url is not None:
            return
        for entry in self.path.iterdir():
            header = entry / "header.bin"
            if not (entry.is_dir() and _SEGMENT_DIR.match(entry.name) and header.exists()):
                continue
            fields = header.read_bytes()
            if len(fields) < 36 or struct.unpack_from("<i", fields)[0] != HNSW_FORMAT:
                continue  # a layout this code does not know: left alone rather than damaged
            _, max_elements, count, element_size = struct.unpack_from("<4Q", fields, 4)
            _zero_from(entry / "data_level0.bin", count * element_size, max_elements * element_size)
            _zero_from(entry / "length.bin", count * 4, max_elements * 4)

    def expire(self, older_than_days: int) -> list[str]:
        """Forget conversations unused for OLDER_THAN_DAYS days; their ids."""
        limit = time.time() - older_than_days * 86400
        expired = [info.id for info in self.conversations() if info.last_used < limit]
        for conversation_id in expired:
            self._drop(conversation_key(conversation_id))
        if expired:
            self.compact()
        return expired

    # Turns and responses ----------------------------------------------------

    def turns(self, conversation_id: str) -> list[Turn]:
        key = conversation_key(conversation_id)
        found = self._records(key).get(where={"kind": "turn"})
        turns = [_turn(document, meta) for document, meta in zip(found["documents"], found["metadatas"])]
        return sorted(turns, key=lambda turn: turn.position)

    def response(self, response_id: str) -> dict[str, Any]:
        """The stored record of RESPONSE_ID: object, parent, positions, context."""
        key = response_key(response_id)
        if key is None:
            raise NotFound(response_id)
        try:
            found = self._records(key).get(ids=["r" + response_id])
        except NotFound:
            raise NotFound(response_id) from None
        if not found["ids"] or found["metadatas"][0].get("deleted"):
            raise NotFound(response_id)
        meta = found["metadatas"][0]
        return {"object": json.loads(found["documents"][0]), "parent": meta.get("parent") or None,
                "input_positions": json.loads(meta["input_positions"]),
                "positions": json.loads(meta["positions"]), "context": json.loads(meta.get("context") or "null"),
                "conversation_id": "conv_" + key}

    def responses(self, conversation_id: str, deleted: bool = False) -> list[dict[str, Any]]:
        """The response records of CONVERSATION_ID, oldest first; DELETED: with the links of deleted ones."""
        found = self._records(conversation_key(conversation_id)).get(where={"kind": "response"})
        records = []
        for response_id, meta in zip(found["ids"], found["metadatas"]):
            if meta.get("deleted") and not deleted:
                continue
            records.append({"id": response_id[1:], "created_at": meta["created_at"],
                            "parent": meta.get("parent") or None, "positions": json.loads(meta["positions"])})
        return sorted(records, key=lambda record: (record["created_at"], record["positions"]))

    def append(self, conversation_id: str, items: list[tuple[str, str, dict[str, Any]]],
               response: dict[str, Any] | None = None, parent: str | None = None,
               input_count: int = 0, context: dict[str, Any] | None = None) -> list[int]:
        """Store ITEMS (role, text, item) at the end, with RESPONSE's record, in one write; their positions.

        The first INPUT_COUNT items are the response's input, the rest its output.

        On a Chroma server another daemon may append to the same conversation at the same moment and take the
        same positions; chromadb's add keeps the first record of an id and drops the second without a word. So
        there every turn carries this write's mark, and a write that finds another's turn at one of its
        positions takes back what of it landed and goes after the other's.
        """
        key = conversation_key(conversation_id)
        records = self._records(key)
        writer = uuid.uuid4().hex
        response_id = response["id"] if response else ""
        for _ in range(APPEND_ATTEMPTS):
            start = self._next_position(records)
            now = int(time.time())
            positions = list(range(start, start + len(items)))
            ids, documents, metadatas = [], [], []
            for position, (role, text, item) in zip(positions, items):
                ids.append(f"t{position:08d}")
                documents.append(text)
                metadatas.append({"kind": "turn", "position": position, "role": role, "created_at": now,
                                  "response_id": response_id, "item": json.dumps(item, ensure_ascii=False),
                                  "writer": writer})
            if response is not None:
                ids.append("r" + response_id)
                documents.append(json.dumps(response, ensure_ascii=False))
                metadatas.append({"kind": "response", "created_at": now, "parent": parent or "",
                                  "input_positions": json.dumps(positions[:input_count]),
                                  "positions": json.dumps(positions),
                                  "context": json.dumps(context, ensure_ascii=False)})
            if ids:
                records.add(ids=ids, embeddings=[PLACEHOLDER] * len(ids), documents=documents, metadatas=metadatas)
            if self.url is None or not items:
                break  # the embedded store has one writer: this daemon's memory thread
            turn_ids = ids[:len(items)]
            landed = records.get(ids=turn_ids, include=["metadatas"])
            mine = [record_id for record_id, meta in zip(landed["ids"], landed["metadatas"])
                    if meta.get("writer") == writer]
            if len(mine) == len(turn_ids):
                break
            if mine or response is not None:
                records.delete(ids=mine + ids[len(items):])
        else:
            raise MemoryUnavailable(f"the conversation {conversation_id} was appended to by other daemons "
                                    f"{APPEND_ATTEMPTS} times while this one wrote; nothing of this turn is kept")
        records.update(ids=["conversation"], metadatas=[{"last_used": now}])
        return positions

    def _next_position(self, records) -> int:
        return len(records.get(where={"kind": "turn"}, include=[])["ids"])

    def delete_response(self, response_id: str) -> None:
        """Forget one response object. Its turns stay part of the conversation they belong to, and its link in
        the chain stays too (parent and positions, nothing else): a later response continued from it keeps
        the whole chain, as at OpenAI."""
        self.response(response_id)
        self._records(response_key(response_id)).update(
            ids=["r" + response_id], embeddings=[PLACEHOLDER], documents=["null"],
            metadatas=[{"deleted": True, "context": "null"}])
        self.compact()

    # Sentences and summaries ------------------------------------------------

    def add_sentences(self, conversation_id: str, model_name: str,
                      rows: list[tuple[int, int, str]], vectors) -> None:
        """ROWS of (turn position, sentence index, text) with their VECTORS."""
        if not rows:
            return
        self._sentences(conversation_key(conversation_id), model_name).add(
            ids=[f"{position}:{index}" for position, index, _ in rows],
            embeddings=[list(map(float, vector)) for vector in vectors],
            documents=[text for _, _, text in rows],
            metadatas=[{"position": position, "index": index} for position, index, _ in rows])

    def sentences(self, conversation_id: str, model_name: str, positions: list[int]):
        """(rows, vectors) of the sentences of turns at POSITIONS, in conversation order."""
        import numpy as np

        if not positions:
            return [], np.zeros((0, 0), np.float32)
        found = self._sentences(conversation_key(conversation_id), model_name).get(
            where={"position": {"$in": positions}}, include=["documents", "metadatas", "embeddings"])
        rows = [(meta["position"], meta["index"], document)
                for meta, document in zip(found["metadatas"], found["documents"])]
        order = sorted(range(len(rows)), key=lambda i: rows[i][:2])
        vectors = np.asarray(found["embeddings"], dtype=np.float32)
        return [rows[i] for i in order], (vectors[order] if len(order) else vectors)

    def summaries(self, conversation_id: str, digests: list[str]) -> dict[str, list[tuple[int, int, str]]]:
        """The kept segment summaries among DIGESTS."""
        if not digests:
            return {}
        found = self._records(conversation_key(conversation_id)).get(ids=["s" + digest for digest in digests])
        return {record_id[1:]: [tuple(row) for row in json.loads(document)]
                for record_id, document in zip(found["ids"], found["documents"])}

    def keep_summary(self, conversation_id: str, digest: str, rows: list[tuple[int, int, str]]) -> None:
        self._records(conversation_key(conversation_id)).upsert(
            ids=["s" + digest], embeddings=[PLACEHOLDER], documents=[json.dumps(rows, ensure_ascii=False)],
            metadatas=[{"kind": "summary"}])

    def size(self, conversation_id: str) -> int:
        """Bytes of text the conversation holds (turns and response objects)."""
        found = self._records(conversation_key(conversation_id)).get(include=["documents"])
        return sum(len(document.encode()) for document in found["documents"] if document)


def _server_client(chromadb, url: str, token: str | None):
    """A client of the Chroma server at URL; MemoryUnavailable naming it when it does not answer or refuses."""
    from urllib.parse import urlsplit

    import httpx

    parts = urlsplit(url)
    secure = parts.scheme == "https"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(SERVER_TIMEOUT_SECONDS, connect=SERVER_CONNECT_SECONDS)
    # Asked first with a client of our own, closed here: chromadb's, failing in its constructor, would leave its
    # connections open, and say less about why.
    try:
        with httpx.Client(timeout=timeout, headers=headers) as http:
            answer = http.get(f"{url}/api/v2/auth/identity")
    except httpx.HTTPError as error:
        raise MemoryUnavailable(f"the Chroma server at {url} (setting chroma_url) cannot be reached: "
                                f"{type(error).__name__}: {error}") from None
    if answer.status_code in (401, 403):
        raise MemoryUnavailable(f"the Chroma server at {url} (setting chroma_url) refused this daemon (HTTP "
                                f"{answer.status_code}): set chroma_token to the token it expects")
    if answer.status_code != 200:
        raise MemoryUnavailable(f"the Chroma server at {url} (setting chroma_url) answered HTTP "
                                f"{answer.status_code} to /api/v2/auth/identity: is it a Chroma 1.x server?")
    try:
        client = chromadb.HttpClient(host=parts.hostname, port=parts.port or (443 if secure else 80),
                                     ssl=secure, headers=headers or None,
                                     settings=chromadb.Settings(anonymized_telemetry=False, allow_reset=False))
    except Exception as error:
        raise MemoryUnavailable(f"the Chroma server at {url} (setting chroma_url) cannot be used: "
                                f"{type(error).__name__}: {error}") from None
    # chromadb's HTTP client waits for an answer forever: a server that stalls would hold memory's one thread,
    # and every request that needs memory behind it. Past these, the call fails as an outage (503).
    for session in _sessions_of(client):
        session.timeout = timeout
    return client


def _sessions_of(client) -> list:
    """The httpx.Clients under a chromadb HttpClient and its admin client (chromadb offers no setting for their
    timeout, and its close() leaves their connections open)."""
    servers = [client._server, getattr(getattr(client, "_admin_client", None), "_server", None)]
    return [server._session for server in servers if hasattr(server, "_session")]


def _zero_from(path: Path, start: int, end: int) -> None:
    """Overwrite bytes START..END of PATH (no further than its size) with zeros, in place."""
    if not path.exists():
        return
    end = min(end, path.stat().st_size)
    if start >= end:
        return
    with path.open("r+b") as handle:
        handle.seek(start)
        handle.write(bytes(end - start))


def _turn(document: str, meta: dict[str, Any]) -> Turn:
    return Turn(meta["position"], meta["role"], document, json.loads(meta["item"]), meta["response_id"],
                meta["created_at"])
