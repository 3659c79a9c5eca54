"""A model registered without --ctx gets what its header and the memory budget allow, and says why (issue 24)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import openai

from tests.conftest import REPO, Daemon, register


def _show(state, alias: str, env: dict[str, str] | None = None) -> str:
    """`hoshikage show ALIAS`, its table's whitespace collapsed."""
    shown = subprocess.run([sys.executable, "-m", "hoshikage", "--state-dir", str(state), "show", alias],
                           capture_output=True, text=True, check=True, cwd=REPO, env={**os.environ, **(env or {})})
    return " ".join(shown.stdout.split())


def test_a_header_whose_kv_would_not_fit_the_budget_gets_a_capped_context(tmp_path, gemma_path):
    from hoshikage.gguf_meta import read_gguf_info

    header = read_gguf_info(gemma_path)
    register(tmp_path, gemma_path, "gemma")
    env = {"HOSHIKAGE_MEMORY_BUDGET_MIB": "1024", "HOSHIKAGE_PROMPT_CACHE_RAM_MIB": "0"}
    # Half of what 1 GiB leaves after the weights and 256 MiB of compute buffers, over 5 KV sequences (4 slots and
    # the spare one, spare_slots) of 18 KiB a token.
    room = (2**30 - header.file_size - 256 * 2**20) // 2
    expected = room // (5 * header.kv_bytes_per_token) // 256 * 256
    assert header.context_length == 32768 and 2048 < expected < 32768
    daemon = Daemon(tmp_path, env, "--no-embedded-model")
    try:
        with openai.OpenAI(base_url=f"{daemon.base_url}/v1", api_key="unused", max_retries=0) as client:
            answer = client.chat.completions.create(model="gemma", max_tokens=4,
                                                    messages=[{"role": "user", "content": "Hello"}])
        assert answer.choices[0].message.content is not None
        (model,) = httpx.get(f"{daemon.base_url}/v1/status", timeout=30).json()["loaded_models"]
        assert model["context_length"] == expected
        assert "32768" in model["context_reason"] and "half the memory budget" in model["context_reason"]
    finally:
        daemon.stop()
    assert f"{expected} (the model's trained context is 32768" in _show(tmp_path, "gemma", env)


def test_show_says_the_trained_context_when_it_fits(tmp_path, gemma_path):
    register(tmp_path, gemma_path, "gemma")
    assert "32768 (the model's trained context)" in _show(tmp_path, "gemma")
    register(tmp_path, gemma_path, "small", "--ctx", "1024")
    assert "1024 (registered with --ctx)" in _show(tmp_path, "small")
