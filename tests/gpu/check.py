"""The GPU check: Hoshikage on an offloaded model through the real API, then against llama-server.

    python tests/gpu/check.py --model M.gguf --llama-server BIN [--clients 1,4,8,16] [--tokens 128]

Run by tests/gpu/run.sh, which builds llama.cpp (CUDA, or the CPU for a dry run)
and writes the models. Hoshikage loads llama.cpp from LLAMA_CPP_LIB_PATH, the
same build llama-server comes from. Steps, each printed as it passes:
1. The daemon starts, registers the model with the default gpu_layers (auto)
   and reports where it put it: on a GPU every layer must be there.
2. API checks with the OpenAI SDK: chat and completion, streamed and not, n=2,
   logit_bias, a client error (400) after which the daemon still serves.
3. Greedy batch invariance: the same prompt alone and among --clients - 1
   other streams gives the same tokens.
4. The prompt cache (issue 22) with the KV state in VRAM: a long prompt's prefix,
   pushed out of its slot by 16 others, is restored from the host tier; after a
   SIGTERM (saved on the way out) a new daemon restores it from the disk tier;
   both times the greedy answer equals the first one.
5. Throughput: 1/4/8/16 streaming clients (greedy, ignore_eos, --tokens each)
   against Hoshikage with 16 slots and llama-server -np 16, both fully offloaded,
   same context per slot; aggregate tok/s and TTFT with their ratios.
Writes the figures to --report (JSON) and exits non-zero on any failed check.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.bench_concurrency import STORY, measure_level  # noqa: E402
from tests.bench.peers import free_port, llama_server, running, stream_arrivals  # noqa: E402

SLOTS = 16
CONTEXT = 1024  # per slot, both servers


def hoshikage(model: Path, threads: int, state: Path | None = None):
    """A daemon serving MODEL as `bench`; STATE: a state directory to reuse (registered already)."""
    if state is None:
        state = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(state), "add", str(model), "bench",
                        "--ctx", str(CONTEXT), "--chat-format", "chatml"], check=True, cwd=REPO)
    port = free_port()
    command = [sys.executable, "-m", "hoshikage", "--state-dir", str(state), "serve", "--listen",
               f"tcp:127.0.0.1:{port}", "--threads", str(threads), "--slots", str(SLOTS), "--no-embedded-model",
               "--log-level", "warning"]
    return running(command, f"http://127.0.0.1:{port}/health", {"HOSHIKAGE_CONFIG": os.devnull}), port


def check(condition: bool, what: str) -> None:
    print(("ok   " if condition else "FAIL ") + what, flush=True)
    if not condition:
        raise SystemExit(f"GPU check failed: {what}")


def api_checks(port: int, expect_gpu: bool) -> dict:
    import httpx
    import openai

    base = f"http://127.0.0.1:{port}"
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Say something."}]
    chat = client.chat.completions.create(model="bench", messages=messages, max_tokens=16, temperature=0,
                                          extra_body={"ignore_eos": True})
    check(chat.usage.completion_tokens == 16 and chat.choices[0].finish_reason == "length", "chat, 16 tokens")
    model = next(m for m in httpx.get(f"{base}/v1/status").json()["loaded_models"] if m["model"] == "bench")
    placed = {key: model[key] for key in ("device", "gpu_layers", "device_bytes", "host_bytes")}
    print(f"     placed: {placed}")
    if expect_gpu:
        check(model["gpu_layers"] > 0 and model["device"] != "cpu", "gpu_layers auto offloads the model")
    pieces = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model="bench", messages=messages, max_tokens=16, temperature=0, stream=True,
        extra_body={"ignore_eos": True}) if chunk.choices]
    check("".join(pieces) == chat.choices[0].message.content, "streamed chat equals the whole answer")
    two = client.chat.completions.create(model="bench", messages=messages, max_tokens=8, n=2, temperature=1.0,
                                         seed=3, extra_body={"ignore_eos": True})
    check(len(two.choices) == 2 and two.usage.completion_tokens == 16, "n=2")
    completion = client.completions.create(model="bench", prompt=STORY, max_tokens=8, temperature=0,
                                           logit_bias={"300": 100})
    check(completion.usage.completion_tokens == 8 and len(set(completion.choices[0].text.split())) == 1,
          "logit_bias forces one token")
    bad = httpx.post(f"{base}/v1/chat/completions", json={"model": "bench", "messages": messages, "top_p": 7})
    check(bad.status_code == 400 and bad.json()["error"]["param"] == "top_p", "a client error is a 400")
    check(client.models.list().data[0].id == "bench", "the daemon serves on after it")
    return placed


def batch_invariance(port: int, others: int, tokens: int) -> bool:
    prompt = f"Invariance. {STORY}"
    alone = stream_text(port, prompt, tokens)
    with concurrent.futures.ThreadPoolExecutor(others + 1) as pool:
        # The others run four times as long, so they are still generating all the while it does.
        noise = [pool.submit(stream_text, port, f"Other story {index}. {STORY}", 4 * tokens)
                 for index in range(others)]
        wait_for_running(port, others)  # it joins a batch in flight
        together = pool.submit(stream_text, port, prompt, tokens).result()
        for future in noise:
            future.result()
    same = together == alone
    check(same, f"greedy output alone == among {others} other streams ({tokens} tokens)")
    return same


def prompt_cache_round_trip(model: Path, threads: int) -> dict:
    """Step 4: restore from the host tier (slot churn), then from the disk tier (a new process)."""
    import httpx

    state = Path(tempfile.mkdtemp(prefix="gpu-check-cache-"))
    subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(state), "add", str(model), "bench",
                    "--ctx", str(CONTEXT), "--chat-format", "chatml"], check=True, cwd=REPO)
    # ~600 tokens, well past prompt_cache_min_tokens (256), and within CONTEXT.
    long_prompt = "Remember this. " + " ".join(f"Line {line}: {STORY}" for line in range(24))

    def tiers(port: int) -> dict:
        model_status = httpx.get(f"http://127.0.0.1:{port}/v1/status").json()["loaded_models"][0]
        return model_status["prompt_cache"]["tiers"]

    context, port = hoshikage(model, threads, state)
    with context:
        first = stream_text(port, long_prompt, 16)
        for index in range(SLOTS):  # each takes a slot: the long prompt's prefix leaves its own
            stream_text(port, f"Pusher {index}. " + " ".join(f"Line {line}: {STORY}" for line in range(8)), 1)
        again = stream_text(port, long_prompt, 16)
        host = tiers(port)
    check(host["restores"] >= 1 and again == first,
          f"a prefix pushed out of its slot comes back from the host tier, same answer ({host['restores']} restores)")
    context, port = hoshikage(model, threads, state)  # the first one saved its state on SIGTERM
    with context:
        after = stream_text(port, long_prompt, 16)
        disk = tiers(port)
    check(disk["restores"] >= 1 and after == first,
          f"after a restart the prefix comes back from the disk tier, same answer ({disk['restores']} restores)")
    return {"host_restores": host["restores"], "disk_restores": disk["restores"], "disk_bytes": disk["disk"]["bytes"]}


def wait_for_running(port: int, count: int) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while httpx.get(f"http://127.0.0.1:{port}/v1/status").json()["queue"]["running"] < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"GPU check failed: {count} streams never ran together")


def stream_text(port: int, prompt: str, tokens: int) -> str:
    import httpx

    body = {"model": "bench", "prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True}
    return httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=600).json()["choices"][0]["text"]


def throughput(server, clients: list[int], tokens: int) -> list[dict]:
    context, port = server
    serial = [0]
    with context:
        stream_arrivals(port, "Warm up. " + STORY, 8, {"ignore_eos": True})
        levels = [measure_level(port, count, 2, tokens, serial, {"ignore_eos": True}) for count in clients]
    return [level.__dict__ for level in levels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--llama-server", type=Path, required=True)
    parser.add_argument("--clients", default="1,4,8,16")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--cpu", action="store_true", help="a dry run on a CPU build: nothing is offloaded")
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    clients = [int(count) for count in args.clients.split(",")]
    report: dict = {"model": args.model.name, "clients": clients, "tokens": args.tokens}
    server = hoshikage(args.model, args.threads)
    with server[0]:
        report["placed"] = api_checks(server[1], expect_gpu=not args.cpu)
        report["batch_invariant"] = batch_invariance(server[1], min(7, SLOTS - 1), 48)
    report["prompt_cache"] = prompt_cache_round_trip(args.model, args.threads)
    offload = [] if args.cpu else ["-ngl", "999"]
    report["hoshikage"] = throughput(hoshikage(args.model, args.threads), clients, args.tokens)
    report["llama_server"] = throughput(llama_server(args.llama_server, args.model, args.threads, CONTEXT, SLOTS,
                                                     "-fa", "on", *offload), clients, args.tokens)
    print(f"\n{args.model.name}: Hoshikage / llama-server -np {SLOTS} (same build, same model)")
    print("clients  aggregate tok/s (H / L = ratio)        TTFT ms (H / L = ratio)")
    for ours, theirs in zip(report["hoshikage"], report["llama_server"]):
        print(f"{ours['clients']:>7}  {ours['aggregate_tps']:8.1f} / {theirs['aggregate_tps']:8.1f} = "
              f"{ours['aggregate_tps'] / theirs['aggregate_tps']:.2f}x     "
              f"{ours['ttft'] * 1000:7.0f} / {theirs['ttft'] * 1000:7.0f} = {ours['ttft'] / theirs['ttft']:.2f}x")
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
