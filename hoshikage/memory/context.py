"""Fit a conversation into a context window: verbatim when it fits, memory when it does not.

budget = context length - tokens reserved for the answer - MARGIN. When the
whole history fits, the prompt is exactly the history (the prompt cache keeps
hitting). When it does not:

    instructions / system messages, then the summary of the turns left out
    ... the newest turns, verbatim ...
    the latest user message, preceded by the earlier passages most similar to it

The verbatim window starts on a multiple of SEGMENT_TURNS whenever that fits,
so it moves in steps: for the turns in between, the summary and everything up
to the latest message are the same tokens as the turn before, and the KV
prefix cache still covers them. The recalled passages change with each
question, so they sit inside the latest message, after everything stable.

Everything here is pure: token counting and memory lookups are passed in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from hoshikage.memory.summarize import SEGMENT_TURNS

Message = dict[str, str]
MARGIN = 16  # tokens: the generation prompt's own tokens, rounding between formats
PER_MESSAGE = 8  # template tokens around one message, for estimates (the prompt is then counted exactly)
MEMORY_SHARE = 0.25  # of the budget, kept free for the summary and recalled passages
DEFAULT_ANSWER_SHARE = 4  # with no max_tokens, a quarter of the context (at most 1024) stays for the answer
SUMMARY_HEADING = "Summary of the earlier conversation (its most representative sentences):"
RECALL_HEADING = "Earlier in this conversation (passages related to the next message):"


class ContextTooLong(Exception):
    def __init__(self, prompt_tokens: int, budget: int):
        super().__init__(f"the newest message alone needs {prompt_tokens} tokens, more than the {budget} available")
        self.prompt_tokens = prompt_tokens
        self.budget = budget


@dataclasses.dataclass(frozen=True)
class Plan:
    fits: bool
    start: int  # index in the history where verbatim turns begin
    prompt_tokens: int = dataclasses.field(default=0, compare=False)  # when it fits: the whole prompt's


@dataclasses.dataclass
class Assembly:
    messages: list[Message]
    compressed: bool
    verbatim_start: int
    summary: list[str]
    recalled: list[str]
    prompt_tokens: int
    budget: int
    verbatim_turns: int = 0  # history turns given as they are

    def report(self, history_positions: Sequence[int] = ()) -> dict:
        """What the model was given, for the inspection endpoint and `hoshikage memory context`."""
        return {"compressed": self.compressed, "budget_tokens": self.budget, "prompt_tokens": self.prompt_tokens,
                "verbatim_turns": self.verbatim_turns,
                "verbatim_positions": list(history_positions[self.verbatim_start:]),
                "summary_sentences": self.summary, "recalled_passages": self.recalled,
                "messages": self.messages}


def answer_budget(context_length: int, max_output_tokens: int | None) -> int:
    """Prompt tokens available when MAX_OUTPUT_TOKENS (or a default share) must stay free for the answer."""
    reserve = max_output_tokens or min(context_length // DEFAULT_ANSWER_SHARE, 1024)
    return max(0, context_length - min(reserve, context_length // 2) - MARGIN)


def split_pinned(messages: Sequence[Message]) -> tuple[list[Message], list[Message]]:
    """Leading system messages (always kept) and the turns after them."""
    count = 0
    while count < len(messages) and messages[count]["role"] == "system":
        count += 1
    return list(messages[:count]), list(messages[count:])


def plan(pinned: list[Message], history: list[Message], budget: int, count: Callable[[list[Message]], int],
         measure: Callable[[str], int] | None = None) -> Plan:
    """Where the verbatim window starts. COUNT is exact (the whole prompt); MEASURE, the tokens of one
    message's text alone, lets a long history be sized without tokenizing it whole again and again."""
    measure = measure or (lambda text: count([{"role": "user", "content": text}]))
    sizes = [measure(message["content"]) for message in history]
    fixed = sum(measure(message["content"]) for message in pinned)
    # The texts alone are a lower bound of the prompt: only a history that might fit is counted exactly.
    if fixed + sum(sizes) <= budget:
        tokens = count(pinned + history)
        if tokens <= budget:
            return Plan(True, 0, tokens)
    last = latest_user(history)
    room = int(budget * (1 - MEMORY_SHARE))
    suffix = [0] * (len(history) + 1)
    for index in range(len(history) - 1, -1, -1):
        suffix[index] = suffix[index + 1] + sizes[index] + PER_MESSAGE

    def fits(start: int) -> bool:
        return fixed + suffix[start] <= room and count(pinned + history[start:]) <= room

    aligned = [start for start in range(SEGMENT_TURNS, last + 1, SEGMENT_TURNS) if fixed + suffix[start] <= room]
    start = next((start for start in aligned if fits(start)), None)
    if start is None:
        after = (aligned[-1] + 1) if aligned else 1
        start = next((start for start in range(after, last + 1) if fits(start)), None)
    if start is None:
        if count(pinned + history[last:]) > budget:
            raise ContextTooLong(count(pinned + history[last:]), budget)
        start = last
    return Plan(False, start)


def render(pinned: list[Message], history: list[Message], start: int, summary: list[str], recalled: list[str],
           budget: int, count: Callable[[list[Message]], int]) -> Assembly:
    """The compressed prompt, its memory trimmed to the budget: the oldest summary lines go first, then the
    least similar recalled passages (what answers the latest message matters most)."""
    summary, recalled = list(summary), list(recalled)
    while True:
        messages = _compose(pinned, history[start:], summary, recalled)
        tokens = count(messages)
        if tokens <= budget or not (summary or recalled):
            break
        if summary:
            summary.pop(0)
        else:
            recalled.pop()
    if tokens > budget:
        raise ContextTooLong(tokens, budget)
    return Assembly(messages, True, start, summary, recalled, tokens, budget, len(history) - start)


def memory_note(summary: list[str], recalled: list[str]) -> str:
    """Summary and recalled passages as one text (what /v1/responses/compact hands back)."""
    blocks = []
    if summary:
        blocks.append(SUMMARY_HEADING + "\n" + "\n".join(f"- {sentence}" for sentence in summary))
    if recalled:
        blocks.append(RECALL_HEADING + "\n" + "\n".join(f"- {passage}" for passage in recalled))
    return "\n\n".join(blocks)


def _compose(pinned: list[Message], verbatim: list[Message], summary: list[str], recalled: list[str]
             ) -> list[Message]:
    messages = [dict(message) for message in pinned]
    if summary:
        block = memory_note(summary, [])
        if messages:
            messages[-1]["content"] = f"{messages[-1]['content']}\n\n{block}"
        else:
            messages.append({"role": "system", "content": block})
    verbatim = [dict(message) for message in verbatim]
    if recalled:
        last = latest_user(verbatim)
        block = memory_note([], recalled)
        verbatim[last]["content"] = f"{block}\n\n{verbatim[last]['content']}"
    return messages + verbatim


def latest_user(history: list[Message]) -> int:
    for index in range(len(history) - 1, -1, -1):
        if history[index]["role"] == "user":
            return index
    return len(history) - 1
