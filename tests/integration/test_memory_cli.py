"""`hoshikage memory ...` reads and forgets what is on disk, with the daemon's settings."""

from __future__ import annotations

import json
import subprocess
import sys

from hoshikage.memory.store import Store, new_response_id
from tests.conftest import REPO
from tests.integration.test_memory_store import SECRET, _files_containing


def _cli(state_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(state_dir), "memory", *args],
                          capture_output=True, text=True, cwd=REPO, env={"COLUMNS": "200", "PATH": "/usr/bin"})


def _conversation(store: Store, text: str) -> tuple[str, str]:
    info = store.create_conversation({}, implicit=True)
    response_id = new_response_id(info.id)
    report = {"compressed": False, "budget_tokens": 100, "prompt_tokens": 12, "verbatim_positions": [0],
              "summary_sentences": [], "recalled_passages": [], "messages": [{"role": "user", "content": text}]}
    store.append(info.id, [("user", text, {"type": "message", "role": "user"}),
                           ("assistant", "ok", {"type": "message", "role": "assistant"})],
                 {"id": response_id}, None, 1, report)
    return info.id, response_id


def test_list_show_context_and_forget(tmp_path):
    store = Store(tmp_path / "chroma")
    kept, _ = _conversation(store, "hello there")
    secret, secret_response = _conversation(store, f"the vault code is {SECRET}")
    listed = _cli(tmp_path, "list")
    assert listed.returncode == 0 and kept in listed.stdout and secret in listed.stdout
    shown = _cli(tmp_path, "show", secret)
    assert shown.returncode == 0 and SECRET in shown.stdout
    context = _cli(tmp_path, "context", secret_response, "--json")
    assert json.loads(context.stdout)["messages"] == [{"role": "user", "content": f"the vault code is {SECRET}"}]
    assert SECRET in _cli(tmp_path, "context", secret).stdout  # a conversation id: its latest response

    forgotten = _cli(tmp_path, "forget", secret_response)  # a response id forgets its conversation
    assert forgotten.returncode == 0 and secret in forgotten.stdout
    assert _files_containing(tmp_path / "chroma", SECRET.encode()) == []
    assert secret not in _cli(tmp_path, "list").stdout

    missing = _cli(tmp_path, "show", secret)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and secret in missing.stderr
    assert _cli(tmp_path, "forget", "--all").returncode == 0
    assert "nothing remembered" in _cli(tmp_path, "list").stdout


def test_nothing_remembered_yet(tmp_path):
    listed = _cli(tmp_path, "list")
    assert listed.returncode == 0 and "nothing remembered" in listed.stdout
    assert not (tmp_path / "chroma").exists()  # listing creates no store


def test_forget_also_deletes_the_models_saved_kv_state(tmp_path):
    from hoshikage.engine.prompt_cache import PromptCache

    store = Store(tmp_path / "chroma")
    secret, _ = _conversation(store, f"the vault code is {SECRET}")
    kept, _ = _conversation(store, "hello there")
    # What a daemon leaves in its prompt cache (STATE_DIR/prompt-cache without a RAM disk) for each of them.
    saved = PromptCache(tmp_path / "prompt-cache", "gemma-0123", 0, 2**20, 4)
    saved.keep(tuple(range(10)), SECRET.encode() * 4, frozenset({secret}), persist=True)
    saved.keep(tuple(range(100, 110)), b"kept" * 4, frozenset({kept}), persist=True)
    assert len(_files_containing(tmp_path / "prompt-cache", SECRET.encode())) == 1
    assert _cli(tmp_path, "forget", secret).returncode == 0
    assert _files_containing(tmp_path / "prompt-cache", SECRET.encode()) == []
    assert len(list((tmp_path / "prompt-cache").glob("*/*.kv"))) == 1  # the other conversation's stays
    assert _cli(tmp_path, "forget", "--all").returncode == 0
    assert list((tmp_path / "prompt-cache").glob("*/*.kv")) == []
