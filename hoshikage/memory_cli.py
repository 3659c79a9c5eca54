"""``hoshikage memory list|show|context|forget``: what the daemon remembers, read from disk.

These read and change the store directly, with the daemon's settings, so they
work whether or not the daemon runs (the store belongs to the daemon's user:
run them as that user, or as root).
"""

from __future__ import annotations

import argparse
import datetime
import json

from hoshikage.config import Settings


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
    from hoshikage.memory.store import MemoryUnavailable, NotFound, Store

    if not settings.memory_dir.exists():
        if args.memory_command in ("list", "ls") or getattr(args, "all", False):
            if getattr(args, "all", False):
                _forget_saved_kv(settings, None)
            print(f"nothing remembered ({settings.memory_dir} does not exist)")
            return 0
        raise MemoryCommandError(f"no conversation {args.id!r}: nothing is remembered yet")
    try:
        store = Store(settings.memory_dir)
        if args.memory_command == "forget":
            return _forget(store, args, settings)
        return VERBS[args.memory_command](store, args)
    except MemoryUnavailable as error:
        raise MemoryCommandError(str(error)) from None
    except NotFound as missing:
        raise MemoryCommandError(f"no conversation or response {missing.args[0]!r} is remembered") from None


def _conversation_id(store, some_id: str) -> str:
    return store.response(some_id)["conversation_id"] if some_id.startswith("resp_") else some_id


def _when(timestamp: int) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def _list(store, args) -> int:
    from rich.console import Console
    from rich.table import Table

    infos = store.conversations()
    if not infos:
        Console().print("nothing remembered")
        return 0
    table = Table()
    # An id is copied whole into the next command: never wrapped, never cut.
    table.add_column("id", no_wrap=True, min_width=max(len(info.id) for info in infos))
    for heading in ("turns", "responses", "last used", "size", "origin"):
        table.add_column(heading)
    for info in infos:
        table.add_row(info.id, str(len(store.turns(info.id))), str(len(store.responses(info.id))),
                      _when(info.last_used), f"{store.size(info.id) / 1024:.1f} KiB",
                      "responses" if info.implicit else "conversations")
    Console().print(table)
    return 0


def _show(store, args) -> int:
    from rich.console import Console
    from rich.markup import escape

    conversation_id = _conversation_id(store, args.id)
    info = store.conversation(conversation_id)
    console = Console()
    console.print(f"[bold]{info.id}[/bold] created {_when(info.created_at)}, last used {_when(info.last_used)}"
                  + (f", metadata {json.dumps(info.metadata, ensure_ascii=False)}" if info.metadata else ""))
    for turn in store.turns(conversation_id):
        console.print(f"[dim]{turn.position:>4}[/dim] [bold]{turn.role}[/bold]: {escape(turn.text)}", soft_wrap=True)
    return 0


def _context(store, args) -> int:
    from rich.console import Console
    from rich.markup import escape

    from hoshikage.api.responses.conversations import context_report

    report = context_report(store, args.id)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    console = Console()
    console.print(f"[bold]{report['response_id']}[/bold] in {report['conversation_id']}")
    if not report.get("messages"):
        console.print("no context was recorded for this response")
        return 0
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
    return 0


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
