"""The real OpenAI SDK against a real daemon on the real gemma model, over TCP and unix."""

from __future__ import annotations


import httpx
import openai
import pytest

from tests.schema import assert_valid

MESSAGES = [{"role": "user", "content": "Tell me a long story about the stars."}]


def test_chat_completion(client):
    response = client.chat.completions.create(model="gemma", messages=MESSAGES, max_tokens=12,
                                              temperature=0)
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in {"stop", "length"}
    assert response.usage.completion_tokens <= 12
    assert response.usage.prompt_tokens > 5
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    assert_valid("CreateChatCompletionResponse", response.model_dump(mode="json", exclude_unset=True))


def test_stream_first_chunk_arrives_before_generation_ends(client, daemon):
    # ignore_eos: it cannot end before max_tokens, far more than the few tokens read here.
    stream = client.chat.completions.create(model="gemma", messages=MESSAGES, max_tokens=1000, temperature=0,
                                            stream=True, extra_body={"ignore_eos": True})
    pieces = []
    with stream:
        for chunk in stream:
            assert_valid("CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True))
            assert chunk.choices[0].finish_reason is None
            if chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
                # Each piece arrives while the generation is still running, not buffered until its end.
                assert httpx.get(f"{daemon.base_url}/v1/status").json()["queue"]["running"] == 1
            if len(pieces) == 4:
                break


def test_stream_include_usage(client):
    chunks = list(client.chat.completions.create(
        model="gemma", messages=MESSAGES, max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    *content_chunks, usage_chunk = chunks
    assert usage_chunk.choices == []
    assert usage_chunk.usage.completion_tokens == 6
    assert all(chunk.usage is None for chunk in content_chunks)
    assert content_chunks[-1].choices[0].finish_reason == "length"


def test_stream_without_include_usage_has_no_usage_chunk(openai_tcp):
    chunks = list(openai_tcp.chat.completions.create(
        model="gemma", messages=MESSAGES, max_tokens=4, temperature=0, stream=True))
    assert all(chunk.choices for chunk in chunks)


@pytest.mark.parametrize("limit_field", ["max_tokens", "max_completion_tokens"])
def test_token_limits(openai_tcp, limit_field):
    response = openai_tcp.chat.completions.create(model="gemma", messages=MESSAGES, temperature=0,
                                                  **{limit_field: 5})
    assert response.usage.completion_tokens == 5
    assert response.choices[0].finish_reason == "length"


def test_stop_sequence_ends_generation_and_is_not_returned(openai_tcp):
    reference = openai_tcp.chat.completions.create(model="gemma", messages=MESSAGES, max_tokens=24,
                                                   temperature=0).choices[0].message.content
    # Stop at a piece of text we know greedy decoding produces after the start.
    stop = reference[len(reference) // 2:len(reference) // 2 + 3]
    assert stop.strip(), f"reference too short to pick a stop sequence: {reference!r}"
    response = openai_tcp.chat.completions.create(model="gemma", messages=MESSAGES, max_tokens=24,
                                                  temperature=0, stop=[stop, "never-seen-xyz"])
    content = response.choices[0].message.content
    assert response.choices[0].finish_reason == "stop"
    assert stop not in content
    assert reference.startswith(content)
    assert len(content) < len(reference)


def test_same_seed_same_text(openai_tcp):
    def sample(seed):
        return openai_tcp.chat.completions.create(
            model="gemma", messages=MESSAGES, max_tokens=20, temperature=1.0, seed=seed,
        ).choices[0].message.content

    first, second, other = sample(1234), sample(1234), sample(99)
    assert first == second
    assert first != other


def test_text_parts_and_system_message(openai_tcp):
    response = openai_tcp.chat.completions.create(model="gemma", max_tokens=4, temperature=0, messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi"}]},
    ])
    assert response.usage.completion_tokens > 0


def test_completions_endpoint(client):
    response = client.completions.create(model="gemma", prompt="The capital of France is",
                                         max_tokens=6, temperature=0)
    assert response.choices[0].text
    assert response.usage.completion_tokens <= 6
    assert_valid("CreateCompletionResponse", response.model_dump(mode="json", exclude_unset=True))
    streamed = "".join(chunk.choices[0].text for chunk in client.completions.create(
        model="gemma", prompt="The capital of France is", max_tokens=6, temperature=0, stream=True))
    assert streamed == response.choices[0].text


def test_models(client):
    listing = client.models.list()
    assert "gemma" in [model.id for model in listing.data]
    assert client.models.retrieve("gemma").id == "gemma"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.body["code"] == "model_not_found"
    assert_valid("Model", client.models.retrieve("gemma").model_dump(mode="json"))
    assert_valid("ListModelsResponse", listing.model_dump(mode="json"))


@pytest.fixture(scope="module")
def gemma_vocab(gemma_path):
    """The gemma tokenizer alone, to name token ids the way a client would look them up."""
    from tests.llama_reference import reference_llama

    return reference_llama(model_path=str(gemma_path), vocab_only=True, verbose=False)


@pytest.mark.parametrize("temperature", [0, 1.0])  # the greedy shortcut and llama.cpp's sampler chain
def test_logit_bias_forces_a_token(openai_tcp, gemma_vocab, temperature):
    [star] = gemma_vocab.tokenize(b" star", add_bos=False, special=False)
    response = openai_tcp.chat.completions.create(model="gemma", messages=MESSAGES, max_tokens=5, seed=1,
                                                  temperature=temperature, logit_bias={str(star): 100})
    assert response.choices[0].message.content == " star" * 5


@pytest.mark.parametrize("temperature", [0, 1.0])
def test_ignore_eos_generates_past_the_end_token(openai_tcp, gemma_vocab, temperature):
    end = {str(gemma_vocab.token_eos()): 100}  # the model would end at once
    ended = openai_tcp.chat.completions.create(model="gemma", messages=MESSAGES, max_tokens=5, seed=1,
                                               temperature=temperature, logit_bias=end)
    assert ended.choices[0].finish_reason == "stop" and ended.usage.completion_tokens == 0
    going_on = openai_tcp.chat.completions.create(model="gemma", messages=MESSAGES, max_tokens=5, seed=1,
                                                  temperature=temperature, logit_bias=end,
                                                  extra_body={"ignore_eos": True})
    assert going_on.choices[0].finish_reason == "length" and going_on.usage.completion_tokens == 5


@pytest.mark.parametrize("narrowing", [{"top_k": 1}, {"min_p": 1.0}])
def test_top_k_1_and_min_p_1_sample_the_greedy_answer(openai_tcp, narrowing):
    """llama.cpp's extensions: with only the likeliest token left, sampling at temperature 1 is greedy."""
    greedy = openai_tcp.chat.completions.create(model="gemma", messages=MESSAGES, max_tokens=16, temperature=0)
    narrowed = openai_tcp.chat.completions.create(model="gemma", messages=MESSAGES, max_tokens=16, temperature=1.0,
                                                  seed=3, extra_body=narrowing)
    assert narrowed.choices[0].message.content == greedy.choices[0].message.content


def test_repeat_penalty_breaks_a_greedy_loop(openai_tcp):
    looping = [{"role": "user", "content": "Hi"}]  # the base model repeats one line over and over
    plain = openai_tcp.chat.completions.create(model="gemma", messages=looping, max_tokens=40, temperature=0)
    lines = plain.choices[0].message.content.split("\n")
    assert len(set(lines[:4])) == 1, plain.choices[0].message.content  # the loop this test is about
    penalised = openai_tcp.chat.completions.create(model="gemma", messages=looping, max_tokens=40, temperature=0,
                                                   extra_body={"repeat_penalty": 1.5})
    assert penalised.choices[0].message.content != plain.choices[0].message.content


@pytest.mark.parametrize("penalty", [{"presence_penalty": 1.5}, {"frequency_penalty": 1.5}])
def test_presence_and_frequency_penalties_break_a_greedy_loop(openai_tcp, penalty):
    looping = [{"role": "user", "content": "Hi"}]
    plain = openai_tcp.chat.completions.create(model="gemma", messages=looping, max_tokens=40, temperature=0)
    penalised = openai_tcp.chat.completions.create(model="gemma", messages=looping, max_tokens=40, temperature=0,
                                                   **penalty)
    assert penalised.usage.completion_tokens > 0
    assert penalised.choices[0].message.content != plain.choices[0].message.content
