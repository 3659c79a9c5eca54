import pytest

from hoshikage.engine.chat_format import ChatFormatter, guess_chat_format


def test_gemma_folds_system_into_first_user_turn():
    prompt = ChatFormatter("gemma").format([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ])
    assert prompt.text == ("<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
                           "<start_of_turn>model\nHello<end_of_turn>\n"
                           "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")
    assert prompt.add_bos and prompt.stop == ("<end_of_turn>",)


def test_jinja_template_from_the_model():
    template = "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}" \
               "{% if add_generation_prompt %}[assistant]{% endif %}"
    prompt = ChatFormatter("jinja", template=template, bos_token="<s>", eos_token="</s>").format(
        [{"role": "user", "content": "Hi"}])
    assert prompt.text == "<s>[user]Hi[assistant]"
    assert prompt.add_bos is False  # the template wrote BOS itself
    assert prompt.stop == ("</s>",)


def test_template_raise_exception_becomes_value_error():
    formatter = ChatFormatter("jinja", template="{{ raise_exception('roles must alternate') }}")
    with pytest.raises(ValueError, match="roles must alternate"):
        formatter.format([{"role": "user", "content": "x"}])


def test_unknown_format_and_missing_template():
    with pytest.raises(ValueError, match="unknown chat format"):
        ChatFormatter("klingon")
    with pytest.raises(ValueError, match="no chat template"):
        ChatFormatter("jinja", template=None)


@pytest.mark.parametrize("architecture,has_template,expected", [
    ("gemma3", False, "gemma"), ("gemma3", True, "jinja"), ("llama", False, "llama-3"), ("qwen2", False, "chatml"),
])
def test_guess(architecture, has_template, expected):
    assert guess_chat_format(architecture, has_template) == expected
