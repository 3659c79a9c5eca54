"""Hoshikage's own OpenAPI document: served, kept in docs/, and the daemon held to it by schemathesis.

schemathesis generates requests from the document for every operation, valid and invalid ones
(GET operations' query and path parameters too), sends them to the real daemon and checks each
answer: never a 500, only documented statuses and content types, bodies (and each SSE event and
NDJSON line of a stream) that match the documented schemas, schema-valid requests accepted and
invalid ones refused.

Random ids and model names only reach the 404 of a lookup, so part of the examples are pointed at
real things: conversations and responses created for the run, the `gemma` model (generating one
token) and memory's sentence model. Everything is bounded (EXAMPLES per operation and mode, no
shrinking), so it runs on every CI run; the coverage is printed as operations x examples.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from hoshikage.api.openapi import document, render
from tests.conftest import REPO

DOCUMENT = REPO / "docs" / "openapi.json"
EXAMPLES = 100  # per operation and mode
FEWER = {"DELETE /api/delete": 20, "DELETE /v1/conversations/{conversation_id}": 20,  # each forget rewrites the store
         "DELETE /v1/responses/{response_id}": 20, "DELETE /hoshikage/memory/{id}": 20,
         "DELETE /hoshikage/memory": 5}
# Documented as always refused (Ollama's model store): a valid request is a 400 too.
# Ollama's model management (refused, saying how to register a model), and the WebSocket mode's upgrade, which
# no HTTP request generated from a document can complete (426 without Upgrade; test_responses_websocket.py).
ALWAYS_REFUSED = {f"POST /api/{name}" for name in ("pull", "push", "create", "copy")} | {"GET /v1/responses"}
MODEL = "gemma"
# Placeholders: each DELETE gets a conversation or response of its own to forget.
FORGETTABLE = {"conversation_id": "conv_" + "f" * 32, "response_id": "resp_" + "f" * 48, "id": "conv_" + "e" * 32}
COVERED: dict[str, tuple[int, int]] = {}  # mode -> (operations, examples)


@schemathesis.deserializer("application/x-ndjson")
def _ndjson(_context, response) -> list:
    """An Ollama stream as the list of its lines (the document's schema of the whole stream)."""
    return [json.loads(line) for line in response.content.decode("utf-8").splitlines() if line.strip()]


def test_the_served_document_is_the_one_in_docs(daemon):
    served = httpx.get(f"{daemon.base_url}/openapi.json", timeout=30)
    assert served.status_code == 200
    assert served.json() == document()
    assert DOCUMENT.read_text() == render(), (
        "docs/openapi.json is stale; regenerate it with: .venv/bin/python -c "
        "\"from hoshikage.api.openapi import render; print(render(), end='')\" > docs/openapi.json")
    json.loads(DOCUMENT.read_text())


def test_every_route_is_documented():
    import importlib
    import pkgutil

    from aiohttp import web

    import hoshikage.api

    app = web.Application()
    for module in pkgutil.walk_packages(hoshikage.api.__path__, "hoshikage.api."):
        routes = getattr(importlib.import_module(module.name), "setup_routes", None)
        if routes is not None:
            routes(app)
    served = {(route.method, route.resource.canonical) for route in app.router.routes() if route.method != "HEAD"}
    documented = {(method.upper(), path) for path, item in document()["paths"].items() for method in item}
    assert served == documented


@dataclass
class World:
    """Real things for generated requests to reach past the lookups: ids, items, models."""
    base_url: str
    conversations: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    items: dict[str, list[str]] = field(default_factory=dict)  # conversation or response id -> item ids
    sentence_model: str = ""

    def post(self, path: str, body: dict) -> dict:
        answer = httpx.post(f"{self.base_url}{path}", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def item_ids(self, path: str) -> list[str]:
        return [item["id"] for item in httpx.get(f"{self.base_url}{path}?limit=100", timeout=60).json()["data"]]

    @classmethod
    def create(cls, base_url: str) -> World:
        world = cls(base_url)
        world.conversations.append(world.post("/v1/conversations", {"metadata": {"topic": "tea"}, "items": [
            {"role": "user", "content": "Which tea is green?"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Sencha."}]}]})["id"])
        world.conversations.append(world.post("/v1/conversations", {"items": [
            {"role": "developer", "content": "Use the tools."}, {"role": "user", "content": "Weather in Kyoto?"},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\": \"Kyoto\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "Rain."}]})["id"])
        first = world.post("/v1/responses", {"model": MODEL, "input": "Name a tea.", "max_output_tokens": 1})
        second = world.post("/v1/responses", {"model": MODEL, "input": "Another.", "max_output_tokens": 1,
                                              "previous_response_id": first["id"]})
        world.responses += [first["id"], second["id"]]
        world.post("/v1/responses", {"model": MODEL, "input": "And now?", "max_output_tokens": 1,
                                     "conversation": world.conversations[0]})
        for conversation in world.conversations:
            world.items[conversation] = world.item_ids(f"/v1/conversations/{conversation}/items")
        for response in world.responses:
            world.items[response] = world.item_ids(f"/v1/responses/{response}/input_items")
        tags = httpx.get(f"{base_url}/api/tags", timeout=30).json()["models"]
        world.sentence_model = next(model["name"] for model in tags
                                    if model["details"]["format"] == "sentence-transformers").removesuffix(":latest")
        return world

    def disposable_conversation(self) -> str:
        return self.post("/v1/conversations", {"items": "A conversation to forget."})["id"]


def _point_at_real_things(case, world: World, draw, positive: bool) -> None:
    """Aim part of the generated requests at real ids and models; keep what they generate to one token.

    Real ids come with the strategy (_aimed); here a placeholder becomes something to forget, and the
    body of a positive case is pointed at the models. Containers are replaced, not edited in place, so
    schemathesis revalidates whether the case is still a positive one."""
    params = case.path_parameters
    if params.get("conversation_id") == FORGETTABLE["conversation_id"]:
        case.path_parameters = {**params, "conversation_id": world.disposable_conversation()}
    elif params.get("id") == FORGETTABLE["id"]:
        case.path_parameters = {**params, "id": world.disposable_conversation()}
    elif params.get("response_id") == FORGETTABLE["response_id"]:
        case.path_parameters = {**params, "response_id": world.post("/v1/responses", {
            "model": MODEL, "input": "x", "max_output_tokens": 1})["id"]}
    real = next((value for value in params.values() if value in world.items), None)
    if positive and real and (case.query or {}).get("after"):  # an item of that list, or the page is a 400
        case.query = {**case.query, "after": draw(st.sampled_from(world.items[real] or [""]))}
    if (not positive or not isinstance(case.body, dict) or case.path == "/api/delete"
            or not draw(st.booleans())):
        return
    body = json.loads(json.dumps(case.body))
    if "model" in body or "name" in body:
        embedding = "embed" in case.path
        body.pop("name", None)
        body["model"] = world.sentence_model if embedding else MODEL
        dimensions = body.get("dimensions")
        if isinstance(dimensions, (int, float)) and not isinstance(dimensions, bool):
            body["dimensions"] = type(dimensions)(min(dimensions, 384))  # the sentence model's size
        if embedding and isinstance(body.get("input"), list):  # token ids within the sentence model's vocabulary
            body["input"] = [[token % 30000 for token in item] if isinstance(item, list) else
                             item % 30000 if isinstance(item, (int, float)) else item for item in body["input"]]
        body.pop("keep_alive", None)  # never unload the shared model
    if body.get("previous_response_id"):
        body["previous_response_id"] = draw(st.sampled_from(world.responses))
    if isinstance(body.get("conversation"), (str, dict)):
        body["conversation"] = draw(st.sampled_from(world.conversations))
    # Nothing generates more than a token.
    if case.path in ("/v1/chat/completions", "/v1/completions"):
        body.update(max_tokens=1, n=1)
        body.pop("max_completion_tokens", None)
        body.pop("logit_bias", None)
        if isinstance(body.get("prompt"), list) and all(isinstance(token, (int, float)) for token in body["prompt"]):
            body["prompt"] = [int(token) % 1000 for token in body["prompt"]]  # within gemma's vocabulary
    elif case.path == "/v1/responses":
        body["max_output_tokens"] = 1
    elif case.path in ("/api/chat", "/api/generate"):
        body["options"] = {**(body.get("options") or {}), "num_predict": 1}
    case.body = body


def operations(daemon):
    # Loaded from the served text, not from_url: that would leave out the operation it was served by.
    schema = schemathesis.openapi.from_dict(httpx.get(f"{daemon.base_url}/openapi.json", timeout=30).json())
    schema.config.output.sanitization.update(enabled=False)  # reproductions as sent ("max_tokens" is no secret)
    found = [result.ok() for result in schema.get_all_operations()]
    return sorted(found, key=lambda operation: operation.method.upper() == "DELETE")  # forgetting comes last


def _aimed(operation, mode, world: World):
    """OPERATION's cases, half of them with a real id or model in the path (given to schemathesis, so a
    negative case is negative elsewhere)."""
    names = {parameter.name for parameter in operation.path_parameters}
    pools = {"conversation_id": world.conversations, "response_id": world.responses,
             "id": world.conversations + world.responses, "model": [MODEL, world.sentence_model]}
    real = [(name, value) for name in names & pools.keys()
            for value in ([FORGETTABLE[name]] if operation.method.upper() == "DELETE" else pools[name])]
    if not real:
        return operation.as_strategy(mode)
    return st.one_of(operation.as_strategy(mode), st.one_of(
        [operation.as_strategy(mode, path_parameters={name: value}) for name, value in real]))


def _has_inputs(operation) -> bool:
    return bool(operation.path_parameters or operation.query or operation.body)


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda mode: mode.value)
def test_the_daemon_keeps_to_its_document(daemon, mode):
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    world = World.create(daemon.base_url)
    positive = mode is schemathesis.GenerationMode.POSITIVE
    failures, counts, seconds, started = [], {}, {}, time.monotonic()
    for operation in operations(daemon):
        label = operation.label
        if not positive and not _has_inputs(operation):
            continue  # nothing a client could get wrong
        excluded = [positive_data_acceptance] if label in ALWAYS_REFUSED else []
        counts[label], began = 0, time.monotonic()

        @given(case=_aimed(operation, mode, world), data=st.data())
        @settings(max_examples=FEWER.get(label, EXAMPLES), deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def keeps_to_it(case, data):
            counts[label] += 1
            _point_at_real_things(case, world, data.draw, positive)
            response = case.call(base_url=daemon.base_url, timeout=120)
            # A valid request for the real model whose prompt does not fit its context is rightly refused.
            too_long = response.status_code == 400 and "context length" in response.text
            # So is a previous_response_id that names no stored response: 400 previous_response_not_found, as
            # at OpenAI (a document cannot say "an id that exists").
            unknown = response.status_code == 400 and "previous_response_not_found" in response.text
            # Likewise a function_call_output whose call_id answers no function_call before it.
            unknown = unknown or (response.status_code == 400 and "No tool call found" in response.text)
            case.validate_response(response, excluded_checks=excluded + [positive_data_acceptance] * (
                too_long or unknown))

        try:
            keeps_to_it()
        except Unsatisfiable:  # no invalid value exists (GET /v1/models/{model}: any non-empty name)
            del counts[label]
        except (Exception, BaseExceptionGroup) as failure:  # noqa: BLE001 - every operation runs; all are reported
            failures.append(f"{label}: {failure}")
        seconds[label] = time.monotonic() - began
    examples = sum(counts.values())
    print(f"\nschemathesis {mode.value}: {len(counts)} operations x {examples} examples "
          f"({examples / max(1, len(counts)):.0f} per operation) in {time.monotonic() - started:.0f} s")
    for label, count in counts.items():
        print(f"  {label}: {count} examples, {seconds[label]:.1f} s")
    COVERED[mode.value] = (len(counts), examples)
    if len(COVERED) == len(schemathesis.GenerationMode):
        print("schemathesis in all: " + " + ".join(f"{name}: {found} operations x {count} examples"
                                                     for name, (found, count) in COVERED.items()))
    assert not failures, "\n\n".join(failures)
