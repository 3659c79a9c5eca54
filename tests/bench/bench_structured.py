"""Cost of constrained decoding, Hoshikage against llama-server's response_format, in one run.

    .venv/bin/python tests/bench/bench_structured.py [--passes 2]

Both servers get the same 21 JSON Schemas (tests/structured_schemas.py) as
response_format json_schema on /v1/chat/completions, greedy, streamed; and the
same requests without response_format but with as many tokens (ignore_eos), so
a constrained request is compared with an unconstrained one of the same length.
Each is run alone (one client) and with 4 concurrent clients (4 slots on both).
Reported per server: decode tok/s constrained and unconstrained, their ratio
(the cost of the grammar), the aggregate tok/s with 4 clients, and the share
of constrained answers that parse and validate against their schema. Goal:
Hoshikage's constrained throughput >= 0.9 x llama-server's, validity 100 %.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.peers import hoshikage_server, llama_server, model_and_llama_server  # noqa: E402
from tests.structured_schemas import SCHEMAS  # noqa: E402
from hoshikage.hardware import physical_core_count  # noqa: E402

MESSAGES = [{"role": "user", "content": "Answer in JSON."}]
MAX_TOKENS = 160
SLOTS = 4
RESULTS = Path(__file__).with_name("results") / "structured.json"
# One answer the grammar allows, so both servers decode the same text: their cost per constrained token
# compares directly (the free schemas above give each server's model different answers).
FORCED = {"type": "object", "properties": {"story": {"const": (
    "Once upon a time a lighthouse keeper counted ships every night and wrote their names in a blue book "
    "that nobody else ever read, until one winter a child found it")}}, "required": ["story"]}


def request(port: int, body: dict) -> dict:
    """One streamed chat completion: its text, completion tokens and decode tok/s (first to last token)."""
    body = {"model": "bench", "messages": MESSAGES, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, **body}
    arrivals, parts, usage = [], [], None
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    arrivals.append(time.perf_counter())
                    parts.append(choice["delta"]["content"])
    tokens = usage["completion_tokens"] if usage else len(arrivals)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    return {"text": "".join(parts), "tokens": tokens, "decode_tps": (tokens - 1) / span if span else float("nan")}


def constrained(schema: dict, index: int) -> dict:
    return {"max_tokens": MAX_TOKENS,
            "response_format": {"type": "json_schema", "json_schema": {"name": f"s{index}", "schema": schema,
                                                                       "strict": True}}}


def valid(text: str, schema: dict) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def measure(port: int) -> dict:
    alone = [request(port, constrained(schema, index)) for index, schema in enumerate(SCHEMAS)]
    lengths = [max(answer["tokens"], 2) for answer in alone]
    free = [request(port, {"max_tokens": length, "ignore_eos": True}) for length in lengths]
    jobs = [constrained(schema, index) for index, schema in enumerate(SCHEMAS)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(SLOTS) as pool:
        together = list(pool.map(lambda body: request(port, body), jobs))
    wall = time.perf_counter() - started
    answers = alone + together
    forced = [request(port, constrained(FORCED, 99)) for _ in range(3)]
    return {
        "forced_text_decode_tps": statistics.median(a["decode_tps"] for a in forced),
        "forced_text_tokens": forced[0]["tokens"],
        "constrained_decode_tps": statistics.median(a["decode_tps"] for a in alone if a["tokens"] > 1),
        "unconstrained_decode_tps": statistics.median(a["decode_tps"] for a in free if a["tokens"] > 1),
        "constrained_aggregate_tps_4_clients": sum(a["tokens"] for a in together) / wall,
        "validity": sum(valid(a["text"], SCHEMAS[i % len(SCHEMAS)]) for i, a in enumerate(answers)) / len(answers),
        "mean_tokens": statistics.mean(lengths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=physical_core_count())
    args = parser.parse_args()
    model, binary = model_and_llama_server()
    runs: dict[str, list[dict]] = {"hoshikage": [], "llama-server": []}
    for _ in range(args.passes):
        server, port = hoshikage_server(model, args.threads, 2048, slots=SLOTS)
        with server:
            runs["hoshikage"].append(measure(port))
        # The same chat format on both sides: the GGUF carries no template, Hoshikage uses gemma's.
        server, port = llama_server(binary, model, args.threads, 2048, SLOTS, "--chat-template", "gemma")
        with server:
            runs["llama-server"].append(measure(port))
    results = {name: {key: statistics.median(run[key] for run in passes) for key in passes[0]}
               for name, passes in runs.items()}
    for name, figures in results.items():
        print(f"{name:<13} constrained {figures['constrained_decode_tps']:6.1f} tok/s, unconstrained "
              f"{figures['unconstrained_decode_tps']:6.1f} tok/s (grammar cost "
              f"{figures['constrained_decode_tps'] / figures['unconstrained_decode_tps']:.2f}x); 4 clients "
              f"{figures['constrained_aggregate_tps_4_clients']:6.1f} tok/s; valid {figures['validity'] * 100:.0f} %; "
              f"{figures['mean_tokens']:.0f} tokens per answer; the same forced text: "
              f"{figures['forced_text_decode_tps']:6.1f} tok/s ({figures['forced_text_tokens']:.0f} tokens)")
    ours, peer = results["hoshikage"], results["llama-server"]
    for key, label in (("forced_text_decode_tps", "the same constrained text, 1 client"),
                       ("constrained_decode_tps", "constrained, 1 client"),
                       ("constrained_aggregate_tps_4_clients", "constrained, 4 clients")):
        print(f"hoshikage / llama-server, {label}: {ours[key] / peer[key]:.2f}x (goal >= 0.9)")
    RESULTS.write_text(json.dumps({"passes": args.passes, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
