"""Run client code as another user: real kernel credentials, no mocked identity.

The child starts as root (the tests run as root), imports everything it will
use (the checkout and its virtualenv may sit where other users cannot read),
then drops to UID with only GIDS, and runs CODE. Whatever it connects to from
then on sees UID in SO_PEERCRED and in the kernel's socket tables. A uid needs
no account for that; the container test (tests/system) uses real accounts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import REPO

# What the SDK and the CLI import lazily, imported before the privileges go.
PRIME = """
import json, os, sys
import httpx2, openai
import hoshikage.cli, hoshikage.memory_cli, hoshikage.daemon_client, hoshikage.api.http.identity
import hoshikage.api.responses.conversations, hoshikage.memory.ownership
import rich.console, rich.table, rich.markup, urllib.parse
from openai.resources import responses, conversations, chat
import openai.types.responses, openai.types.conversations, openai.types.chat

def sdk(unix_path):
    http_client = openai.DefaultHttpx2Client(transport=httpx2.HTTPTransport(uds=unix_path))
    return openai.OpenAI(base_url="http://hoshikage/v1", api_key="unused", max_retries=0, http_client=http_client)
"""


def run_as(uid: int, gids: list[int], code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    script = (PRIME + f"\nos.setgroups({gids!r}); os.setgid({gids[0]}); os.setuid({uid})\n"
              + "assert os.getuid() == os.geteuid() == " + str(uid) + "\n" + textwrap.dedent(code))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def json_as(uid: int, gids: list[int], code: str) -> dict:
    """CODE's last stdout line, which it prints as JSON."""
    done = run_as(uid, gids, code)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
