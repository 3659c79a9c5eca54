"""Turn chat messages into one prompt string, per model family.

A model's own Jinja template (``tokenizer.chat_template`` in the GGUF) is the
default. Many GGUFs ship without one (the gemma 270M test model among them), so
a registry entry can name a built-in format instead; ``guess_chat_format`` picks
one from the architecture when neither is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

Message = dict  # {"role": "system"|"user"|"assistant"|"tool", "content": str, tool_calls / tool_call_id}

TEMPLATE_FORMAT = "jinja"  # use the template stored in the GGUF


@dataclasses.dataclass(frozen=True)
class FormattedPrompt:
    text: str
    add_bos: bool  # whether the tokenizer should still prepend BOS
    stop: tuple[str, ...] = ()  # extra stop strings the format implies


def _gemma(messages: Sequence[Message]) -> FormattedPrompt:
    # Gemma has no system role: its own template folds the system text into
    # the first user turn, and so do we.
    parts: list[str] = []
    pending_system = ""
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "system":
            pending_system += content + "\n\n"
            continue
        if role == "user":
            content, pending_system = pending_system + content, ""
        turn = "model" if role == "assistant" else "user"
        parts.append(f"<start_of_turn>{turn}\n{content}<end_of_turn>\n")
    if pending_system:
        parts.append(f"<start_of_turn>user\n{pending_system.rstrip()}<end_of_turn>\n")
    parts.append("<start_of_turn>model\n")
    return FormattedPrompt("".join(parts), add_bos=True, stop=("<end_of_turn>",))


def _chatml(messages: Sequence[Message]) -> FormattedPrompt:
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    parts.append("<|im_start|>assistant\n")
    return FormattedPrompt("".join(parts), add_bos=False, stop=("<|im_end|>",))


def _llama3(messages: Sequence[Message]) -> FormattedPrompt:
    parts = ["<|begin_of_text|>"]
    for message in messages:
        parts.append(
            f"<|start_header_id|>{message['role']}<|end_header_id|>\n\n{message['content']}<|eot_id|>"
        )
    parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return FormattedPrompt("".join(parts), add_bos=False, stop=("<|eot_id|>",))


BUILTIN_FORMATS: dict[str, Callable[[Sequence[Message]], FormattedPrompt]] = {
    "gemma": _gemma,
    "chatml": _chatml,
    "llama-3": _llama3,
}
KNOWN_FORMATS = (TEMPLATE_FORMAT, *BUILTIN_FORMATS)


def guess_chat_format(architecture: str, has_template: bool) -> str:
    if has_template:
        return TEMPLATE_FORMAT
    if architecture.startswith("gemma"):
        return "gemma"
    if architecture == "llama":
        return "llama-3"
    return "chatml"


class ChatFormatter:
    """Formats messages for one loaded model."""

    def __init__(self, name: str, *, template: str | None = None,
                 bos_token: str = "", eos_token: str = ""):
        if name == TEMPLATE_FORMAT:
            if not template:
                raise ValueError("the model has no chat template; register it with --chat-format")
            self._render = self._jinja(template, bos_token, eos_token)
        elif name in BUILTIN_FORMATS:
            self._render = BUILTIN_FORMATS[name]
        else:
            raise ValueError(f"unknown chat format {name!r} (known: {', '.join(KNOWN_FORMATS)})")
        self.name = name
        self.template = template

    def format(self, messages: Sequence[Message], tools: Sequence = ()) -> FormattedPrompt:
        """MESSAGES (with tool calls and results) as a prompt; TOOLS: engine.tools.Tool the model may call."""
        from hoshikage.engine.tools import hermes_messages, template_messages

        if self.name == TEMPLATE_FORMAT:
            return self._render(template_messages(list(messages)),
                                [tool.as_openai() for tool in tools] if tools else None)
        return self._render(hermes_messages(list(messages), list(tools)))

    @staticmethod
    def _jinja(template: str, bos_token: str, eos_token: str) -> Callable[[Sequence[Message]], FormattedPrompt]:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        def strftime_now(format: str) -> str:  # Llama 3.2's and Mistral's templates date their prompts
            import datetime

            return datetime.datetime.now().strftime(format)

        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        compiled = environment.from_string(template)

        def render(messages: Sequence[Message], tools: list | None = None) -> FormattedPrompt:
            text = compiled.render(
                messages=list(messages), bos_token=bos_token, eos_token=eos_token, tools=tools,
                add_generation_prompt=True, raise_exception=raise_exception, strftime_now=strftime_now,
            )
            # Templates usually write BOS themselves; never add a second one.
            add_bos = not (bos_token and text.startswith(bos_token))
            return FormattedPrompt(text, add_bos=add_bos, stop=(eos_token,) if eos_token else ())

        return render
