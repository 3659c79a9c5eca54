"""`hoshikage chat MODEL`: a terminal chat through the daemon's socket, as `ollama run` is for Ollama.

It is a client like any other: it connects to the unix socket (which wakes a
socket-activated daemon) or to ``--url``, and talks through the Responses API
with ``store`` on, in a conversation of its own, so a chat continues across
runs (``--resume``: this user's latest for the model, kept in
``~/.local/state/hoshikage/chat.json``; ``--conversation ID``) and across the
daemon's idle exits. Without conversation memory it falls back to a stateless
chat (the history sent with each question) and says so once.

In a terminal it has the model loaded before the first prompt, as `ollama run` does, so that the first
answer does not wait for a load and a model the daemon lacks is said at once. Tokens are printed as they
come. Ctrl-C stops the answer being made (the connection closes, and the daemon cancels it) and keeps the
chat; Ctrl-D or ``/bye`` leaves. Input has line editing and history (readline); a message
that starts with three double quotes goes on until a line that ends with them.
Not a terminal (``echo question | hoshikage chat MODEL``), or with the question
as an argument, it answers once, prints only the answer and stores nothing.

The standard library only (http.client, readline): a CLI that starts in
milliseconds and pulls nothing into the daemon's dependencies.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from hoshikage.config import Settings
from hoshikage.daemon_client import DaemonError, Endpoint, error_code, error_message, json_of

MULTILINE = '"""'
def _flag(text: str) -> bool:
    """on/off, true/false, yes/no, 1/0."""
    words = {"true": True, "on": True, "yes": True, "1": True, "false": False, "off": False, "no": False, "0": False}
    if text.lower() not in words:
        raise ValueError(text)
    return words[text.lower()]


SETTABLE = {"temperature": float, "top_p": float, "max_output_tokens": int, "top_k": int, "min_p": float,
            "repeat_penalty": float, "seed": int, "ignore_eos": _flag}
HELP = """/set temperature 0.7   set a sampling value ({settable}); /set system TEXT sets the instructions
/show                  the values set
/context               what memory gave the model for the last answer
/clear                 start a new conversation (this one stays remembered)
/forget                forget this conversation for good, and start a new one
/bye                   leave (or Ctrl-D); Ctrl-C stops an answer
\"\"\"                    begin and end a message of several lines"""


class ChatSession:
    """One model's conversation: remembered by the daemon when memory is there, else held here."""

    def __init__(self, endpoint: Endpoint, model: str, state_file: Path | None):
        self.endpoint = endpoint
        self.model = model
        self.state_file = state_file
        self.conversation: str | None = None
        self.stateless_history: list[dict[str, str]] | None = None  # the history, when the daemon keeps none
        self.values: dict[str, Any] = {}
        self.instructions: str | None = None

    def load(self) -> None:
        """Have the daemon load the model now, as `ollama run` does before its first prompt (with Ollama's
        load-only request): the first answer then comes without a load, a model the daemon does not have or
        cannot load is said at once, and a socket-activated daemon starts loading it while it starts
        (first_request.py)."""
        self.endpoint.call("POST", "/api/generate", {"model": self.model})

    # The conversation -----------------------------------------------------------

    def start(self, resume: bool = False, conversation: str | None = None) -> str | None:
        """Continue CONVERSATION, the latest one (RESUME), or a new one; a notice for the user, if any."""
        if conversation or (resume and (conversation := self._saved().get(self.model))):
            self.endpoint.call("GET", f"/v1/conversations/{conversation}")  # 404 when it is gone
            self.conversation = conversation
            return f"continuing conversation {conversation}"
        started = self.new()
        if resume and started is None:
            return f"no earlier conversation with {self.model} to continue: a new one, {self.conversation}"
        return started

    def new(self) -> str | None:
        """A new conversation; a notice when memory is not there (the first time only)."""
        if self.stateless_history is not None:  # already known: no memory to ask again
            self.stateless_history = []
            return "history cleared"
        response = self.endpoint.request("POST", "/v1/conversations", {"metadata": {"client": "hoshikage chat"}})
        with contextlib.closing(response):
            answer = json_of(response.read())
        if response.status == 503 and error_code(answer) == "memory_unavailable":
            self.conversation, self.stateless_history = None, []
            return ("conversation memory is not available here, so this chat is not remembered: "
                    + error_message(answer, 503))
        if response.status >= 400:
            raise DaemonError(error_message(answer, response.status))
        self.conversation = answer["id"]
        self._save()
        return None

    def forget(self) -> str:
        if self.conversation is None:
            self.stateless_history = []
            return "nothing was remembered; the history is cleared"
        forgotten = self.conversation
        self.endpoint.call("DELETE", f"/v1/conversations/{forgotten}")
        self.new()
        return f"forgot {forgotten}"

    def context(self) -> dict[str, Any]:
        if self.conversation is None:
            raise DaemonError("nothing is remembered in this chat: there is no memory context to show")
        return self.endpoint.call("GET", f"/hoshikage/memory/{self.conversation}/context")

    # Questions --------------------------------------------------------------------

    def ask(self, text: str, write: Callable[[str], None], store: bool = True) -> str:
        """Stream the answer to TEXT through WRITE; the whole answer. KeyboardInterrupt stops it (the connection
        closes, and the daemon cancels the generation)."""
        body: dict[str, Any] = {"model": self.model, "stream": True, **self.values}
        if self.instructions:
            body["instructions"] = self.instructions
        if self.conversation is not None and store:
            body.update(conversation=self.conversation, input=text)
        else:
            history = self.stateless_history or []
            body.update(store=False, input=[*history, {"role": "user", "content": text}])
        response = self.endpoint.request("POST", "/v1/responses", body)
        with contextlib.closing(response):
            if response.status >= 400:
                raise DaemonError(error_message(json_of(response.read()), response.status))
            parts = []
            for event in _events(response):
                if event.get("type") == "response.output_text.delta":
                    parts.append(event["delta"])
                    write(event["delta"])
                elif event.get("type") == "response.failed":
                    raise DaemonError(((event.get("response") or {}).get("error") or {}).get("message", "failed"))
        answer = "".join(parts)
        if self.stateless_history is not None and store:
            self.stateless_history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        return answer

    # The user's record of their chats ---------------------------------------------

    def _saved(self) -> dict[str, str]:
        try:
            saved = json.loads(self.state_file.read_text()) if self.state_file else {}
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def _save(self) -> None:
        if self.state_file is None or self.conversation is None:
            return
        saved = {**self._saved(), self.model: self.conversation}
        with contextlib.suppress(OSError):  # a chat that cannot be resumed later is still a chat
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            partial = self.state_file.with_suffix(".partial")
            # Only its user may read it: a conversation id is enough to read the conversation.
            with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
                file.write(json.dumps(saved, indent=1))
            os.replace(partial, self.state_file)


def _events(response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    """The JSON of each server-sent event of RESPONSE, as it arrives."""
    for raw in response:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line.startswith("data: ") and line != "data: [DONE]":
            with contextlib.suppress(ValueError):
                yield json.loads(line[len("data: "):])


# The terminal ------------------------------------------------------------------------

def state_dir() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "hoshikage"


def run(settings: Settings, args) -> int:
    endpoint = Endpoint.choose(settings, args.url, args.api_key)
    session = ChatSession(endpoint, args.model, state_dir() / "chat.json")
    out = sys.stdout
    if args.prompt or not sys.stdin.isatty():  # once, for a script: the answer alone, nothing stored
        question = " ".join(args.prompt) if args.prompt else sys.stdin.read()
        session.stateless_history = []
        try:
            session.ask(question, lambda text: (out.write(text), out.flush()), store=False)
            out.write("\n")
            out.flush()
        except BrokenPipeError:  # `| head` had enough: the connection closes and the daemon stops the answer
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    session.load()
    notice = session.start(resume=args.resume, conversation=args.conversation)
    if notice:
        print(notice, file=sys.stderr)
    return _interactive(session, out)


def _interactive(session: ChatSession, out: TextIO) -> int:
    history = _readline_history()
    print(f"chatting with {session.model}; /help for commands, Ctrl-D to leave", file=sys.stderr)
    try:
        while True:
            try:
                text = _read_message()
            except EOFError:
                print(file=sys.stderr)
                return 0
            except KeyboardInterrupt:
                print(file=sys.stderr)
                continue
            if not text.strip():
                continue
            if text.startswith("/"):
                if _command(session, text.strip()) == "bye":
                    return 0
                continue
            try:
                session.ask(text, lambda piece: (out.write(piece), out.flush()))
                out.write("\n\n")
            except KeyboardInterrupt:
                out.write("\n[stopped]\n\n")
            except DaemonError as error:
                print(f"error: {error}", file=sys.stderr)
            out.flush()
    finally:
        history()


def _read_message() -> str:
    line = input(">>> ")
    if not line.lstrip().startswith(MULTILINE):
        return line
    lines = [line.lstrip()[len(MULTILINE):]]
    while not lines[-1].rstrip().endswith(MULTILINE):
        lines.append(input("... "))
    lines[-1] = lines[-1].rstrip()[:-len(MULTILINE)]
    return "\n".join(lines).strip("\n")


def _command(session: ChatSession, text: str) -> str | None:
    name, _, rest = text.partition(" ")
    try:
        if name in ("/bye", "/exit", "/quit"):
            return "bye"
        if name == "/help":
            print(HELP.format(settable=", ".join(SETTABLE)), file=sys.stderr)
        elif name == "/set":
            print(_set(session, rest), file=sys.stderr)
        elif name == "/show":
            shown = {**session.values, **({"system": session.instructions} if session.instructions else {})}
            print(json.dumps({"model": session.model, "conversation": session.conversation, **shown}, indent=1),
                  file=sys.stderr)
        elif name == "/clear":
            print(session.new() or f"new conversation {session.conversation}", file=sys.stderr)
        elif name == "/forget":
            print(session.forget(), file=sys.stderr)
        elif name == "/context":
            print(_context_text(session.context()), file=sys.stderr)
        else:
            print(f"unknown command {name}; /help lists them", file=sys.stderr)
    except DaemonError as error:
        print(f"error: {error}", file=sys.stderr)
    return None


def _set(session: ChatSession, rest: str) -> str:
    key, _, value = rest.strip().partition(" ")
    if key == "system":
        session.instructions = value or None
        return "system instructions set" if value else "system instructions cleared"
    if key not in SETTABLE:
        return f"/set takes one of: system, {', '.join(SETTABLE)}"
    try:
        session.values[key] = SETTABLE[key](value)
    except ValueError:
        return f"{key} takes {'on or off' if key == 'ignore_eos' else 'a number'}, not {value!r}"
    return f"{key} = {session.values[key]}"


def _context_text(report: dict[str, Any]) -> str:
    lines = [f"{report.get('prompt_tokens', '?')} prompt tokens of {report.get('budget_tokens', '?')}; "
             f"compressed: {report.get('compressed')}, verbatim turns: {report.get('verbatim_turns')}"]
    lines += [f"summary: {sentence}" for sentence in report.get("summary_sentences") or []]
    lines += [f"recalled: {passage}" for passage in report.get("recalled_passages") or []]
    lines += [f"{message.get('role')}: {message.get('content')}" for message in report.get("messages") or []]
    return "\n".join(lines)


def _readline_history() -> Callable[[], None]:
    """Arrow keys and history for input(), kept across chats; what to call on the way out."""
    try:
        import readline
    except ImportError:  # no line editing: input() still works
        return lambda: None
    path = state_dir() / "chat_history"
    with contextlib.suppress(OSError):
        readline.read_history_file(path)

    def save() -> None:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.set_history_length(1000)
            readline.write_history_file(path)

    return save
