"""A soak: many mixed requests through one running daemon, with its memory, descriptors and threads sampled.

The mix: chat and completion requests answered whole or streamed, streams the
client abandons after the first chunk, and client mistakes (malformed JSON,
an unknown model, a bad parameter); WORKERS clients at once. Every request
must get the status its kind expects. Used by tests/integration/test_soak.py
(a short one on every CI run) and tests/bench/bench_soak.py (the full one).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import random
import threading
import time
from pathlib import Path

import httpx

CHAT = "/v1/chat/completions"


@dataclasses.dataclass
class Sample:
    requests: int  # answered so far
    seconds: float
    rss_kib: int
    descriptors: int
    threads: int


@dataclasses.dataclass
class SoakReport:
    requests: int
    unexpected: list[str]  # "kind: status" of every request that did not get what its kind expects
    samples: list[Sample]

    @property
    def second_half_growth(self) -> float:
        """How much resident memory grew over the second half: (highest after the middle - middle) / middle."""
        middle = self.samples[len(self.samples) // 2]
        return max(sample.rss_kib for sample in self.samples[len(self.samples) // 2:]) / middle.rss_kib - 1

    def table(self) -> str:
        lines = [f"{'requests':>9}{'seconds':>9}{'RSS MiB':>9}{'fds':>6}{'threads':>8}"]
        lines += [f"{s.requests:>9}{s.seconds:>9.1f}{s.rss_kib / 1024:>9.1f}{s.descriptors:>6}{s.threads:>8}"
                  for s in self.samples]
        return "\n".join(lines)


def process_sample(pid: int, requests: int, started: float) -> Sample:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return Sample(requests, time.monotonic() - started, int(status["VmRSS"].split()[0]),
                  len(list(Path(f"/proc/{pid}/fd").iterdir())), int(status["Threads"]))


def one_request(http: httpx.Client, model: str, rng: random.Random) -> tuple[str, int, set[int]]:
    """Send one request of a kind drawn from the mix; return (kind, status, expected statuses)."""
    kind = rng.choices(["chat", "stream", "abandon", "completion", "malformed", "unknown", "invalid", "models"],
                       weights=[30, 25, 10, 10, 7, 6, 7, 5])[0]
    chat = {"model": model, "messages": [{"role": "user", "content": f"Say {rng.randrange(10**6)}."}],
            "max_tokens": rng.randint(1, 4), "temperature": rng.choice([0, 0.7, 1.0]), "seed": rng.randrange(100)}
    if kind == "chat":
        return kind, http.post(CHAT, json=chat).status_code, {200}
    if kind in ("stream", "abandon"):
        with http.stream("POST", CHAT, json={**chat, "stream": True, "max_tokens": 8}) as response:
            for line in response.iter_lines():
                if kind == "abandon" and line.startswith("data:"):
                    break  # closing the response mid-stream: the client is gone
            return kind, response.status_code, {200}
    if kind == "completion":
        body = {"model": model, "prompt": f"Number {rng.randrange(10**6)} is", "max_tokens": rng.randint(1, 4)}
        return kind, http.post("/v1/completions", json=body).status_code, {200}
    if kind == "malformed":
        return kind, http.post(CHAT, content=b'{"model": "' + model.encode() + b'", "messages": [',
                               headers={"Content-Type": "application/json"}).status_code, {400}
    if kind == "unknown":
        return kind, http.post(CHAT, json={**chat, "model": "no-such-model"}).status_code, {404}
    if kind == "invalid":
        return kind, http.post(CHAT, json={**chat, "temperature": 5}).status_code, {400}
    return kind, http.get("/v1/models").status_code, {200}


class NewerSurfaces:
    """The mix over the newer surfaces (issue 21): Responses chains and streams, conversations created and
    forgotten, compaction, structured output with ever new schemas, embeddings, Ollama's chat, and their
    client mistakes. Remembers a few recent response and conversation ids to continue and forget."""

    def __init__(self, sentence_model: str):
        self.sentence_model = sentence_model
        self.lock = threading.Lock()
        self.responses: list[str] = []
        self.conversations: list[str] = []

    def remember(self, kept: list[str], some_id: str) -> None:
        with self.lock:
            kept.append(some_id)
            del kept[:-32]

    def pick(self, kept: list[str], rng: random.Random, take: bool = False) -> str | None:
        with self.lock:
            if not kept:
                return None
            index = rng.randrange(len(kept))
            return kept.pop(index) if take else kept[index]

    def __call__(self, http: httpx.Client, model: str, rng: random.Random) -> tuple[str, int, set[int]]:
        kind = rng.choices(["respond", "continue", "respond-stream", "conversation", "forget", "items",
                            "compact", "schema", "embed", "ollama", "ollama-stream", "mistake"],
                           weights=[12, 10, 8, 8, 5, 5, 4, 14, 10, 8, 6, 10])[0]
        words = f"My number is {rng.randrange(10**6)}."
        if kind in ("respond", "continue", "respond-stream"):
            body = {"model": model, "input": words, "max_output_tokens": rng.randint(1, 4)}
            if kind == "continue" and (previous := self.pick(self.responses, rng)):
                body["previous_response_id"] = previous
            if kind == "respond-stream":
                with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as response:
                    tail = [line for line in response.iter_lines() if line.startswith("event: ")][-1:]
                    ok = response.status_code == 200 and tail in (["event: response.completed"],
                                                                 ["event: response.incomplete"])
                    return kind, 200 if ok else f"{response.status_code} {tail}", {200}
            answer = http.post("/v1/responses", json=body)
            if answer.status_code == 200:
                self.remember(self.responses, answer.json()["id"])
            # A chain whose response was forgotten with its conversation meanwhile is a 404: not a failure.
            return kind, answer.status_code, {200, 404} if "previous_response_id" in body else {200}
        if kind == "conversation":
            answer = http.post("/v1/conversations", json={"metadata": {"n": str(rng.randrange(100))},
                                                          "items": [{"role": "user", "content": words}]})
            if answer.status_code == 200:
                self.remember(self.conversations, answer.json()["id"])
            return kind, answer.status_code, {200}
        if kind == "forget":
            conversation = self.pick(self.conversations, rng, take=True)
            if conversation is None:
                return kind, 200, {200}
            return kind, http.delete(f"/v1/conversations/{conversation}").status_code, {200}
        if kind == "items":
            conversation = self.pick(self.conversations, rng)
            if conversation is None:
                return kind, 200, {200}
            added = http.post(f"/v1/conversations/{conversation}/items", json={"items": [
                {"type": "message", "role": "user", "content": words}]})
            listed = http.get(f"/v1/conversations/{conversation}/items", params={"limit": rng.randint(1, 100)})
            return kind, max(added.status_code, listed.status_code), {200, 404}  # forgotten meanwhile
        if kind == "compact":
            previous = self.pick(self.responses, rng)
            body = {"model": model, "input": words, **({"previous_response_id": previous} if previous else {})}
            return kind, http.post("/v1/responses/compact", json=body).status_code, {200, 404}
        if kind == "schema":  # a schema never seen before: a new grammar each time
            schema = {"type": "object", "properties": {
                f"field{rng.randrange(1000)}": {"type": "string", "maxLength": rng.randint(1, 12)},
                "count": {"type": "integer", "minimum": 0, "maximum": rng.randint(1, 999)},
                "kind": {"enum": [f"k{rng.randrange(100)}" for _ in range(rng.randint(1, 8))]}},
                "additionalProperties": False}
            body = {"model": model, "messages": [{"role": "user", "content": words}], "max_tokens": 6,
                    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
            return kind, http.post(CHAT, json=body).status_code, {200}
        if kind == "embed":
            inputs = [f"{words} {index}" for index in range(rng.randint(1, 8))]
            return kind, http.post("/v1/embeddings", json={"model": self.sentence_model, "input": inputs}).status_code, {200}
        if kind in ("ollama", "ollama-stream"):
            body = {"model": model, "messages": [{"role": "user", "content": words}], "stream": kind != "ollama",
                    "options": {"num_predict": rng.randint(1, 4)}, **({"format": "json"} if rng.random() < 0.3 else {})}
            with http.stream("POST", "/api/chat", json=body) as response:
                lines = [json.loads(line) for line in response.iter_lines() if line]
                ok = response.status_code == 200 and lines and lines[-1].get("done") is True
                return kind, 200 if ok else f"{response.status_code} {lines[-1:]}", {200}
        mistake = rng.choice([
            (b'{"model":"%s","input":"a\\ud800"}' % model.encode(), "/v1/responses"),
            (b'{"model":"%s","input":"Hi","text":{"format":{"type":"json_schema","name":"x","schema":{"anyOf":5}}}}'
             % model.encode(), "/v1/responses"),
            (b'{"model":"%s","input":"Hi","previous_response_id":"resp_nothing"}' % model.encode(), "/v1/responses"),
            (b'{"model":"%s","input":[' % model.encode(), "/v1/embeddings"),
        ])
        answer = http.post(mistake[1], content=mistake[0], headers={"Content-Type": "application/json"})
        return kind, answer.status_code, {400, 404}


def soak(base_url: str, pid: int, model: str, requests: int, workers: int = 4, samples: int = 20,
         seed: int = 0, mix=None) -> SoakReport:
    """MIX(http, model, rng) sends one request (default: one_request, chat and completions)."""
    mix = mix or one_request
    started = time.monotonic()
    lock = threading.Lock()
    done = [0]
    unexpected: list[str] = []
    taken: list[Sample] = [process_sample(pid, 0, started)]
    every = max(1, requests // samples)

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        with httpx.Client(base_url=base_url, timeout=120) as http:
            while True:
                with lock:
                    if done[0] >= requests:
                        return
                    done[0] += 1
                    number = done[0]
                try:
                    kind, status, expected = mix(http, model, rng)
                except httpx.HTTPError as error:
                    kind, status, expected = "connection", type(error).__name__, set()
                with lock:
                    if status not in expected:
                        unexpected.append(f"{kind}: {status}")
                    if number % every == 0:
                        taken.append(process_sample(pid, number, started))

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(worker, index) for index in range(workers)]:
            future.result()
    taken.append(process_sample(pid, requests, started))
    return SoakReport(requests, unexpected, sorted(taken, key=lambda sample: sample.requests))


def report_json(report: SoakReport) -> str:
    return json.dumps({"requests": report.requests, "unexpected": report.unexpected,
                       "second_half_growth": report.second_half_growth,
                       "samples": [dataclasses.asdict(sample) for sample in report.samples]}, indent=2)
