"""One loaded GGUF model, driven through llama-cpp-python.

Every method here blocks; the scheduler calls them from the model's own
worker thread, never from the event loop. Generation is our own loop over
``Llama.generate`` (which keeps the KV cache of the longest shared prompt
prefix between requests) so that text goes out token by token, stop sequences
and end-of-generation tokens are handled in one place, and a cancelled request
stops between two tokens.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hoshikage.engine.chat_format import ChatFormatter, guess_chat_format
from hoshikage.engine.sampling import SamplingParams
from hoshikage.engine.text_stream import TextAssembler
from hoshikage.registry import ModelEntry

log = logging.getLogger("hoshikage.engine")


class PromptTooLong(Exception):
    def __init__(self, prompt_tokens: int, context_length: int):
        super().__init__(f"prompt of {prompt_tokens} tokens does not fit a context of {context_length}")
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class ModelLoadError(Exception):
    """The registered file could not be loaded; str() is safe to show a client."""


@dataclasses.dataclass(frozen=True)
class Prompt:
    tokens: tuple[int, ...]
    stop: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A piece of generated text, or (with finish_reason set) the end of generation."""
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    context_length: int
    gpu_layers: int
    threads: int
    flash_attn: bool = True
    prompt_cache_min_tokens: int = 256


class LoadedModel:
    def __init__(self, entry: ModelEntry, llm, formatter: ChatFormatter, load_seconds: float,
                 prompt_cache_min_tokens: int = 256):
        self.entry = entry
        self.prompt_cache_min_tokens = prompt_cache_min_tokens
        self.llm = llm
        self.formatter = formatter
        self.load_seconds = load_seconds
        self.context_length: int = llm.n_ctx()
        self.file_size = Path(entry.path).stat().st_size
        self._vocab = llm._model.vocab

    @classmethod
    def load(cls, entry: ModelEntry, options: LoadOptions, path: Path | None = None) -> LoadedModel:
        """Load ENTRY, from PATH when given (its copy in the RAM disk)."""
        import llama_cpp

        started = time.monotonic()
        if not Path(entry.path).is_file():
            raise ModelLoadError(f"model file for {entry.alias!r} is missing: {entry.path}")
        try:
            llm = llama_cpp.Llama(
                model_path=str(path or entry.path),
                n_ctx=entry.context_length or options.context_length,
                n_gpu_layers=entry.gpu_layers if entry.gpu_layers is not None else options.gpu_layers,
                n_threads=options.threads,
                n_threads_batch=options.threads,
                n_batch=512,
                flash_attn=options.flash_attn,
                verbose=False,
            )
        except (ValueError, RuntimeError) as error:
            raise ModelLoadError(f"cannot load model {entry.alias!r}: {error}") from None
        model = llm._model
        gguf = entry.gguf or {}
        template = llm.metadata.get("tokenizer.chat_template")
        format_name = entry.chat_format or guess_chat_format(gguf.get("architecture", ""), bool(template))
        formatter = ChatFormatter(
            format_name,
            template=template,
            bos_token=model.token_get_text(model.token_bos()) if model.token_bos() >= 0 else "",
            eos_token=model.token_get_text(model.token_eos()) if model.token_eos() >= 0 else "",
        )
        return cls(entry, llm, formatter, time.monotonic() - started, options.prompt_cache_min_tokens)

    def close(self) -> None:
        self.llm.close()

    # Prompts ---------------------------------------------------------------

    def chat_prompt(self, messages, extra_stop: tuple[str, ...]) -> Prompt:
        formatted = self.formatter.format(messages)
        tokens = self.llm.tokenize(formatted.text.encode("utf-8"), add_bos=formatted.add_bos, special=True)
        return self._checked(tokens, extra_stop + formatted.stop)

    def completion_prompt(self, prompt: str | tuple[int, ...], stop: tuple[str, ...]) -> Prompt:
        if isinstance(prompt, tuple):
            vocabulary = self.llm.n_vocab()
            bad = next((token for token in prompt if not 0 <= token < vocabulary), None)
            if bad is not None:
                raise ValueError(f"token id {bad} is outside the vocabulary (0..{vocabulary - 1})")
            tokens = list(prompt)
        else:
            tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        return self._checked(tokens, stop)

    def _checked(self, tokens: list[int], stop: tuple[str, ...]) -> Prompt:
        # At least one position must stay free for the first generated token.
        if len(tokens) >= self.context_length:
            raise PromptTooLong(len(tokens), self.context_length)
        return Prompt(tuple(tokens), stop)

    # Generation ------------------------------------------------------------

    def _forget_short_prefix(self, tokens: tuple[int, ...]) -> None:
        """Keep the KV cache of a shared prompt prefix only when it saves real work.

        llama.cpp's results depend slightly on how tokens are batched: a prompt
        whose last tokens are evaluated on top of a cached prefix can come out a
        few ulps different from a fresh evaluation, enough to flip a greedy
        near-tie. Short prompts are cheap to evaluate afresh, so they always are,
        and the same request with the same seed gives the same text; long
        conversations reuse their prefix, trading that guarantee for speed.
        """
        cached = self.llm.input_ids[:self.llm.n_tokens]
        shared = 0
        for cached_token, token in zip(cached, tokens):
            if cached_token != token:
                break
            shared += 1
        if shared < self.prompt_cache_min_tokens:
            self.llm.reset()

    def generate(self, prompt: Prompt, sampling: SamplingParams, max_tokens: int | None,
                 cancelled: threading.Event, emit: Callable[[Chunk], None]) -> None:
        """Generate until a stop, EOG token, max_tokens or a full context; emit as it goes."""
        import llama_cpp

        room = self.context_length - len(prompt.tokens)
        limit = room if max_tokens is None else min(max_tokens, room)
        self.llm.set_seed(sampling.seed if sampling.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
        self._forget_short_prefix(prompt.tokens)
        assembler = TextAssembler(prompt.stop)
        generated = 0
        finish_reason = "length"
        tokens = self.llm.generate(
            list(prompt.tokens),
            top_k=0, top_p=sampling.top_p, min_p=0.0, typical_p=1.0, temp=sampling.temperature,
            repeat_penalty=1.0, frequency_penalty=sampling.frequency_penalty,
            presence_penalty=sampling.presence_penalty,
        )
        try:
            for token in tokens:
                if cancelled.is_set():
                    finish_reason = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    finish_reason = "stop"
                    break
                generated += 1
                text = assembler.feed(self.llm.detokenize([token]))
                if assembler.stopped:
                    finish_reason = "stop"
                    if text:
                        emit(Chunk(text))
                    break
                if text:
                    emit(Chunk(text))
                if generated >= limit:
                    break
        finally:
            tokens.close()
        tail = assembler.finish()
        if tail:
            emit(Chunk(tail))
        emit(Chunk("", finish_reason, len(prompt.tokens), generated))
