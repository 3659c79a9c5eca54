"""``hoshikage serve|add|remove|list|show``: the command line.

Errors a person can fix (a bad config value, a file that is not GGUF, an
unknown alias) are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from pathlib import Path

from hoshikage import __version__
from hoshikage.config import ConfigError, Settings, load_settings
from hoshikage.daemon_client import DaemonError
from hoshikage.gguf_meta import GGUFError
from hoshikage.memory_cli import MemoryCommandError
from hoshikage.pull import PullError
from hoshikage.registry import Registry, RegistryError

EXIT_FAILED = 1
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hoshikage", description="Local GGUF models behind an OpenAI-compatible API.")
    parser.add_argument("--version", action="version", version=f"hoshikage {__version__}")
    parser.add_argument("--config", type=Path, help="YAML config file (default /etc/hoshikage/hoshikage.yaml)")
    parser.add_argument("--state-dir", type=Path, help="registry and model store directory")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--listen", action="append", metavar="ADDR",
                       help="tcp:HOST:PORT or unix:PATH; repeat for several (ignored under socket activation)")
    serve.add_argument("--threads", type=int, help="decode threads per model (default: physical cores)")
    serve.add_argument("--slots", type=int, help="requests one model decodes together (default 4)")
    serve.add_argument("--idle-timeout", type=int, dest="idle_timeout_seconds", metavar="SECONDS",
                       help="release models after this long without requests")
    serve.add_argument("--exit-when-idle", action="store_const", const=True,
                       help="exit after the idle timeout (always on under socket activation)")
    serve.add_argument("--log-level", help="debug, info, warning or error")
    serve.add_argument("--no-embedded-model", dest="embedded_model", action="store_const", const=False,
                       help="do not register the packaged gemma3-270m model")

    add = commands.add_parser("add", help="register a GGUF model under an alias",
                              usage="hoshikage add PATH ALIAS [options]\n       hoshikage add --from-ollama NAME "
                                    "[ALIAS] [options]")
    add.add_argument("path", type=Path, nargs="?", help="the GGUF file (with --from-ollama: the ALIAS, if any)")
    add.add_argument("alias", nargs="?")
    add.add_argument("--from-ollama", metavar="NAME[:TAG]",
                     help="register a model of an Ollama store in place (alias: its name)")
    add.add_argument("--ctx", type=int, help="context length (default: the daemon's context_length)")
    add.add_argument("--gpu-layers", type=_gpu_layers, metavar="auto|N",
                     help="layers to offload to the GPU: auto (all that fit), -1 (all) or a number")
    add.add_argument("--chat-format", help="jinja (the GGUF's template), gemma, chatml or llama-3")
    add.add_argument("--rpc", type=_rpc_servers, metavar="HOST:PORT[,HOST:PORT...]",
                     help="spread the model's layers over these `hoshikage rpc-server`s (trusted network only)")
    add.add_argument("--import", dest="import_file", action="store_true",
                     help="copy the file into the state directory (needed for files under /home or /tmp)")
    add.add_argument("--replace", action="store_true", help="overwrite an existing alias")
    add.add_argument("--embedding", action=argparse.BooleanOptionalAction, default=None,
                     help="an embedding model, for /v1/embeddings and /api/embed (default: when the GGUF "
                          "declares a sentence pooling)")

    pull = commands.add_parser("pull", help="download a GGUF model from Hugging Face and register it")
    pull.add_argument("reference", metavar="USER/REPO[:QUANT]|USER/REPO/FILE.gguf")
    pull.add_argument("alias", nargs="?", help="default: the repository's name, with the quantisation as a tag")
    pull.add_argument("--ctx", type=int, help="context length (default: the daemon's context_length)")
    pull.add_argument("--replace", action="store_true", help="overwrite an existing alias")

    chat = commands.add_parser("chat", help="talk to a model in the terminal, through the daemon")
    chat.add_argument("model")
    chat.add_argument("prompt", nargs="*", help="answer this once and exit (also: a question on stdin)")
    chat.add_argument("--resume", action="store_true", help="continue your latest conversation with the model")
    chat.add_argument("--conversation", metavar="ID", help="continue this conversation")
    chat.add_argument("--url", help="the daemon's address: http://HOST:PORT or unix:PATH (default: its socket)")
    chat.add_argument("--api-key", help="for TCP when the daemon asks for one (default: $HOSHIKAGE_API_KEY)")

    remove = commands.add_parser("remove", aliases=["rm"], help="forget a model")
    remove.add_argument("alias")
    listing = commands.add_parser("list", aliases=["ls"], help="list registered models")
    listing.add_argument("--ollama", action="store_true", help="list the models in Ollama's stores instead")
    show = commands.add_parser("show", help="show one model's details")
    show.add_argument("alias")
    status = commands.add_parser("status", help="what the daemon is doing (never starts it)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    from hoshikage import memory_cli

    memory_cli.add_parser(commands)
    commands.add_parser("hash-key", help="read an API key on stdin; print the sha256:HEX form for api_keys")

    rpc = commands.add_parser("rpc-server", help="lend this host's CPU or GPUs to another host's daemon "
                                                 "(llama.cpp's RPC server; never on an untrusted network)")
    rpc.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    rpc.add_argument("--port", type=int, default=50052, help="port (default 50052)")
    rpc.add_argument("--threads", type=int, help="CPU threads (default: the threads setting)")
    rpc.add_argument("--cache-dir", help="keep tensors received here, so a reload sends only their hashes")
    commands.add_parser("ramdisk-hold", help=argparse.SUPPRESS)  # run by hoshikage-ramdisk.service
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "chat" and not any(word.startswith("-") for word in extra):
        args.prompt += extra  # words of the question that came after an option: `chat MODEL --url U question`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    flags = {"state_dir": args.state_dir}
    if args.command == "serve":
        flags.update(listen=args.listen, threads=args.threads, slots=args.slots, log_level=args.log_level,
                     idle_timeout_seconds=args.idle_timeout_seconds, embedded_model=args.embedded_model,
                     exit_when_idle=args.exit_when_idle)
    try:
        settings = load_settings(config_file=args.config, flags=flags)
    except ConfigError as error:
        print(f"hoshikage: config error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return COMMANDS[args.command](settings, args)
    except (RegistryError, GGUFError, MemoryCommandError, DaemonError, PullError) as error:
        print(f"hoshikage: {error}", file=sys.stderr)
        return EXIT_FAILED


def _serve(settings: Settings, args) -> int:
    from hoshikage.logs import setup_logging

    setup_logging(settings.log_level)
    # Before anything else loads numpy or starts a thread: see engine/native.py.
    from hoshikage.engine.native import start_backends

    start_backends()
    from hoshikage.startup import ListenError, serve

    try:
        return serve(settings)
    except ListenError as error:
        print(f"hoshikage: {error}", file=sys.stderr)
        return EXIT_CONFIG


def _add(settings: Settings, args) -> int:
    from rich.console import Console

    from hoshikage.model_files import register_model, service_installed, why_service_cannot_read

    console = Console(stderr=True)
    origin = {}
    if args.from_ollama:
        args, origin = _from_ollama(args)
    elif args.path is None or args.alias is None:
        raise RegistryError("give the GGUF file and an alias (hoshikage add PATH ALIAS), or --from-ollama NAME")
    unreadable = None if args.import_file else why_service_cannot_read(args.path.expanduser().resolve())
    if unreadable and service_installed():
        raise RegistryError(f"the hoshikage service could not read {args.path}: {unreadable}. Add it with "
                            "--import to copy it into the state directory, or move it where the service "
                            "can read it (e.g. /srv/models)")
    options = dict(context_length=args.ctx, gpu_layers=args.gpu_layers, chat_format=args.chat_format,
                   import_file=args.import_file, replace=args.replace, embedding=args.embedding, origin=origin,
                   rpc_servers=args.rpc)
    registry = Registry(settings.registry_file)
    if args.import_file:
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("importing", total=None)
            entry = register_model(settings, registry, args.path, args.alias, **options,
                                   progress=lambda done, total: progress.update(task, completed=done, total=total))
    else:
        entry = register_model(settings, registry, args.path, args.alias, **options)
    gguf = entry.gguf
    kind = f" embedding model ({gguf['pooling']} pooling)" if entry.embedding else ""
    console.print(f"[green]added[/green] {entry.alias}: {gguf['architecture']} "
                  f"{_params(gguf['parameters'])} {gguf['quantization']}{kind}, {entry.path}", soft_wrap=True)
    if unreadable:
        console.print(f"[yellow]warning:[/yellow] a systemd service could not read {entry.path} ({unreadable}); "
                      "use --import to copy it into the state directory", soft_wrap=True)
    return 0


def _from_ollama(args) -> tuple[argparse.Namespace, dict]:
    """ARGS for the GGUF blob of an Ollama model, what its manifest says that Hoshikage uses, and its origin."""
    from hoshikage.gguf_meta import read_gguf_info
    from hoshikage.ollama_store import OllamaStoreError, find

    if args.alias is not None:
        raise RegistryError("with --from-ollama, give at most an alias: hoshikage add --from-ollama NAME [ALIAS]")
    try:
        model = find(args.from_ollama)
    except OllamaStoreError as error:
        raise RegistryError(str(error)) from None
    alias = str(args.path) if args.path is not None else model.alias
    context = args.ctx
    if context is None and isinstance(model.parameters.get("num_ctx"), int) and model.parameters["num_ctx"] > 0:
        context = model.parameters["num_ctx"]
    chat_format = args.chat_format
    if chat_format is None and read_gguf_info(model.blob).chat_template is None:
        chat_format = model.chat_format()  # the GGUF's own template wins; Ollama's Go template only names one
    origin = {"ollama": model.name, "store": str(model.store), "parameters": model.parameters}
    if model.system:
        origin["system"] = model.system
    return argparse.Namespace(**{**vars(args), "path": model.blob, "alias": alias, "ctx": context,
                                 "chat_format": chat_format}), origin


def _remove(settings: Settings, args) -> int:
    from hoshikage.model_files import remove_model

    entry = remove_model(settings, Registry(settings.registry_file), args.alias)
    print(f"removed {entry.alias}")
    return 0


def _list(settings: Settings, args) -> int:
    from rich.console import Console
    from rich.table import Table

    from hoshikage.engine.context_choice import context_for

    entries = Registry(settings.registry_file).entries()
    if args.ollama:
        return _list_ollama(entries)
    rows = []
    for alias in sorted(entries):
        entry, gguf = entries[alias], entries[alias].gguf
        rows.append((alias, gguf.get("architecture", "?"), _params(gguf.get("parameters")),
                     gguf.get("quantization", "?"), str(context_for(entry, settings).tokens),
                     _size(gguf.get("size_bytes")), entry.path))
    table = Table()
    # An alias is typed or copied whole into the next command: never cut, whatever the terminal's width; the
    # path folds, and the short figures give way last.
    table.add_column("alias", no_wrap=True, min_width=max((len(row[0]) for row in rows), default=0))
    for heading in ("arch", "params", "quant", "context", "size"):
        table.add_column(heading, no_wrap=True)
    table.add_column("path", overflow="fold", ratio=1)
    for row in rows:
        table.add_row(*row)
    Console().print(table if entries else "no models registered; add one with: hoshikage add PATH ALIAS")
    return 0


def _list_ollama(entries) -> int:
    from rich.console import Console
    from rich.table import Table

    from hoshikage.ollama_store import default_stores, list_models

    models = list_models()
    registered = {entry.path: alias for alias, entry in entries.items()}
    table = Table("name", "size", "registered as")
    table.add_column("blob", overflow="fold")
    for model in models:
        table.add_row(model.name, _size(model.size), registered.get(str(model.blob), "-"), str(model.blob))
    looked = ", ".join(str(store) for store in default_stores())
    Console().print(table if models else f"no Ollama models in {looked} (set OLLAMA_MODELS for a store elsewhere)")
    return 0


def _show(settings: Settings, args) -> int:
    from rich.console import Console
    from rich.table import Table

    from hoshikage.engine.context_choice import context_for

    entry = Registry(settings.registry_file).get(args.alias)
    if entry is None:
        raise RegistryError(f"no model is registered as {args.alias!r}")
    table = Table(show_header=False, box=None)
    context = context_for(entry, settings)
    rows = {
        "alias": entry.alias, "path": entry.path, "imported": str(entry.imported),
        "context length": f"{context.tokens} ({context.reason})",
        "gpu layers": str(entry.gpu_layers if entry.gpu_layers is not None else f"{settings.gpu_layers} (default)"),
        **({"rpc servers": ", ".join(entry.rpc_servers) + " (every layer)"} if entry.rpc_servers else {}),
        "kind": "embedding" if entry.embedding else "chat",
        "chat format": entry.chat_format or "from GGUF template or architecture",
        **_origin_rows(entry.origin),
        **{f"gguf {key.replace('_', ' ')}": str(value) for key, value in entry.gguf.items()},
    }
    for key, value in rows.items():
        table.add_row(f"[bold]{key}[/bold]", value)
    Console().print(table)
    return 0


def _origin_rows(origin: dict) -> dict[str, str]:
    """Where a model came from, for hoshikage show: a Hugging Face repository (pulled), or an Ollama store's name
    and what its manifest said."""
    if "huggingface" in origin:
        return {"from hugging face": f"{origin['huggingface']} at {origin.get('commit') or '?'}",
                "files": ", ".join(origin.get("files", ()))}
    if "ollama" not in origin:
        return {}
    rows = {"from ollama": f"{origin['ollama']} ({origin.get('store', '?')})"}
    if origin.get("parameters"):
        rows["ollama parameters"] = (", ".join(f"{key}={value}" for key, value in origin["parameters"].items())
                                     + " (num_ctx is the context and stop words stop every answer; sampling values "
                                       "are not applied)")
    if origin.get("system"):
        rows["ollama system prompt"] = f"{origin['system']} (not applied)"
    return rows


def _rpc_servers(text: str) -> list[str]:
    from hoshikage.engine.rpc import parse_endpoint

    try:
        return [parse_endpoint(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _gpu_layers(text: str) -> int | str:
    from hoshikage.config import parse_gpu_layers

    try:
        return parse_gpu_layers(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _params(count: int | None) -> str:
    if not count:
        return "?"
    return f"{count / 1e9:.1f}B" if count >= 1e9 else f"{count / 1e6:.0f}M"


def _size(size: int | None) -> str:
    return f"{size / 2**20:.0f} MiB" if size else "?"


def _status(settings: Settings, args) -> int:
    import json

    from rich.console import Console

    from hoshikage.status_query import query

    report = query(settings)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    console = Console()
    if report["service"] != "active":
        woken_by = "a connection to hoshikage.socket" if report["managed_by"] == "systemd" else "hoshikage serve"
        console.print(f"not running; it starts with {woken_by}")
        return 0
    daemon = report.get("daemon", {})
    if report.get("status_text"):
        console.print(report["status_text"])
    queue = daemon.get("queue", {})
    console.print(f"up {daemon.get('uptime_seconds', 0):.0f} s, {daemon.get('requests_served', 0)} requests served; "
                  f"{queue.get('running', 0)} generating, {queue.get('waiting', 0)} waiting", soft_wrap=True)
    for device in daemon.get("devices", []):
        if device["kind"] != "cpu":
            console.print(f"  {device['description'] or device['name']}: {_size(device['free_bytes'])} free of "
                          f"{_size(device['total_bytes'])}", soft_wrap=True)
    for model in daemon.get("loaded_models", []):
        place = (f"on {model['device']} ({model['gpu_layers']} layers, {_size(model['device_bytes'])} of GPU memory)"
                 if model.get("gpu_layers") else "on the CPU")
        if model.get("rpc_servers"):
            place = "its layers on the RPC servers " + ", ".join(model["rpc_servers"])
        console.print(f"  {model['model']}: {model['size_bytes'] / 2**20:.0f} MiB, context "
                      f"{model['context_length']}, {place}, idle {model['idle_seconds']:.0f} s", soft_wrap=True)
        tiers = model.get("prompt_cache", {}).get("tiers")
        if tiers:
            host, disk = tiers["host"], tiers["disk"]
            console.print(f"    KV prompt cache: host {host['entries']} entries ({host['bytes'] / 2**20:.0f} of "
                          f"{host['budget_bytes'] / 2**20:.0f} MiB), disk {disk['entries']} "
                          f"({disk['bytes'] / 2**20:.0f} of {disk['budget_bytes'] / 2**20:.0f} MiB), "
                          f"{tiers['restores']} restored "
                          f"({tiers['restored_tokens']} tokens)", soft_wrap=True)
    return 0


def _memory(settings: Settings, args) -> int:
    from hoshikage.memory_cli import run

    return run(settings, args)


def _ramdisk_hold(settings: Settings, args) -> int:
    from hoshikage import systemd
    from hoshikage.engine.ramdisk import hold
    from hoshikage.logs import setup_logging

    setup_logging(settings.log_level)
    systemd.notify("READY=1", f"STATUS=holding {settings.ramdisk_path} until "
                              f"{settings.great_timeout} min without use")
    hold(settings.ramdisk_path, settings.great_timeout * 60)
    return 0


def _pull(settings: Settings, args) -> int:
    import os

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from hoshikage.model_files import register_model
    from hoshikage.pull import default_alias, fetch, parse_reference, target_dir
    from hoshikage.registry import validate_alias

    repo, quant, file = parse_reference(args.reference)
    alias = validate_alias(args.alias or default_alias(repo, quant, file))
    registry = Registry(settings.registry_file)
    if registry.get(alias) is not None and not args.replace:  # before the download, not after it
        raise RegistryError(f"alias {alias!r} is already registered; name another, or pass --replace")
    console = Console(stderr=True)
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=True) as progress:
        tasks: dict[str, int] = {}  # file -> its progress bar

        def show(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done)

        try:
            paths, commit = fetch(repo, quant, file, target_dir(settings.models_dir, repo),
                                  token=os.environ.get("HF_TOKEN"), progress=show)
        except KeyboardInterrupt:
            print("hoshikage: pull stopped; run the same pull again to resume it", file=sys.stderr)
            return 130
    origin = {"huggingface": repo, "commit": commit, "files": [str(path) for path in paths]}
    try:
        entry = register_model(settings, registry, paths[0], alias, context_length=args.ctx, replace=args.replace,
                               owned=True, origin=origin)
    except GGUFError:
        for path in paths:  # what the hub called a GGUF file and is none: of no use to keep
            path.unlink(missing_ok=True)
        raise
    gguf = entry.gguf
    console.print(f"[green]pulled[/green] {entry.alias}: {gguf['architecture']} "
                               f"{_params(gguf['parameters'])} {gguf['quantization']}, {entry.path}", soft_wrap=True)
    return 0


def _hash_key(settings: Settings, args) -> int:
    """The form of a key to write in api_keys: the configuration then holds nothing a reader could send."""
    from hoshikage.api_keys import hash_key

    key = (getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline()).strip()
    if len(key) < 8:
        print("hoshikage: a key must have at least 8 characters", file=sys.stderr)
        return 1
    print(hash_key(key))
    return 0


def _rpc_server(settings: Settings, args) -> int:
    """llama.cpp's RPC server in this process until it is stopped (engine/rpc.py)."""
    from hoshikage.engine.rpc import RpcUnavailable, serve
    from hoshikage.logs import setup_logging
    from hoshikage.peers import is_loopback_host

    setup_logging(settings.log_level)
    if not is_loopback_host(args.host):
        logging.getLogger("hoshikage.rpc").warning(
            "rpc-server on %s: it runs whatever a client sends and asks no key; only a trusted network may reach "
            "port %d (a firewall, a private link or a VPN between the hosts)", args.host, args.port)
    try:
        serve(args.host, args.port, args.threads or settings.threads, args.cache_dir)
    except RpcUnavailable as error:
        print(f"hoshikage: {error}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _chat(settings: Settings, args) -> int:
    from hoshikage.chat import run

    return run(settings, args)


COMMANDS = {"serve": _serve, "add": _add, "remove": _remove, "rm": _remove, "list": _list,
            "ls": _list, "show": _show, "status": _status, "chat": _chat, "pull": _pull,
            "ramdisk-hold": _ramdisk_hold, "memory": _memory, "hash-key": _hash_key, "rpc-server": _rpc_server}
