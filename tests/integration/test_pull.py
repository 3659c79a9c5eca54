"""`hoshikage pull` against a local stand-in for the hub (HF_ENDPOINT; the real hub cannot be reached from
here): the file llama-server's -hf would pick, split models, a download stopped with Ctrl-C that resumes, a
corrupted one that fails its sha256, a gated repository, and a pulled model served."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from tests.conftest import REPO, Daemon, write_tiny_gguf
from tests.fake_hub import FakeHub, Repo


@pytest.fixture
def hub(tmp_path):
    made = tmp_path / "made"
    made.mkdir()

    def gguf(name: str, architecture: str = "llama") -> bytes:
        return write_tiny_gguf(made / name.replace("/", "_"), architecture=architecture).read_bytes()

    running = FakeHub()
    running.repos["someone/Tiny-GGUF"] = Repo(files={
        "README.md": b"# tiny\n", "mmproj-tiny-Q4_K_M.gguf": gguf("mmproj"), "tiny-Q8_0.gguf": gguf("q8", "qwen2"),
        "tiny-Q4_K_M.gguf": gguf("q4"), "tiny-Q5_K_M.gguf": gguf("q5") + b"\0" * 300_000})
    running.repos["someone/Split-GGUF"] = Repo(files={
        "Q4_0/split-Q4_0-00001-of-00002.gguf": gguf("part1"), "Q4_0/split-Q4_0-00002-of-00002.gguf": b"\1" * 5000})
    running.repos["someone/Sly-GGUF"] = Repo(files={"../../escape-Q4_K_M.gguf": gguf("sly")})
    running.repos["someone/Fake-GGUF"] = Repo(files={"fake-Q4_K_M.gguf": b"not a GGUF file at all"})
    running.repos["someone/Gated-GGUF"] = Repo(files={"gated-Q8_0.gguf": gguf("gated")}, token="hf_secret")
    yield running
    running.close()


def pull(state, hub: FakeHub, *args: str, env=None, wait=True):
    command = [sys.executable, "-m", "hoshikage", "--state-dir", str(state), "pull", *args]
    inherited = {key: value for key, value in os.environ.items() if key != "HF_TOKEN"}
    env = {**inherited, "HF_ENDPOINT": hub.url, "HF_HOME": str(state / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1",
           **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def registry(state) -> dict:
    path = state / "models.json"
    return json.loads(path.read_text())["models"] if path.exists() else {}


def test_without_a_tag_q4_k_m_is_pulled_checked_registered_and_removed_whole(tmp_path, hub):
    done = pull(tmp_path, hub, "someone/Tiny-GGUF")
    assert done.returncode == 0, done.stderr
    entry = registry(tmp_path)["tiny"]
    path = tmp_path / "models/hf/someone--Tiny-GGUF/tiny-Q4_K_M.gguf"
    assert entry["path"] == str(path) and entry["imported"]
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(
        hub.repos["someone/Tiny-GGUF"].files["tiny-Q4_K_M.gguf"]).digest()
    assert entry["origin"]["huggingface"] == "someone/Tiny-GGUF" and entry["gguf"]["architecture"] == "llama"
    shown = subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(tmp_path), "show", "tiny"],
                           cwd=REPO, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}).stdout
    assert "from hugging face someone/Tiny-GGUF at 0123456789abcdef" in " ".join(shown.split())
    removed = subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(tmp_path), "remove", "tiny"],
                             cwd=REPO, capture_output=True, text=True)
    assert removed.returncode == 0 and not path.exists()


@pytest.mark.parametrize(("reference", "alias", "file"), [
    ("someone/Tiny-GGUF:Q8_0", "tiny:q8_0", "tiny-Q8_0.gguf"),
    ("someone/Tiny-GGUF:q5_k_m", "tiny:q5_k_m", "tiny-Q5_K_M.gguf"),  # the tag's case does not matter
    ("someone/Tiny-GGUF/tiny-Q8_0.gguf", "tiny:q8_0", "tiny-Q8_0.gguf"),
])
def test_a_tag_or_a_file_picks_it(tmp_path, hub, reference, alias, file):
    done = pull(tmp_path, hub, reference)
    assert done.returncode == 0, done.stderr
    assert registry(tmp_path)[alias]["path"].endswith("/" + file)


def test_a_split_model_comes_whole_and_is_registered_by_its_first_part(tmp_path, hub):
    done = pull(tmp_path, hub, "someone/Split-GGUF:Q4_0", "split")
    assert done.returncode == 0, done.stderr
    entry = registry(tmp_path)["split"]
    assert entry["path"].endswith("Q4_0/split-Q4_0-00001-of-00002.gguf")
    parts = entry["origin"]["files"]
    assert len(parts) == 2 and all(os.path.exists(path) for path in parts)
    subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(tmp_path), "remove", "split"], cwd=REPO,
                   check=True, capture_output=True)
    assert not any(os.path.exists(path) for path in parts)


def test_a_pull_stopped_with_ctrl_c_resumes_where_it_stopped(tmp_path, hub):
    hub.repos["someone/Tiny-GGUF"].stall_after["tiny-Q5_K_M.gguf"] = 100_000
    stopped = pull(tmp_path, hub, "someone/Tiny-GGUF:Q5_K_M", wait=False)
    assert hub.stalled.wait(120)  # 100,000 bytes are on their way; the rest is held until the test says
    partial = tmp_path / "models/hf/someone--Tiny-GGUF/tiny-Q5_K_M.gguf.partial"
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size == 100_000):  # on disk: the pull is mid-transfer
        assert time.monotonic() < deadline and stopped.poll() is None
        time.sleep(0.05)
    stopped.send_signal(signal.SIGINT)
    _, stderr = stopped.communicate(timeout=60)
    hub.release.set()
    assert stopped.returncode != 0 and "run the same pull again" in stderr and "tiny:q5_k_m" not in registry(tmp_path)
    resumed = pull(tmp_path, hub, "someone/Tiny-GGUF:Q5_K_M")
    assert resumed.returncode == 0, resumed.stderr
    assert hub.ranges[-1] == "bytes=100000-"  # only the rest was asked for
    path = Path(registry(tmp_path)["tiny:q5_k_m"]["path"])
    assert path.read_bytes() == hub.repos["someone/Tiny-GGUF"].files["tiny-Q5_K_M.gguf"]


def test_a_corrupted_download_fails_its_checksum_and_is_not_registered(tmp_path, hub):
    hub.repos["someone/Tiny-GGUF"].corrupt.add("tiny-Q8_0.gguf")
    failed = pull(tmp_path, hub, "someone/Tiny-GGUF:Q8_0")
    assert failed.returncode == 1 and "does not match its sha256" in failed.stderr
    assert registry(tmp_path) == {}
    assert not (tmp_path / "models/hf/someone--Tiny-GGUF/tiny-Q8_0.gguf").exists()


def test_a_gated_repository_needs_hf_token(tmp_path, hub):
    refused = pull(tmp_path, hub, "someone/Gated-GGUF")
    assert refused.returncode == 1 and "HF_TOKEN" in refused.stderr
    allowed = pull(tmp_path, hub, "someone/Gated-GGUF", env={"HF_TOKEN": "hf_secret"})
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize(("reference", "message"), [
    ("someone/Tiny-GGUF:IQ2_XS", "no model file for 'IQ2_XS'"),
    ("someone/Nothing-GGUF", "no repository someone/Nothing-GGUF"),
    ("just-a-name", "is not USER/REPO"),
    ("someone/Fake-GGUF", "GGUF"),
    ("someone/Sly-GGUF", "would land outside"),  # a listing is not trusted with paths  # what the hub calls a GGUF file is checked as hoshikage add checks it
])
def test_what_cannot_be_pulled_says_why(tmp_path, hub, reference, message):
    failed = pull(tmp_path, hub, reference)
    assert failed.returncode == 1 and message in failed.stderr, failed.stderr
    assert not list(tmp_path.glob("models/hf/*/*.gguf"))  # nothing useless is left behind
    if "IQ2_XS" in reference:
        assert "tiny-Q4_K_M.gguf" in failed.stderr and "mmproj" not in failed.stderr  # what there is instead


def test_a_pulled_model_is_served(tmp_path, hub, gemma_path):
    hub.repos["google/gemma-3-270m-GGUF"] = Repo(files={"gemma-3-270m-Q4_K_M.gguf": gemma_path.read_bytes()})
    done = pull(tmp_path, hub, "google/gemma-3-270m-GGUF", "gemma", "--ctx", "1024")
    assert done.returncode == 0, done.stderr
    running = Daemon(tmp_path, {}, "--no-embedded-model")
    try:
        with openai.OpenAI(base_url=f"{running.base_url}/v1", api_key="unused", max_retries=0) as client:
            answer = client.chat.completions.create(model="gemma", max_tokens=4,
                                                    messages=[{"role": "user", "content": "Hello"}])
    finally:
        running.stop()
    assert answer.usage.completion_tokens >= 1
