import pytest

from hoshikage.api.http.errors import APIError
from hoshikage.api.openai.protocol import parse_chat_request, parse_completion_request

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def param_of(body, parse=parse_chat_request):
    with pytest.raises(APIError) as caught:
        parse(body)
    assert caught.value.status == 400
    return caught.value.param


def test_defaults_follow_openai():
    request = parse_chat_request(CHAT)
    assert request.sampling.temperature == 1.0 and request.sampling.top_p == 1.0
    assert request.max_tokens is None and request.stop == () and not request.stream


def test_all_supported_fields():
    request = parse_chat_request({**CHAT, "max_tokens": 9, "temperature": 0, "top_p": 0.5, "stop": "x",
                                  "seed": 7, "presence_penalty": 1, "frequency_penalty": -1, "stream": True,
                                  "stream_options": {"include_usage": True}, "user": "u", "n": 1})
    assert request.max_tokens == 9 and request.stop == ("x",) and request.include_usage
    assert request.sampling.seed == 7 and request.sampling.presence_penalty == 1.0


def test_max_completion_tokens_wins_over_max_tokens():
    assert parse_chat_request({**CHAT, "max_tokens": 9, "max_completion_tokens": 3}).max_tokens == 3


def test_text_parts_join_and_developer_is_system():
    request = parse_chat_request({"model": "m", "messages": [
        {"role": "developer", "content": "rules"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None}]})
    assert request.messages == ({"role": "system", "content": "rules"}, {"role": "user", "content": "ab"},
                                {"role": "assistant", "content": ""})


def test_unknown_fields_are_reported_not_rejected():
    assert parse_chat_request({**CHAT, "mirostat": 2, "cache_prompt": True}).ignored_fields == (
        "cache_prompt", "mirostat")


def test_neutral_values_of_unsupported_fields_pass():
    parse_chat_request({**CHAT, "logprobs": False, "tools": None, "response_format": {"type": "text"}})


@pytest.mark.parametrize("changes,param", [
    ({"model": 3}, "model"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}, "messages[0].content[0].text"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_completion_tokens": -1}, "max_completion_tokens"),
    ({"top_p": 1.5}, "top_p"),
    ({"presence_penalty": -3}, "presence_penalty"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [1]}, "stop"),
    ({"seed": 1.5}, "seed"),
    ({"stream": "yes"}, "stream"),
    ({"stream": True, "stream_options": {"include_usage": "y"}}, "stream_options.include_usage"),
    ({"user": 5}, "user"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}}},
     "response_format"),
    ({"tools": [{"type": "function"}]}, "tools[0]"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"logit_bias": [1, 2]}, "logit_bias"),
    ({"logit_bias": {"-1": 5}}, "logit_bias"),
    ({"logit_bias": {"cat": 5}}, "logit_bias"),
    ({"logit_bias": {"7": 101}}, "logit_bias"),
    ({"logit_bias": {"7": "up"}}, "logit_bias"),
    ({"ignore_eos": "yes"}, "ignore_eos"),
    ({"top_k": -1}, "top_k"),
    ({"min_p": 1.5}, "min_p"),
    ({"repeat_penalty": 0}, "repeat_penalty"),
    ({"repeat_penalty": 3}, "repeat_penalty"),
])
def test_bad_fields_name_their_param(changes, param):
    assert param_of({**CHAT, **changes}) == param


def test_logit_bias_and_ignore_eos():
    sampling = parse_chat_request({**CHAT, "logit_bias": {"12": -100, "3": 2.5}, "ignore_eos": True}).sampling
    assert sampling.logit_bias == ((3, 2.5), (12, -100.0))
    assert sampling.ignore_eos
    assert parse_chat_request(CHAT).sampling.logit_bias == () and not parse_chat_request(CHAT).sampling.ignore_eos


def test_llama_cpp_sampling_extensions():
    sampling = parse_chat_request({**CHAT, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1}).sampling
    assert (sampling.top_k, sampling.min_p, sampling.repeat_penalty) == (40, 0.05, 1.1)
    neutral = parse_chat_request(CHAT).sampling
    assert (neutral.top_k, neutral.min_p, neutral.repeat_penalty) == (0, 0.0, 1.0)


def test_completion_prompts():
    assert parse_completion_request({"model": "m", "prompt": "x"}).prompt == "x"
    assert parse_completion_request({"model": "m", "prompt": ["x"]}).prompt == "x"
    assert parse_completion_request({"model": "m", "prompt": [1, 2]}).prompt == (1, 2)
    assert param_of({"model": "m", "prompt": ["a", "b"]}, parse_completion_request) == "prompt"
    assert param_of({"model": "m"}, parse_completion_request) == "prompt"
    assert param_of({"model": "m", "prompt": "x", "echo": True}, parse_completion_request) == "echo"
