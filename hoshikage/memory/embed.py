"""Sentence embeddings with sentence-transformers, loaded on first use and never downloaded.

``sentence_bert_model`` is a directory holding a sentence-transformers model,
or a Hugging Face model id already in the local cache (HF_HOME). The daemon
never fetches a model at run time: a missing one is EmbeddingModelMissing, one
line that names the setting and how to install a model.

Ruri models (the seed's default, cl-nagoya/ruri-*) were trained with
"クエリ: " before queries and "文章: " before passages; others with nothing.
The prefixes are settings; left unset they follow the model's name.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger("hoshikage.memory")

RURI_PREFIXES = ("クエリ: ", "文章: ")
CACHE_ENTRIES = 20_000  # sentence -> vector; a long chat re-sent each turn embeds only its new text


class EmbeddingModelMissing(Exception):
    """str() is the one line an admin needs."""


def default_prefixes(model_name: str) -> tuple[str, str]:
    """(query prefix, passage prefix) the model was trained with."""
    return RURI_PREFIXES if "ruri" in model_name.lower() else ("", "")


def model_installed(name: str) -> bool:
    """Whether sentence-transformers is installed and NAME is on disk (a directory, or in the Hugging Face
    cache), checked without importing either: a model that could not load is not offered."""
    import importlib.util

    if importlib.util.find_spec("sentence_transformers") is None:
        return False
    local = Path(name).expanduser()
    if local.is_dir():
        return True
    hub = os.environ.get("HF_HUB_CACHE") or str(
        Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub")
    return (Path(hub) / ("models--" + name.replace("/", "--"))).is_dir()


class Embedder:
    def __init__(self, model_name: str, query_prefix: str | None = None, passage_prefix: str | None = None,
                 threads: int | None = None):
        defaults = default_prefixes(model_name)
        self.model_name = model_name
        self.query_prefix = defaults[0] if query_prefix is None else query_prefix
        self.passage_prefix = defaults[1] if passage_prefix is None else passage_prefix
        self.threads = threads
        self.load_seconds: float | None = None
        self._model = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, object] = OrderedDict()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self):
        with self._lock:
            if self._model is None:
                started = time.monotonic()
                self._model = _load_model(self.model_name, self.threads)
                self.load_seconds = time.monotonic() - started
                log.info("embedding model %s loaded in %.1f s", self.model_name, self.load_seconds,
                         extra={"EMBEDDING_MODEL": self.model_name})
        return self._model

    @property
    def dimensions(self) -> int:
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def passages(self, texts: list[str]):
        """Unit-length float32 vectors (n x d) of TEXTS as passages."""
        return self._encode([self.passage_prefix + text for text in texts])

    def query(self, text: str):
        return self._encode([self.query_prefix + text])[0]

    def _encode(self, texts: list[str]):
        import numpy as np

        model = self._load()
        missing = list(dict.fromkeys(text for text in texts if text not in self._cache))
        if missing:
            vectors = model.encode(missing, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                   show_progress_bar=False)
            for text, vector in zip(missing, vectors):
                self._cache[text] = vector.astype(np.float32)
        for text in texts:
            self._cache.move_to_end(text)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        dimensions = None if texts else self.dimensions
        return np.stack([self._cache[text] for text in texts]) if texts else np.zeros((0, dimensions), np.float32)

    def encode_inputs(self, inputs: list[str | list[int]], truncate: bool):
        """Vectors of INPUTS (texts or token ids) as the model gives them, no prefixes, unit length, and the
        tokens read; the embeddings API's way in. PromptTooLong beyond the model's length unless TRUNCATE."""
        import numpy as np
        import torch

        from hoshikage.engine.embedding import EmptyInput, TokenOutOfVocabulary
        from hoshikage.engine.llama import PromptTooLong

        model = self._load()
        limit, tokenizer = model.max_seq_length, model.tokenizer
        counts = []
        for item in inputs:
            if isinstance(item, str):
                count = len(tokenizer(item, add_special_tokens=True, truncation=False)["input_ids"])
            else:
                count = len(item)
                bad = next((token for token in item if not 0 <= token < len(tokenizer)), None)
                if bad is not None:
                    raise TokenOutOfVocabulary(f"token id {bad} is outside the vocabulary (0..{len(tokenizer) - 1})")
            if count == 0:
                raise EmptyInput("an input has no tokens to embed")
            if count > limit and not truncate:
                raise PromptTooLong(count, limit)
            counts.append(min(count, limit))
        vectors: list = [None] * len(inputs)
        texts = [index for index, item in enumerate(inputs) if isinstance(item, str)]
        if texts:
            encoded = model.encode([inputs[index] for index in texts], batch_size=64, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)
            for index, vector in zip(texts, encoded):
                vectors[index] = vector.astype(np.float32)
        with torch.inference_mode():  # token ids go straight to the network, as given
            for index, item in enumerate(inputs):
                if isinstance(item, str):
                    continue
                ids = torch.tensor([list(item)[:limit]], dtype=torch.long)
                features = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
                if "token_type_ids" in tokenizer.model_input_names:
                    features["token_type_ids"] = torch.zeros_like(ids)
                vector = model(features)["sentence_embedding"][0].float().numpy()
                vectors[index] = (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)
        return vectors, sum(counts)


def _load_model(name: str, threads: int | None):
    # Never reach for the network, whatever the environment says.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise EmbeddingModelMissing(
            f"conversation memory needs sentence-transformers and torch ({error.name} is not installed): "
            "install the hoshikage-memory package (`apt install hoshikage-memory`), or from source the memory "
            "extra, `pip install 'hoshikage[memory]'`") from None
    if threads:
        torch.set_num_threads(threads)
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    local = Path(name).expanduser()
    try:
        if local.is_dir():
            return SentenceTransformer(str(local), device="cpu", local_files_only=True)
        return SentenceTransformer(name, device="cpu", local_files_only=True)
    except Exception as error:  # OSError, ValueError, huggingface_hub's errors: all mean "not usable"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise EmbeddingModelMissing(
            f"the embedding model {name!r} (setting sentence_bert_model, env SENTENCE_BERT_MODEL) cannot be "
            f"loaded ({reason}); the daemon never downloads: set it to a directory holding a "
            "sentence-transformers model, or download the model once into the Hugging Face cache of the "
            "daemon's user (`huggingface-cli download MODEL`, HF_HOME decides where)") from None
