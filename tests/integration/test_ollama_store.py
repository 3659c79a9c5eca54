"""`hoshikage add --from-ollama` and `hoshikage list --ollama` on a store laid out the way Ollama lays it out
(manifests and sha256 blobs) around the real test model, then the model served under its Ollama name."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ollama
import pytest

from tests.conftest import REPO, Daemon

GO_TEMPLATE = "{{- range .Messages }}<start_of_turn>{{ .Role }}\n{{ .Content }}<end_of_turn>\n{{ end }}"


def _blob(store: Path, data: bytes | None = None, source: Path | None = None) -> dict:
    """Write a blob as Ollama does (named by its sha256) and return its manifest layer (without mediaType)."""
    blobs = store / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    if source is not None:
        with source.open("rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
        target = blobs / f"sha256-{digest}"
        try:
            os.link(source, target)  # a blob is a plain file; a hard link keeps the test from copying 240 MB
        except OSError:
            shutil.copyfile(source, target)
        return {"digest": f"sha256:{digest}", "size": source.stat().st_size}
    digest = hashlib.sha256(data).hexdigest()
    (blobs / f"sha256-{digest}").write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


@pytest.fixture
def store(tmp_path, gemma_path) -> Path:
    """An Ollama store holding gemma3:270m (model, template, params and system layers) and a broken manifest."""
    store = tmp_path / "ollama-models"
    params = {"num_ctx": 1024, "stop": ["<end_of_turn>", "STOPWORD"], "temperature": 0.7, "top_k": 64}
    layers = [{"mediaType": "application/vnd.ollama.image.model", **_blob(store, source=gemma_path)},
              {"mediaType": "application/vnd.ollama.image.template", **_blob(store, GO_TEMPLATE.encode())},
              {"mediaType": "application/vnd.ollama.image.params", **_blob(store, json.dumps(params).encode())},
              {"mediaType": "application/vnd.ollama.image.system", **_blob(store, b"You are terse.")}]
    manifest = store / "manifests" / "registry.ollama.ai" / "library" / "gemma3" / "270m"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"schemaVersion": 2, "config": _blob(store, b"{}"), "layers": layers}))
    broken = store / "manifests" / "registry.ollama.ai" / "library" / "gone" / "latest"
    broken.parent.mkdir(parents=True)
    broken.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model",
                                              "digest": "sha256:" + "0" * 64, "size": 1}]}))
    return store


def _cli(state: Path, store: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(state), *args], text=True,
                          capture_output=True, cwd=REPO, env={**os.environ, "OLLAMA_MODELS": str(store),
                                                              "HOME": str(state), "COLUMNS": "200"})


def test_a_model_of_an_ollama_store_is_registered_in_place_and_served_by_its_name(tmp_path, store):
    state = tmp_path / "state"
    listed = _cli(state, store, "list", "--ollama")
    assert listed.returncode == 0 and "gemma3:270m" in listed.stdout and "gone" not in listed.stdout
    added = _cli(state, store, "add", "--from-ollama", "gemma3:270m")
    assert added.returncode == 0, added.stderr
    manifest = json.loads((store / "manifests/registry.ollama.ai/library/gemma3/270m").read_text())
    blob_path = store / "blobs" / manifest["layers"][0]["digest"].replace(":", "-")
    entry = json.loads((state / "models.json").read_text())["models"]["gemma3:270m"]
    assert entry["path"] == str(blob_path) and not entry["imported"]  # in place: no copy
    assert entry["context_length"] == 1024  # the manifest's num_ctx
    # The packaged GGUF carries no chat template: the Go template's markers name the format (else it is None).
    assert entry["chat_format"] == "gemma"
    shown = " ".join(_cli(state, store, "show", "gemma3:270m").stdout.split())
    assert "from ollama gemma3:270m" in shown and "temperature=0.7" in shown and "You are terse." in shown
    assert "gemma3:270m" in _cli(state, store, "list", "--ollama").stdout.split("gemma3:270m", 1)[1]
    # The same file registered by hand, without the manifest: it shows what the model says unstopped.
    assert _cli(state, store, "add", str(blob_path), "plain", "--chat-format", "gemma", "--ctx", "1024").returncode == 0
    running = Daemon(state, {}, "--no-embedded-model")
    ask = {"prompt": "Repeat after me: STOPWORD STOPWORD STOPWORD", "options": {"temperature": 0, "num_predict": 32}}
    try:
        with ollama.Client(host=running.base_url) as client:
            plain = client.generate(model="plain", **ask)
            stopped = client.generate(model="gemma3:270m", **ask)
    finally:
        running.stop()
    assert "STOPWORD" in plain.response
    assert stopped.done_reason == "stop" and stopped.response == plain.response.split("STOPWORD")[0]


def test_what_cannot_be_registered_says_why(tmp_path, store):
    state = tmp_path / "state"
    unknown = _cli(state, store, "add", "--from-ollama", "llama3.2:3b")
    assert unknown.returncode != 0 and "no Ollama model 'llama3.2:3b'" in unknown.stderr
    assert str(store) in unknown.stderr and "list --ollama" in unknown.stderr
    missing = _cli(state, store, "add", "--from-ollama", "gone")
    assert missing.returncode != 0 and "missing" in missing.stderr and "ollama pull gone:latest" in missing.stderr
    bad = _cli(state, store, "add", "--from-ollama", "../../etc:passwd")
    assert bad.returncode != 0 and "not an Ollama model name" in bad.stderr
    neither = _cli(state, store, "add")
    assert neither.returncode != 0 and "--from-ollama" in neither.stderr
