"""Ollama names and the alias a model gets (pure logic; test_ollama_store.py reads a real store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hoshikage.ollama_store import OllamaModel, OllamaStoreError, split_name


@pytest.mark.parametrize(("name", "parts"), [
    ("gemma3", ("registry.ollama.ai", "library", "gemma3", "latest")),
    ("gemma3:270m", ("registry.ollama.ai", "library", "gemma3", "270m")),
    ("someone/model:q4", ("registry.ollama.ai", "someone", "model", "q4")),
    ("hf.co/org/repo:Q4_K_M", ("hf.co", "org", "repo", "Q4_K_M")),
])
def test_names_split_as_ollama_reads_them(name, parts):
    assert split_name(name) == parts


@pytest.mark.parametrize("name", ["", ":tag", "a/b/c/d", "../x", "a//b", "x:y/z", "x:.."])
def test_what_is_no_name_is_refused(name):
    with pytest.raises(OllamaStoreError):
        split_name(name)


@pytest.mark.parametrize(("name", "alias", "template", "chat_format"), [
    ("gemma3:latest", "gemma3", "<start_of_turn>user", "gemma"),
    ("qwen2.5:7b", "qwen2.5:7b", "<|im_start|>system", "chatml"),
    ("someone/llama:8b", "llama:8b", "<|start_header_id|>", "llama-3"),
    ("phi:latest", "phi", "{{ .Prompt }}", None),
])
def test_the_alias_is_the_name_and_the_template_names_a_format(name, alias, template, chat_format):
    model = OllamaModel(name=name, store=Path("/s"), blob=Path("/s/b"), size=1, parameters={}, template=template,
                        system="")
    assert model.alias == alias and model.chat_format() == chat_format
