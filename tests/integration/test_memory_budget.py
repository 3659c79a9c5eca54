"""A memory budget that fits one model: LRU swap, both answered; a model that can never fit: a clear error."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Daemon, register

BUDGET_MIB = 800  # gemma 270M at 1024 tokens of context is estimated at ~515 MiB: one fits, two do not


@pytest.fixture(scope="module")
def budget_daemon(tmp_path_factory, gemma_path):
    state = tmp_path_factory.mktemp("budget-state")
    for alias in ("gemma-a", "gemma-b"):
        register(state, gemma_path, alias, "--chat-format", "gemma", "--ctx", "1024")
    register(state, gemma_path, "gemma-huge-context", "--chat-format", "gemma", "--ctx", "32768")
    # The models' own memory is what is budgeted here: no prompt-cache host tier (counted in the budget too).
    running = Daemon(state, {"HOSHIKAGE_MEMORY_BUDGET_MIB": str(BUDGET_MIB), "HOSHIKAGE_PROMPT_CACHE_RAM_MIB": "0"},
                     "--no-embedded-model")
    yield running
    running.stop()


def ask(daemon, model: str) -> httpx.Response:
    return httpx.post(f"{daemon.base_url}/v1/chat/completions", timeout=120,
                      json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})


def loaded(daemon) -> list[str]:
    return [model["model"] for model in httpx.get(f"{daemon.base_url}/v1/status").json()["loaded_models"]]


def test_two_models_under_a_budget_for_one_swap_lru_and_both_answer(budget_daemon):
    assert ask(budget_daemon, "gemma-a").status_code == 200
    assert loaded(budget_daemon) == ["gemma-a"]
    assert ask(budget_daemon, "gemma-b").status_code == 200
    assert loaded(budget_daemon) == ["gemma-b"]  # gemma-a, least recently used, made room
    assert ask(budget_daemon, "gemma-a").status_code == 200
    assert loaded(budget_daemon) == ["gemma-a"]
    assert "unloading gemma-b to make room for gemma-a" in budget_daemon.log_text()


def test_a_model_that_can_never_fit_is_a_clear_error(budget_daemon):
    response = ask(budget_daemon, "gemma-huge-context")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "model_too_large" and error["param"] == "model"
    assert f"memory budget of {BUDGET_MIB} MiB" in error["message"]
    assert ask(budget_daemon, "gemma-a").status_code == 200  # and nothing else was disturbed
