"""One loaded GGUF model: its weights, its llama.cpp context, its tokenizer.

The context holds one KV sequence per slot (``slots`` requests decode
together, see batch.py), each with the configured context length: llama.cpp
splits the context evenly between sequences when the KV cache is not unified,
as llama-server does with ``-np``. Every method here blocks; only the model's
worker thread drives the context.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import threading
import time
from pathlib import Path

from hoshikage.engine.chat_format import TEMPLATE_FORMAT, ChatFormatter, guess_chat_format
from hoshikage.engine.tools import family_of
from hoshikage.registry import ModelEntry

log = logging.getLogger("hoshikage.engine")


class PromptTooLong(Exception):
    def __init__(self, prompt_tokens: int, context_length: int):
        super().__init__(f"prompt of {prompt_tokens} tokens does not fit a context of {context_length}")
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class ModelLoadError(Exception):
    """The registered file could not be loaded; str() is safe to show a client."""


def placed_devices(entry: ModelEntry, model_params):
    """Give MODEL_PARAMS ENTRY's devices (engine/rpc.py): its RPC servers, with every layer on them, or, once any
    server is registered in this process, this host's own; the list, to keep alive through the load."""
    from hoshikage.engine import rpc

    try:
        devices = rpc.devices_for(list(entry.rpc_servers))
    except rpc.RpcUnavailable as error:
        raise ModelLoadError(f"The model '{entry.alias}' cannot be loaded: {error}") from None
    if devices is not None:
        devices.apply(model_params)
    if entry.rpc_servers:
        model_params.n_gpu_layers = rpc.ALL_LAYERS
    return devices


@dataclasses.dataclass(frozen=True)
class Prompt:
    tokens: tuple[int, ...]
    stop: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log probability under the model, and its likeliest alternatives."""
    token: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A piece of generated text, or (with finish_reason set) the end of generation."""
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    index: int = 0  # which of the request's n choices
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens since the last chunk, when asked for
    restored_tokens: int = 0  # (final chunk) prompt tokens restored from the prompt cache's tiers, not read


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    context_length: int | None  # the setting; None: auto (engine/context_choice.py); what a load uses is decided
    gpu_layers: int | str  # "auto" or a layer count (-1: all), for entries that name none
    threads: int
    flash_attn: bool = True
    prompt_cache_min_tokens: int = 256
    slots: int = 4  # requests one identity may decode together
    spare_slots: int = 0  # sequences beyond them, kept for an identity that holds none (engine/scheduler.py)
    batch_invariant: bool = True
    weight_repack: bool = False  # what engine/cpu_weights.py allows on this host; off unless it says so
    adaptive_threads: bool = True  # fewer threads while other programs keep cores busy (cpu_share.py)
    prompt_cache_dir: Path | None = None  # the KV prompt cache's disk tier (engine/prompt_cache.py); None: none
    prompt_cache_ram_bytes: int = 0
    prompt_cache_disk_bytes: int = 0

    def repacks_weights(self, embedding: bool) -> bool:
        """Whether a model's weights go into llama.cpp's repacked CPU buffers.

        Only where the host's rule allows it (engine/cpu_weights.py), and for chat
        models not while batch_invariant holds: repacked weights use one kernel for
        a single row and another for blocks of rows, which round differently, so a
        request's tokens would depend on how many other requests share the step.
        """
        return self.weight_repack and (embedding or not self.batch_invariant)

    @property
    def sequences(self) -> int:
        """KV sequences in a chat model's context: the slots and the spare ones."""
        return self.slots + self.spare_slots


# Tokens evaluated in one step at most: a long prompt is taken in pieces of
# this size so that sequences already generating wait one piece, not the
# whole prompt (llama.cpp's own physical batch size).
BATCH_TOKENS = 512
TEXT_TOKEN_CACHE = 50_000  # message texts whose token counts are remembered (count_text_tokens)


class LoadedModel:
    def __init__(self, entry: ModelEntry, model, context, formatter: ChatFormatter, load_seconds: float,
                 slots: int, prompt_cache_min_tokens: int = 256, sequences: int | None = None):
        self.entry = entry
        self.model = model  # llama_cpp._internals.LlamaModel
        self.context = context  # llama_cpp._internals.LlamaContext
        self.formatter = formatter
        self.load_seconds = load_seconds
        self.slots = slots  # what one identity may hold (and the most choices one request may ask for)
        self.sequences = sequences or slots  # KV sequences, each a slot: the slots and the spare ones
        self.prompt_cache_min_tokens = prompt_cache_min_tokens
        self.context_length: int = context.n_ctx() // self.sequences  # per slot
        self.file_size = Path(entry.path).stat().st_size
        self.n_vocab: int = model.n_vocab()
        self._pieces: dict[int, bytes] = {}
        self._end_of_generation: tuple[int, ...] | None = None
        self.tool_family = family_of(formatter.template if formatter.name == TEMPLATE_FORMAT else None)
        self._text_tokens: dict[str, int] = {}
        # Stop words the model came with (an Ollama manifest's parameters), on top of each request's own.
        stops = (entry.origin.get("parameters") or {}).get("stop") or ()
        self.model_stop: tuple[str, ...] = tuple(stop for stop in stops if isinstance(stop, str) and stop)
        self._text_tokens_lock = threading.Lock()

    @classmethod
    def load(cls, entry: ModelEntry, options: LoadOptions, path: Path | None = None,
             gpu_layers: int = 0) -> LoadedModel:
        """Load ENTRY, from PATH when given (its copy in the RAM disk), with GPU_LAYERS offloaded.

        The layer count is the pool's decision (engine/offload.py), never "auto" here.
        """
        import llama_cpp
        from llama_cpp import _internals

        from hoshikage.engine.native import load_backends

        load_backends()
        # llama.cpp logs through this logger; below ERROR it writes every tensor it loads.
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        started = time.monotonic()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = gpu_layers
        model_params.use_extra_bufts = options.repacks_weights(embedding=False)
        devices = placed_devices(entry, model_params)  # kept alive: llama.cpp reads the list during the load
        context_length = entry.context_length or options.context_length  # the pool decided auto (models.py)
        if not context_length:
            raise ValueError("a chat model's context length must be decided before its load")
        context_params = llama_cpp.llama_context_default_params()
        context_params.n_ctx = context_length * options.sequences
        context_params.n_seq_max = options.sequences
        context_params.kv_unified = False  # each slot attends to its own cells only
        context_params.swa_full = True  # a sliding-window model can reuse any cached prefix
        context_params.n_batch = context_params.n_ubatch = BATCH_TOKENS
        context_params.n_threads = context_params.n_threads_batch = options.threads
        context_params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if options.flash_attn
                                          else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        context_params.no_perf = True
        try:
            model = _internals.LlamaModel(path_model=str(path or entry.path), params=model_params, verbose=False)
            context = _internals.LlamaContext(model=model, params=context_params, verbose=False)
        except (ValueError, RuntimeError) as error:
            if devices is not None and devices.endpoints:
                raise ModelLoadError(f"The model '{entry.alias}' cannot be loaded on its RPC servers "
                                     f"{', '.join(devices.endpoints)} ({error}): check that each runs "
                                     "`hoshikage rpc-server` of this version and has memory for its share") from None
            raise ModelLoadError(
                f"The model '{entry.alias}' cannot be loaded: llama.cpp could not load {entry.path} ({error}). "
                "The file may be corrupt or truncated, or of an architecture this llama.cpp does not know; "
                f"register a valid GGUF file with `hoshikage add FILE {entry.alias} --replace`") from None
        gguf = entry.gguf or {}
        template = model.metadata().get("tokenizer.chat_template")
        format_name = entry.chat_format or guess_chat_format(gguf.get("architecture", ""), bool(template))
        formatter = ChatFormatter(
            format_name,
            template=template,
            bos_token=model.token_get_text(model.token_bos()) if model.token_bos() >= 0 else "",
            eos_token=model.token_get_text(model.token_eos()) if model.token_eos() >= 0 else "",
        )
        return cls(entry, model, context, formatter, time.monotonic() - started, options.slots,
                   options.prompt_cache_min_tokens, options.sequences)

    def close(self) -> None:
        self.context.close()
        self.model.close()

    def set_threads(self, threads: int) -> None:
        import llama_cpp

        llama_cpp.llama_set_n_threads(self.context.ctx, threads, threads)

    def piece(self, token: int) -> bytes:
        """The bytes of one generated token (special tokens render as nothing)."""
        cached = self._pieces.get(token)
        if cached is None:
            import llama_cpp

            buffer = ctypes.create_string_buffer(64)
            length = llama_cpp.llama_token_to_piece(self.model.vocab, token, buffer, 64, 0, False)
            if length > 64:
                buffer = ctypes.create_string_buffer(length)
                length = llama_cpp.llama_token_to_piece(self.model.vocab, token, buffer, length, 0, False)
            cached = self._pieces[token] = buffer.raw[:max(length, 0)]
        return cached

    def is_end_of_generation(self, token: int) -> bool:
        import llama_cpp

        return llama_cpp.llama_vocab_is_eog(self.model.vocab, token)

    @property
    def end_of_generation_tokens(self) -> tuple[int, ...]:
        """Every token that ends generation (eos, eot, <end_of_turn>, ...), found once when first asked."""
        if self._end_of_generation is None:
            self._end_of_generation = tuple(token for token in range(self.n_vocab)
                                            if self.is_end_of_generation(token))
        return self._end_of_generation

    # Prompts ---------------------------------------------------------------

    def chat_prompt(self, messages, extra_stop: tuple[str, ...], tools=()) -> Prompt:
        formatted = self.formatter.format(messages, tools)
        tokens = self.model.tokenize(formatted.text.encode("utf-8"), add_bos=formatted.add_bos, special=True)
        return self._checked(tokens, extra_stop + formatted.stop)

    def count_chat_tokens(self, messages) -> int:
        """Tokens MESSAGES take as a chat prompt, whether or not they fit (memory's measure)."""
        formatted = self.formatter.format(messages)
        return len(self.model.tokenize(formatted.text.encode("utf-8"), add_bos=formatted.add_bos, special=True))

    def count_text_tokens(self, text: str) -> int:
        """Tokens of TEXT alone (no template, no BOS), remembered: memory sizes long histories with it."""
        known = self._text_tokens.get(text)
        if known is None:
            known = len(self.model.tokenize(text.encode("utf-8"), add_bos=False, special=False))
            with self._text_tokens_lock:  # requests assemble on several threads
                self._text_tokens[text] = known
                if len(self._text_tokens) > TEXT_TOKEN_CACHE:
                    self._text_tokens.pop(next(iter(self._text_tokens)))  # the oldest
        return known

    def completion_prompt(self, prompt: str | tuple[int, ...], stop: tuple[str, ...]) -> Prompt:
        if isinstance(prompt, tuple):
            vocabulary = self.n_vocab
            bad = next((token for token in prompt if not 0 <= token < vocabulary), None)
            if bad is not None:
                raise ValueError(f"token id {bad} is outside the vocabulary (0..{vocabulary - 1})")
            tokens = list(prompt)
        else:
            tokens = self.model.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        return self._checked(tokens, stop)

    def _checked(self, tokens: list[int], stop: tuple[str, ...]) -> Prompt:
        # At least one position must stay free for the first generated token.
        if len(tokens) >= self.context_length:
            raise PromptTooLong(len(tokens), self.context_length)
        return Prompt(tuple(tokens), stop + tuple(word for word in self.model_stop if word not in stop))
