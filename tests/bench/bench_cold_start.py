"""Cold start: nothing running -> first token, Hoshikage (socket-activated) against llama-server.

    .venv/bin/python tests/bench/bench_cold_start.py [--runs 3]   (as root, for the page-cache runs)

Hoshikage is started the way systemd starts it: the sockets are held (by
tests/activation.py's stand-in for systemd) and the first connection execs the
daemon, which loads the model, answers and exits when idle. llama-server is
timed from process start to its first token (it answers 503 while loading, so
the client polls /health every 10 ms). Each kind is measured with a warm page
cache and, as root, with the page cache dropped; and Hoshikage once more with
the model in a tmpfs RAM disk, which dropping the page cache does not empty.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.activation import Activator  # noqa: E402
from tests.bench.peers import free_port, model_and_llama_server, no_repack  # noqa: E402
from hoshikage.hardware import physical_core_count  # noqa: E402

PROMPT = "Once upon a time"


def drop_page_cache() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def first_token(url: str, headers: dict | None = None) -> float:
    """Seconds until the first streamed token of a completion at URL (the clock starts earlier)."""
    body = {"model": "bench", "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "stream": True}
    with httpx.stream("POST", url, json=body, timeout=300, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0].get("text"):
                return time.perf_counter()
    raise RuntimeError("no token streamed")


def llama_server_cold(binary: Path, model: Path, threads: int, drop: bool) -> float:
    if drop:
        drop_page_cache()
    port = free_port()
    plain_weights = no_repack()  # asked before the clock starts: it loads llama.cpp in this process
    started = time.perf_counter()
    process = subprocess.Popen([str(binary), "-m", str(model), "-t", str(threads), "-c", "2048",
                                "--port", str(port), "--host", "127.0.0.1", *plain_weights],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:  # llama-server says 503 until the model is loaded: nothing to wait on but polling
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        return first_token(f"http://127.0.0.1:{port}/v1/completions") - started
    finally:
        process.terminate()
        process.wait()


def hoshikage_cold(activator: Activator, drop: bool) -> float:
    if drop:
        drop_page_cache()
    assert not activator.daemon_running()
    started = time.perf_counter()
    elapsed = first_token(f"http://127.0.0.1:{activator.port}/v1/completions") - started
    activator.current.wait(60)  # idle exit (1 s) before the next run
    while not activator.current or activator.current.poll() is not None:
        time.sleep(0.01)  # the stand-in re-arms systemd-socket-activate
    return elapsed


def hoshikage_activator(model: Path, threads: int, ramdisk: Path | None) -> Activator:
    state = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(state), "add", str(model), "bench",
                    "--ctx", "2048", "--chat-format", "gemma"], check=True, capture_output=True,
                   env={**os.environ, "HOSHIKAGE_CONFIG": os.devnull})
    env = {"HOSHIKAGE_CONFIG": os.devnull, "HOSHIKAGE_THREADS": str(threads),
           "HOSHIKAGE_RAMDISK_PATH": str(ramdisk or state / "no-ramdisk"), "HOSHIKAGE_LOG_LEVEL": "warning"}
    return Activator(state, "--idle-timeout", "1", env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=physical_core_count())
    args = parser.parse_args()
    model, binary = model_and_llama_server()
    root = os.geteuid() == 0
    results: dict[str, float] = {}

    def measure(name: str, once) -> None:
        results[name] = statistics.median(once() for _ in range(args.runs))
        print(f"{name:<46}{results[name] * 1000:>9.0f} ms", flush=True)

    measure("llama-server, warm page cache", lambda: llama_server_cold(binary, model, args.threads, False))
    activator = hoshikage_activator(model, args.threads, None)
    try:
        measure("hoshikage (socket-activated), warm page cache", lambda: hoshikage_cold(activator, False))
        if root:
            measure("llama-server, page cache dropped", lambda: llama_server_cold(binary, model, args.threads, True))
            measure("hoshikage, page cache dropped (model on disk)", lambda: hoshikage_cold(activator, True))
    finally:
        activator.stop()
    if root:
        ramdisk = Path(tempfile.mkdtemp(prefix="bench-ramdisk-"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1G", "tmpfs", str(ramdisk)], check=True)
        activator = hoshikage_activator(model, args.threads, ramdisk)
        try:
            hoshikage_cold(activator, False)  # the first start stages the model into the RAM disk
            measure("hoshikage, page cache dropped (model in RAM disk)", lambda: hoshikage_cold(activator, True))
        finally:
            activator.stop()
            subprocess.run(["umount", str(ramdisk)], check=True)

    print()
    print(f"cold start, hoshikage / llama-server (warm cache): "
          f"{results['hoshikage (socket-activated), warm page cache'] / results['llama-server, warm page cache']:.2f}x"
          " (goal <= 0.8)")
    if root:
        print(f"cold start, hoshikage / llama-server (cache dropped): "
              f"{results['hoshikage, page cache dropped (model on disk)'] / results['llama-server, page cache dropped']:.2f}x")
        print(f"RAM disk: cold start with the page cache dropped, tmpfs / disk: "
              f"{results['hoshikage, page cache dropped (model in RAM disk)'] / results['hoshikage, page cache dropped (model on disk)']:.2f}x")


if __name__ == "__main__":
    main()
