"""GGUF embedding models: one pooled vector per input, many inputs decoded together.

An embedding model (``hoshikage add FILE ALIAS --embedding``) gets its own
llama.cpp context with embeddings on and the pooling its GGUF declares (mean,
CLS, last token). Inputs are packed into one batch as separate sequences, as
many as fit the context and MAX_SEQUENCES, and each sequence's pooled vector is
read back and L2-normalised (what OpenAI's and Ollama's APIs return).

A model runs on one worker thread, one request at a time: a batch already
holds every input of a request, and embedding never waits on a client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hoshikage.engine.context_choice import embedding_context
from hoshikage.engine.llama import LoadOptions, ModelLoadError, PromptTooLong, placed_devices
from hoshikage.engine.scheduler import QueueFull
from hoshikage.registry import ModelEntry

log = logging.getLogger("hoshikage.engine")

MAX_SEQUENCES = 64  # inputs decoded in one batch at most
POOLING_NAMES = {1: "mean", 2: "cls", 3: "last", 4: "rank"}


class EmptyInput(ValueError):
    """An input that tokenizes to nothing: there is nothing to pool."""


class TokenOutOfVocabulary(ValueError):
    """A token id the model does not have (token-id input)."""


@dataclasses.dataclass(frozen=True)
class Embeddings:
    vectors: list  # numpy float32 arrays, unit length, one per input
    prompt_tokens: int


class EmbeddingModel:
    def __init__(self, entry: ModelEntry, model, context, batch, pooling: int, load_seconds: float):
        self.entry = entry
        self.model = model  # llama_cpp._internals.LlamaModel
        self.context = context
        self.batch = batch
        self.pooling = pooling
        self.load_seconds = load_seconds
        self.context_length: int = context.n_ctx()
        self.dimensions: int = model.n_embd()
        self.n_vocab: int = model.n_vocab()
        self.file_size = Path(entry.path).stat().st_size

    @classmethod
    def load(cls, entry: ModelEntry, options: LoadOptions, path: Path | None = None,
             gpu_layers: int = 0) -> EmbeddingModel:
        import llama_cpp
        from llama_cpp import _internals

        from hoshikage.engine.native import load_backends

        load_backends()
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        started = time.monotonic()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = gpu_layers
        model_params.use_extra_bufts = options.repacks_weights(embedding=True)
        devices = placed_devices(entry, model_params)  # noqa: F841 - alive until the load is done
        try:
            model = _internals.LlamaModel(path_model=str(path or entry.path), params=model_params, verbose=False)
        except (ValueError, RuntimeError) as error:
            raise ModelLoadError(f"The model '{entry.alias}' cannot be loaded: llama.cpp could not load "
                                 f"{entry.path} ({error})") from None
        # The whole of each input must be in one micro-batch (pooling over a
        # non-causal model sees all its tokens at once): batch = context.
        context_length = embedding_context(entry, options.context_length, model.n_ctx_train())
        context_params = llama_cpp.llama_context_default_params()
        context_params.embeddings = True
        context_params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED  # the GGUF's own
        context_params.n_ctx = context_params.n_batch = context_params.n_ubatch = context_length
        context_params.n_seq_max = MAX_SEQUENCES
        context_params.kv_unified = True  # the sequences of a batch share the context's cells
        context_params.n_threads = context_params.n_threads_batch = options.threads
        context_params.no_perf = True
        try:
            context = _internals.LlamaContext(model=model, params=context_params, verbose=False)
        except (ValueError, RuntimeError) as error:
            model.close()
            raise ModelLoadError(f"The model '{entry.alias}' cannot be loaded for embeddings: {error}") from None
        pooling = llama_cpp.llama_pooling_type(context.ctx)
        if pooling not in POOLING_NAMES or pooling == llama_cpp.LLAMA_POOLING_TYPE_RANK:
            context.close()
            model.close()
            raise ModelLoadError(
                f"The model '{entry.alias}' declares no pooling for sentence embeddings (a chat model, or a "
                f"reranker); register it without --embedding: `hoshikage add {entry.path} {entry.alias} --replace`")
        batch = _internals.LlamaBatch(n_tokens=context_length, embd=0, n_seq_max=MAX_SEQUENCES, verbose=False)
        return cls(entry, model, context, batch, pooling, time.monotonic() - started)

    def close(self) -> None:
        self.batch.close()
        self.context.close()
        self.model.close()

    def tokenize(self, text: str) -> list[int]:
        """TEXT as the model reads it, with its special tokens (CLS/SEP, BOS/EOS) where its vocabulary asks."""
        return self.model.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def prepare(self, inputs: list[str | list[int]], truncate: bool) -> list[list[int]]:
        """Each input as the tokens to embed: texts tokenized, token ids checked, all fitted to the context."""
        return [self._fit(self.tokenize(item) if isinstance(item, str) else list(item), truncate)
                for item in inputs]

    def _fit(self, tokens: list[int], truncate: bool) -> list[int]:
        """TOKENS cut to the context when TRUNCATE, else PromptTooLong; EmptyInput when there are none."""
        if not tokens:
            raise EmptyInput("an input has no tokens to embed")
        if len(tokens) > self.context_length:
            if not truncate:
                raise PromptTooLong(len(tokens), self.context_length)
            tokens = tokens[:self.context_length]
        bad = next((token for token in tokens if not 0 <= token < self.n_vocab), None)
        if bad is not None:
            raise TokenOutOfVocabulary(f"token id {bad} is outside the vocabulary (0..{self.n_vocab - 1})")
        return tokens

    def embed(self, inputs: list[list[int]]) -> list:
        """One unit vector per token list (each prepared), in order."""
        import llama_cpp
        import numpy as np

        vectors: list = []
        group: list[list[int]] = []
        for tokens in inputs:
            if group and (sum(map(len, group)) + len(tokens) > self.context_length or len(group) == MAX_SEQUENCES):
                vectors.extend(self._decode(group, llama_cpp, np))
                group = []
            group.append(tokens)
        if group:
            vectors.extend(self._decode(group, llama_cpp, np))
        return vectors

    def _decode(self, group: list[list[int]], llama_cpp, np) -> list:
        self.batch.reset()
        for sequence, tokens in enumerate(group):
            self.batch.add_sequence(tokens, sequence, True)  # every token an output: pooling reads them all
        self.context.kv_cache_clear()
        self.context.decode(self.batch)
        vectors = []
        for sequence in range(len(group)):
            pointer = llama_cpp.llama_get_embeddings_seq(self.context.ctx, sequence)
            vector = np.ctypeslib.as_array(pointer, shape=(self.dimensions,)).astype(np.float32)
            norm = float(np.linalg.norm(vector))
            vectors.append(vector / norm if norm > 0 else vector)
        return vectors


class EmbeddingRunner:
    """An embedding model's worker, with the parts of a scheduler the model pool relies on.

    Requests run one at a time in arrival order; beyond MAX_WAITING waiting ones, QueueFull.
    """

    slots = 1
    cpu_share = None

    def __init__(self, model: EmbeddingModel, max_waiting: int = 32):
        self.model = model
        self.max_waiting = max_waiting
        self.leases = 0
        self.running = 0  # requests submitted and not finished: one embedding, the rest waiting
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"embed-{model.entry.alias}")

    @property
    def waiting(self) -> int:
        return max(0, self.running - 1)

    @property
    def busy(self) -> bool:
        return self.running > 0 or self.leases > 0

    def release_lease(self) -> None:
        self.leases -= 1

    async def embed(self, inputs: list[str | list[int]], truncate: bool) -> Embeddings:
        """INPUTS (texts or token ids) embedded on the worker; PromptTooLong, EmptyInput, TokenOutOfVocabulary for
        bad ones, QueueFull when too many wait already."""
        def work() -> Embeddings:
            prepared = self.model.prepare(inputs, truncate)
            return Embeddings(self.model.embed(prepared), sum(map(len, prepared)))

        if self.waiting >= self.max_waiting:
            raise QueueFull(self.waiting)
        self.running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        finally:
            self.running -= 1

    def describe_slots(self) -> list[dict]:
        return [{"generating": self.running > 0, "cached_tokens": 0}]

    def describe_prompt_cache(self) -> dict:
        return {"reused_tokens": 0, "read_tokens": 0}

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
        self.model.close()
