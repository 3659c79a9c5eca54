"""Every client mistake gets an OpenAI-shaped error with the right status, and the daemon stays healthy."""

from __future__ import annotations

import httpx
import pytest

GOOD = {"model": "gemma", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
LONG_TEXT = "stars and moonlight " * 1500  # ~4500 tokens, beyond the daemon's 2048 context


def _chat(**changes):
    body = {**GOOD, **changes}
    return {key: value for key, value in body.items() if value is not ...}


CASES = [
    # (id, method, path, kwargs, status, param, code)
    ("malformed-json", "POST", "/v1/chat/completions", {"content": b"{not json"}, 400, None, None),
    ("body-not-object", "POST", "/v1/chat/completions", {"json": [1, 2]}, 400, None, None),
    ("missing-model", "POST", "/v1/chat/completions", {"json": _chat(model=...)}, 400, "model", None),
    ("missing-messages", "POST", "/v1/chat/completions", {"json": _chat(messages=...)}, 400, "messages", None),
    ("empty-messages", "POST", "/v1/chat/completions", {"json": _chat(messages=[])}, 400, "messages", None),
    ("bad-role", "POST", "/v1/chat/completions",
     {"json": _chat(messages=[{"role": "wizard", "content": "x"}])}, 400, "messages[0].role", None),
    ("image-part", "POST", "/v1/chat/completions",
     {"json": _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])},
     400, "messages[0].content[0]", None),
    ("temperature-range", "POST", "/v1/chat/completions", {"json": _chat(temperature=3)}, 400, "temperature", None),
    ("temperature-type", "POST", "/v1/chat/completions", {"json": _chat(temperature="hot")}, 400, "temperature", None),
    ("max-tokens-zero", "POST", "/v1/chat/completions", {"json": _chat(max_tokens=0)}, 400, "max_tokens", None),
    ("stop-type", "POST", "/v1/chat/completions", {"json": _chat(stop=5)}, 400, "stop", None),
    ("stream-options-without-stream", "POST", "/v1/chat/completions",
     {"json": _chat(stream_options={"include_usage": True})}, 400, "stream_options", None),
    ("logit-bias-outside-vocabulary", "POST", "/v1/chat/completions",
     {"json": _chat(logit_bias={"999999999": 1})}, 400, "logit_bias", None),
    ("tool-schema-unenforceable", "POST", "/v1/chat/completions",
     {"json": _chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"not": {}}}}])}, 400,
     "tools[0].function.parameters", "unsupported_schema"),
    ("functions-unsupported", "POST", "/v1/chat/completions",
     {"json": _chat(functions=[{"name": "f"}])}, 400, "functions", "unsupported_parameter"),
    ("n-zero", "POST", "/v1/chat/completions", {"json": _chat(n=0)}, 400, "n", None),
    ("n-beyond-slots", "POST", "/v1/chat/completions", {"json": _chat(n=99)}, 400, "n", None),
    ("n-beyond-slots-stream", "POST", "/v1/chat/completions", {"json": _chat(n=99, stream=True)}, 400, "n", None),
    ("unknown-model", "POST", "/v1/chat/completions", {"json": _chat(model="nope")}, 404, "model", "model_not_found"),
    ("unknown-model-stream", "POST", "/v1/chat/completions", {"json": _chat(model="nope", stream=True)},
     404, "model", "model_not_found"),
    ("context-exceeded", "POST", "/v1/chat/completions",
     {"json": _chat(messages=[{"role": "user", "content": LONG_TEXT}])}, 400, "messages", "context_length_exceeded"),
    ("context-exceeded-stream", "POST", "/v1/chat/completions",
     {"json": _chat(messages=[{"role": "user", "content": LONG_TEXT}], stream=True)},
     400, "messages", "context_length_exceeded"),
    ("completion-context-exceeded", "POST", "/v1/completions",
     {"json": {"model": "gemma", "prompt": LONG_TEXT}}, 400, "prompt", "context_length_exceeded"),
    ("completion-bad-token-id", "POST", "/v1/completions",
     {"json": {"model": "gemma", "prompt": [1, 2, 10**9]}}, 400, "prompt", None),
    ("body-too-large", "POST", "/v1/chat/completions", {"content": b"x" * (2 * 1024 * 1024)}, 413, None, None),
    ("wrong-method", "GET", "/v1/chat/completions", {}, 405, None, None),
    ("unknown-url", "GET", "/v1/nothing-here", {}, 404, None, None),
]


@pytest.mark.parametrize("method,path,kwargs,status,param,code",
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_client_mistake(daemon, method, path, kwargs, status, param, code):
    with httpx.Client(base_url=daemon.base_url, timeout=60) as http:
        response = http.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["message"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
        if code is not None:
            assert error["code"] == code
        # The daemon is still healthy and serves the next good request.
        follow_up = http.post("/v1/chat/completions", json=GOOD)
        assert follow_up.status_code == 200, follow_up.text
    assert daemon.process.poll() is None


def test_wrong_method_names_allowed_method(daemon):
    response = httpx.get(f"{daemon.base_url}/v1/completions")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_unknown_fields_are_ignored(daemon):
    response = httpx.post(f"{daemon.base_url}/v1/chat/completions", timeout=60,
                          json={**GOOD, "repetition_penalty": 1.1, "mirostat": 2, "cache_prompt": True})
    assert response.status_code == 200, response.text
