"""``hoshikage memory list|show|context|forget``: what the daemon remembers.

Run as root or as the daemon's user, they read and change the store directly,
with the daemon's settings, so they work whether or not the daemon runs, and
address every conversation. Anyone else cannot read the store (it is the daemon
user's alone): for them the same verbs go through the daemon's socket, which
knows who is asking (api/http/identity.py) and shows and forgets only their own.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from urllib.parse import quote

from hoshikage.config import Settings
from hoshikage.unix_http import PACKAGED_SOCKET


class MemoryCommandError(Exception):
    """One line for stderr."""


def add_parser(commands) -> None:
    memory = commands.add_parser("memory", help="conversations the daemon remembers")
    verbs = memory.add_subparsers(dest="memory_command", required=True, metavar="VERB")
    verbs.add_parser("list", aliases=["ls"], help="remembered conversations")
    show = verbs.add_parser("show", help="a conversation's turns")
    show.add_argument("id", help="conversation id (conv_...) or response id (resp_...)")
    show_context = verbs.add_parser("context", help="the context a response's model was given")
    show_context.add_argument("id", help="conversation id (its latest response) or response id")
    show_context.add_argument("--json", action="store_true", help="machine-readable output")
    forget = verbs.add_parser("forget", help="delete a conversation from disk, for good")
    target = forget.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", help="conversation id (conv_...) or response id (its conversation)")
    target.add_argument("--all", action="store_true", help="every conversation")


def run(settings: Settings, args: argparse.Namespace) -> int:
    if not _reads_store(settings):
        return _through_daemon(settings, args)
    return _on_store(settings, args)


def _reads_store(settings: Settings) -> bool:
    """Whether this user may open the store itself: root, or the user whose state directory it is (on a Chroma
    server too: the token and the daemon's bookkeeping are theirs)."""
    if os.geteuid() == 0:
        return True
    for place in (settings.state_dir,) if settings.chroma_url else (settings.memory_dir, settings.state_dir):
        try:
            if place.exists():
                return os.access(place, os.R_OK | os.W_OK | os.X_OK)
        except PermissionError:  # inside a directory this user may not search
            return False
    return not Path(PACKAGED_SOCKET).exists()  # nothing on disk yet, and no packaged daemon to ask


def _on_store(settings: Settings, args: argparse.Namespace) -> int:
    from hoshikage.memory.store import MemoryUnavailable, NotFound, Store

    if settings.chroma_url is None and not settings.memory_dir.exists():
        if args.memory_command in ("list", "ls") or getattr(args, "all", False):
            if getattr(args, "all", False):
                _forget_saved_kv(settings, None)
            print(f"nothing remembered ({settings.memory_dir} does not exist)")
            return 0
        raise MemoryCommandError(f"no conversation {args.id!r}: nothing is remembered yet")
    try:
        store = Store(settings.memory_dir, settings.chroma_url, settings.chroma_token)
        try:
            if args.memory_command == "forget":
                return _forget(store, args, settings)
            return VERBS[args.memory_command](store, args)
        finally:
            store.close()
    except MemoryUnavailable as error:
        raise MemoryCommandError(str(error)) from None
    except NotFound as missing:
        raise MemoryCommandError(f"no conversation or response {missing.args[0]!r} is remembered") from None


def _through_daemon(settings: Settings, args: argparse.Namespace) -> int:
    """The verb as the daemon's API answers it for this user: their own conversations."""
    from hoshikage.daemon_client import DaemonError, Endpoint

    endpoint = Endpoint.choose(settings, None, None)
    try:
        if args.memory_command in ("list", "ls"):
            _print_listing(endpoint.call("GET", "/hoshikage/memory")["data"])
        elif args.memory_command == "show":
            _print_shown(endpoint.call("GET", f"/hoshikage/memory/{quote(args.id)}"))
        elif args.memory_command == "context":
            _print_context(endpoint.call("GET", f"/hoshikage/memory/{quote(args.id)}/context"), args.json)
        elif args.all:
            count = endpoint.call("DELETE", "/hoshikage/memory")["forgotten"]
            print(f"forgot {count} conversation{'s' if count != 1 else ''}")
        else:
            print(f"forgot {endpoint.call('DELETE', f'/hoshikage/memory/{quote(args.id)}')['id']}")
    except DaemonError as error:
        raise MemoryCommandError(f"{error} (asked the daemon at {endpoint.address}: this user cannot read the "
                                 "store itself)") from None
    return 0


def _conversation_id(store, some_id: str) -> str:
    return store.response(some_id)["conversation_id"] if some_id.startswith("resp_") else some_id


def _when(timestamp: int) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def _list(store, args) -> int:
    from hoshikage.memory.ownership import listing

    _print_listing(listing(store))
    return 0


def _print_listing(entries: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not entries:
        Console().print("nothing remembered")
        return
    table = Table()
    # An id is copied whole into the next command: never wrapped, never cut.
    table.add_column("id", no_wrap=True, min_width=max(len(entry["id"]) for entry in entries))
    for heading in ("owner", "turns", "responses", "last used", "size", "origin"):
        table.add_column(heading, no_wrap=True)
    for entry in entries:
        table.add_row(entry["id"], _owner(entry["owner"]), str(entry["turns"]), str(entry["responses"]),
                      _when(entry["last_used"]), f"{entry['size'] / 1024:.1f} KiB", entry["origin"])
    # Read by a program or a pager, the table keeps its width; a terminal narrower than it gets rich's folding.
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def _owner(owner: str) -> str:
    """An owner for people: a uid with its user name; none recorded, the admins'."""
    if not owner:
        return "admin (before owners)"
    from hoshikage.api.http.identity import Identity

    return Identity(owner).label


def _show(store, args) -> int:
    from hoshikage.api.responses.conversations import shown_conversation

    _print_shown(shown_conversation(store, args.id))
    return 0


def _print_shown(shown: dict) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    console.print(f"[bold]{shown['id']}[/bold] created {_when(shown['created_at'])}, last used "
                  f"{_when(shown['last_used'])}, owner {_owner(shown['owner'])}"
                  + (f", metadata {json.dumps(shown['metadata'], ensure_ascii=False)}" if shown["metadata"] else ""))
    for turn in shown["turns"]:
        console.print(f"[dim]{turn['position']:>4}[/dim] [bold]{turn['role']}[/bold]: {escape(turn['text'])}",
                      soft_wrap=True)


def _context(store, args) -> int:
    from hoshikage.api.responses.conversations import context_report

    _print_context(context_report(store, args.id), args.json)
    return 0


def _print_context(report: dict, as_json: bool) -> None:
    from rich.console import Console
    from rich.markup import escape

    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return
    console = Console()
    console.print(f"[bold]{report['response_id']}[/bold] in {report['conversation_id']}")
    if not report.get("messages"):
        console.print("no context was recorded for this response")
        return
    console.print(f"{report['prompt_tokens']} prompt tokens of a {report['budget_tokens']}-token budget; "
                  + ("compressed by memory" if report["compressed"] else "the whole history, verbatim"))
    console.print(f"verbatim turns: {len(report['verbatim_positions'])}, summary sentences: "
                  f"{len(report['summary_sentences'])}, recalled passages: {len(report['recalled_passages'])}")
    for title, lines in (("summary", report["summary_sentences"]), ("recalled", report["recalled_passages"])):
        for line in lines:
            console.print(f"  [cyan]{title}[/cyan] {escape(line)}", soft_wrap=True)
    console.print("[bold]messages as given to the model[/bold]")
    for message in report["messages"]:
        console.print(f"  [bold]{message['role']}[/bold]: {escape(message['content'])}", soft_wrap=True)


def _forget(store, args, settings: Settings) -> int:
    if args.all:
        count = store.forget_all()
        _forget_saved_kv(settings, None)
        print(f"forgot {count} conversation{'s' if count != 1 else ''}")
        return 0
    conversation_id = _conversation_id(store, args.id)
    store.forget(conversation_id)
    _forget_saved_kv(settings, conversation_id)
    print(f"forgot {conversation_id}")
    return 0


def _forget_saved_kv(settings: Settings, conversation_id: str | None) -> None:
    """The models' saved KV state of the conversation (None: all) goes too: it is the same text in another form."""
    from hoshikage.engine.prompt_cache import cache_root, forget_everywhere

    forget_everywhere(cache_root(settings), conversation_id)


VERBS = {"list": _list, "ls": _list, "show": _show, "context": _context}
