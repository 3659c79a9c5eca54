"""`hoshikage chat` in a real pseudo-terminal (pexpect) against a socket-activated daemon: a multi-line message,
slash commands, Ctrl-C in the middle of an answer, and a conversation resumed after the daemon's idle exit;
then as a script's tool (stdin, an argument) and without conversation memory."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pexpect
import pytest

from tests.activation import Activator
from tests.conftest import REPO, Daemon, register

PROMPT = ">>> "


def _chat(state, url: str, *args: str, home, first: str = "chatting with gemma") -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-m", "hoshikage", "--state-dir", str(state), "chat", "gemma",
                                           "--url", url, *args],
                          cwd=str(REPO), env={**os.environ, "XDG_STATE_HOME": str(home), "HOME": str(home)},
                          encoding="utf-8", timeout=120, dimensions=(40, 200))
    child.expect(first)
    child.expect_exact(PROMPT)
    return child


def _say(child: pexpect.spawn, line: str, answer: str) -> None:
    child.sendline(line)
    child.expect_exact(answer)
    child.expect_exact(PROMPT)


def _generating(port: int) -> int:
    models = httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=30).json()["loaded_models"]
    return sum(slot["generating"] for model in models for slot in model["slots"])


def _wait_for_exit(activator: Activator) -> None:
    deadline = time.monotonic() + 60
    while not activator.exit_codes:
        assert time.monotonic() < deadline, "the daemon did not exit when idle"
        time.sleep(0.2)


def _activated(tmp_path, gemma_path, embedding_model_dir, idle_timeout: int) -> tuple[Activator, str, Path]:
    """A socket-activated daemon serving gemma with memory; the chat's --url and home."""
    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "1024")
    activator = Activator(tmp_path, "--idle-timeout", str(idle_timeout),
                          env={"SENTENCE_BERT_MODEL": str(embedding_model_dir)})
    return activator, f"unix:{activator.unix_path}", tmp_path / "home"


def test_a_terminal_chat_streams_stops_remembers_and_resumes_after_an_idle_exit(tmp_path, gemma_path,
                                                                             embedding_model_dir):
    activator, url, home = _activated(tmp_path, gemma_path, embedding_model_dir, idle_timeout=2)
    try:
        child = _chat(tmp_path, url, home=home)
        _say(child, "/set max_output_tokens 8", "max_output_tokens = 8")
        _say(child, "/set temperature 0", "temperature = 0.0")
        child.sendline('"""My locker number is 612.')
        child.expect_exact("... ")
        _say(child, 'Remember it."""', "\r\n\r\n")  # an answer, then the prompt again
        # No end of generation and no output limit: the answer runs until Ctrl-C stops it.
        _say(child, "/set ignore_eos on", "ignore_eos = True")
        _say(child, "/set max_output_tokens 100000", "max_output_tokens = 100000")
        child.sendline("Tell me about lockers.")
        child.expect_exact("Tell me about lockers.\r\n")  # the terminal's echo of the line
        child.expect(r"\S")  # the first words, streamed while the answer goes on
        assert _generating(activator.port) == 1
        child.sendintr()
        child.expect_exact("[stopped]")
        child.expect_exact(PROMPT)
        deadline = time.monotonic() + 15
        while _generating(activator.port):  # the daemon let the answer go
            assert time.monotonic() < deadline
        child.sendline("/context")
        child.expect_exact("user: My locker number is 612.\r\nRemember it.")
        child.expect_exact(PROMPT)
        child.sendline("/show")
        child.expect(r'"conversation": "(conv_\w+)"')
        conversation = child.match.group(1)
        child.expect_exact(PROMPT)
        child.sendline("/bye")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        _wait_for_exit(activator)  # idle: the process is gone, the conversation is on disk
        assert (home / "hoshikage" / "chat.json").stat().st_mode & 0o777 == 0o600  # ids are for its user only

        # The same conversation, from this user's record of it.
        resumed = _chat(tmp_path, url, "--resume", home=home, first=f"continuing conversation {conversation}")
        resumed.sendline("/context")  # a new daemon process, started by this request
        resumed.expect_exact("user: My locker number is 612.")
        resumed.expect_exact(PROMPT)
        resumed.sendline("/forget")
        resumed.expect("forgot conv_")
        resumed.expect_exact(PROMPT)
        resumed.sendeof()
        resumed.expect(pexpect.EOF)
        resumed.close()
        assert resumed.exitstatus == 0
    finally:
        activator.stop()


def test_the_model_loads_before_the_first_question_and_a_missing_one_is_said_at_once(tmp_path, gemma_path,
                                                                                     embedding_model_dir):
    activator, url, home = _activated(tmp_path, gemma_path, embedding_model_dir, idle_timeout=30)
    try:
        child = _chat(tmp_path, url, home=home)
        # Nothing asked yet, and the model is in memory: the chat's first request loaded it, read ahead by the
        # daemon it woke (first_request.py).
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(activator.unix_path)), timeout=30) as unix:
            loaded = unix.get("http://hoshikage/v1/status").json()["loaded_models"]
        assert [model["model"] for model in loaded] == ["gemma"]
        assert "the request that started the daemon asks for gemma" in activator.log_text()
        child.sendline("/bye")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        missing = pexpect.spawn(sys.executable, ["-m", "hoshikage", "chat", "no-such-model", "--url", url],
                                cwd=str(REPO), env={**os.environ, "XDG_STATE_HOME": str(home), "HOME": str(home)},
                                encoding="utf-8", timeout=120)
        missing.expect("model 'no-such-model' not found")
        assert PROMPT not in missing.read()  # told before any question, and no chat begins
        missing.close()
        assert missing.exitstatus == 1
    finally:
        activator.stop()


def test_a_script_gets_the_answer_alone(daemon):
    command = [sys.executable, "-m", "hoshikage", "chat", "gemma", "--url", daemon.base_url]
    env = {**os.environ, "HOME": "/nonexistent"}
    piped = subprocess.run(command, input="Name a colour.", capture_output=True, text=True, cwd=REPO, env=env,
                           timeout=300)
    assert piped.returncode == 0 and piped.stdout.strip() and not piped.stderr, piped.stderr
    argued = subprocess.run([*command, "Name", "a", "fruit."], capture_output=True, text=True, cwd=REPO,
                            env=env, timeout=300)
    assert argued.returncode == 0 and argued.stdout.strip() and not argued.stderr, argued.stderr
    missing = subprocess.run([*command[:4], "no-such-model", "--url", daemon.base_url, "Hi"], capture_output=True,
                             text=True, cwd=REPO, env=env, timeout=300)
    assert missing.returncode == 1 and "'no-such-model' does not exist" in missing.stderr


def test_without_memory_the_chat_says_so_once_and_still_answers(tmp_path, gemma_path):
    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "1024")
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")  # the store cannot be opened under a file: memory is unavailable
    running = Daemon(tmp_path, {"HOSHIKAGE_CHROMA_PATH": str(blocked / "chroma")}, "--no-embedded-model")
    try:
        child = pexpect.spawn(sys.executable, ["-m", "hoshikage", "chat", "gemma", "--url", running.base_url],
                              cwd=str(REPO), env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "home")},
                              encoding="utf-8", timeout=120)
        child.expect("not remembered")
        child.expect_exact(PROMPT)
        _say(child, "/set max_output_tokens 4", "max_output_tokens = 4")
        for question in ("My name is Ada.", "What is my name?"):
            _say(child, question, "\r\n\r\n")
        _say(child, "/clear", "history cleared")  # said once: /clear does not ask the daemon again
        child.sendline("/bye")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        log = running.log_text()
    finally:
        with contextlib.suppress(Exception):
            running.stop()
    # The second question carried the first exchange: stateless, the history goes with each request.
    turns = [line for line in log.splitlines() if "POST /v1/responses 200" in line]
    assert len(turns) == 2 and "memory_verbatim_turns=1" in turns[0] and "memory_verbatim_turns=3" in turns[1]


@pytest.mark.parametrize("line", ["/set temperature hot", "/set colour blue", "/nonsense"])
def test_a_mistyped_command_says_what_it_takes(daemon, tmp_path, line):
    child = _chat(tmp_path, daemon.base_url, home=tmp_path)
    child.sendline(line)
    child.expect("takes|unknown command")
    child.expect_exact(PROMPT)
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
