"""Which file a pull takes, and what it is called (pure logic; test_pull.py pulls from a stand-in hub)."""

from __future__ import annotations

import pytest

from hoshikage.pull import PullError, choose, default_alias, parse_reference

FILES = ["README.md", "mmproj-model-f16.gguf", "model-Q8_0.gguf", "model-IQ4_XS.gguf", "model-Q4_K_M.gguf",
         "big/model-Q6_K-00001-of-00002.gguf", "big/model-Q6_K-00002-of-00002.gguf", "model-q4_k_m-imatrix.gguf"]


@pytest.mark.parametrize(("quant", "chosen"), [
    (None, ["model-Q4_K_M.gguf"]),
    ("q8_0", ["model-Q8_0.gguf"]),
    ("IQ4_XS", ["model-IQ4_XS.gguf"]),
    ("Q6_K", ["big/model-Q6_K-00001-of-00002.gguf", "big/model-Q6_K-00002-of-00002.gguf"]),
])
def test_the_file_is_picked_as_llama_server_picks_it(quant, chosen):
    assert choose(FILES, quant, None) == chosen


def test_without_q4_k_m_or_q8_0_the_first_model_file():
    assert choose(["mmproj-x.gguf", "x-F16.gguf", "x-Q5_K_S.gguf"], None, None) == ["x-F16.gguf"]


def test_a_missing_quant_or_part_is_refused_naming_what_there_is():
    with pytest.raises(PullError, match="model-Q8_0.gguf"):
        choose(FILES, "Q2_K", None)
    with pytest.raises(PullError, match="lacks"):
        choose(["m-Q4_0-00001-of-00003.gguf", "m-Q4_0-00002-of-00003.gguf"], "Q4_0", None)


@pytest.mark.parametrize(("text", "parsed", "alias"), [
    ("bartowski/Qwen2.5-7B-Instruct-GGUF", ("bartowski/Qwen2.5-7B-Instruct-GGUF", None, None),
     "qwen2.5-7b-instruct"),
    ("bartowski/Qwen2.5-7B-Instruct-GGUF:Q4_K_M", ("bartowski/Qwen2.5-7B-Instruct-GGUF", "Q4_K_M", None),
     "qwen2.5-7b-instruct:q4_k_m"),
    ("u/r-gguf/sub/r-Q8_0.gguf", ("u/r-gguf", None, "sub/r-Q8_0.gguf"), "r:q8_0"),
])
def test_references_and_their_aliases(text, parsed, alias):
    assert parse_reference(text) == parsed
    assert default_alias(*parsed) == alias


@pytest.mark.parametrize("text", ["name", "u/", "u/../x", "u/r/file.bin", "u/r/f.gguf:Q4"])
def test_what_is_no_reference_is_refused(text):
    with pytest.raises(PullError):
        parse_reference(text)
