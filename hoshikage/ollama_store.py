"""Models already in an Ollama store: find a name's GGUF blob and what its manifest says about it.

Ollama keeps a model as a manifest (``manifests/HOST/NAMESPACE/MODEL/TAG``, a
Docker-style JSON list of layers) and content-addressed blobs
(``blobs/sha256-HEX``). The model layer's blob *is* a GGUF file, so
``hoshikage add --from-ollama`` registers it in place, with no copy. The other
layers are read where they help: the parameters layer's ``num_ctx`` becomes
the context and its ``stop`` words stop every answer of the model; its sampling
values and the system prompt are kept with the entry and shown by ``hoshikage
show``, not applied (there are no per-model sampling defaults yet); the
template layer (a Go template, which Hoshikage does not run) names the chat
format only when the GGUF carries no template of its own, by the markers of a
known family.

Stores are looked for where Ollama keeps them: ``OLLAMA_MODELS``, the user's
``~/.ollama/models``, and the Linux service's ``/usr/share/ollama/.ollama/models``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MODEL_LAYER = "application/vnd.ollama.image.model"
TEMPLATE_LAYER = "application/vnd.ollama.image.template"
PARAMS_LAYER = "application/vnd.ollama.image.params"
SYSTEM_LAYER = "application/vnd.ollama.image.system"
MAX_SMALL_LAYER = 1 << 20  # template, parameters, system prompt: text, read whole; anything larger is not one
# Markers of a Go template's chat family, for a GGUF without a template of its own (engine/chat_format.py).
TEMPLATE_FAMILIES = (("<start_of_turn>", "gemma"), ("<|start_header_id|>", "llama-3"), ("<|im_start|>", "chatml"))


class OllamaStoreError(Exception):
    """A name that is not in any store, or a store that is not what Ollama writes; the message says which."""


@dataclasses.dataclass(frozen=True)
class OllamaModel:
    name: str  # as Ollama shows it: model:tag, with namespace/ and host/ when not the defaults
    store: Path
    blob: Path  # the model layer: a GGUF file
    size: int
    parameters: dict[str, Any]  # the params layer (num_ctx, stop, temperature, ...); {} without one
    template: str  # the Go template; "" without one
    system: str  # the default system prompt; "" without one

    @property
    def alias(self) -> str:
        """The registry alias it gets by default: the model's name, and its tag unless that is latest."""
        model, _, tag = self.name.rpartition("/")[2].partition(":")
        return model if tag == DEFAULT_TAG else f"{model}:{tag}"

    def chat_format(self) -> str | None:
        """The built-in chat format the Go template's markers name; None when none is recognised."""
        return next((family for marker, family in TEMPLATE_FAMILIES if marker in self.template), None)


def default_stores() -> list[Path]:
    """Where Ollama keeps models, in the order they are looked in."""
    stores = [Path(os.environ["OLLAMA_MODELS"])] if os.environ.get("OLLAMA_MODELS") else []
    return stores + [Path.home() / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]


def split_name(name: str) -> tuple[str, str, str, str]:
    """(host, namespace, model, tag) of an Ollama name: [host/][namespace/]model[:tag]."""
    path, _, tag = name.strip().partition(":")
    parts = path.split("/")
    if (not path or len(parts) > 3 or not all(parts) or any(part in (".", "..") for part in (*parts, tag))
            or "/" in tag):
        raise OllamaStoreError(f"{name!r} is not an Ollama model name (model[:tag], e.g. gemma3:270m)")
    host = parts[0] if len(parts) == 3 else DEFAULT_HOST
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    return host, namespace, parts[-1], tag or DEFAULT_TAG


def find(name: str, stores: list[Path] | None = None) -> OllamaModel:
    """NAME's model in the first store that has it."""
    host, namespace, model, tag = split_name(name)
    stores = default_stores() if stores is None else stores
    for store in stores:
        manifest = store / "manifests" / host / namespace / model / tag
        if manifest.is_file():
            return _read(store, manifest, _display_name(host, namespace, model, tag))
    looked = ", ".join(str(store) for store in stores)
    raise OllamaStoreError(f"no Ollama model {name!r} in {looked}; `hoshikage list --ollama` shows what is there "
                           "(set OLLAMA_MODELS for a store elsewhere)")


def list_models(stores: list[Path] | None = None) -> list[OllamaModel]:
    """Every model in the stores; manifests that cannot be read are left out."""
    found = []
    for store in default_stores() if stores is None else stores:
        root = store / "manifests"
        if not root.is_dir():
            continue
        for manifest in sorted(path for path in root.glob("*/*/*/*") if path.is_file()):
            host, namespace, model, tag = manifest.relative_to(root).parts
            try:
                found.append(_read(store, manifest, _display_name(host, namespace, model, tag)))
            except OllamaStoreError:
                continue
    return found


def _display_name(host: str, namespace: str, model: str, tag: str) -> str:
    prefix = "" if host == DEFAULT_HOST else f"{host}/"
    prefix += "" if namespace == DEFAULT_NAMESPACE and not prefix else f"{namespace}/"
    return f"{prefix}{model}:{tag}"


def _read(store: Path, manifest: Path, name: str) -> OllamaModel:
    try:
        layers = json.loads(manifest.read_text())["layers"]
        by_type = {layer["mediaType"]: layer for layer in layers}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OllamaStoreError(f"{manifest} is not an Ollama manifest: {error}") from None
    model = by_type.get(MODEL_LAYER)
    if model is None:
        raise OllamaStoreError(f"{name} has no model layer in {manifest} (an adapter or a projector alone?)")
    blob = _blob(store, model)
    if not blob.is_file():
        raise OllamaStoreError(f"the model layer of {name} ({model.get('digest')}) is missing from {store / 'blobs'}; "
                               f"`ollama pull {name}` again")
    parameters = _small_layer(store, by_type.get(PARAMS_LAYER))
    try:
        parameters = json.loads(parameters) if parameters else {}
    except ValueError:
        parameters = {}
    return OllamaModel(name=name, store=store, blob=blob, size=int(model.get("size") or blob.stat().st_size),
                       parameters=parameters if isinstance(parameters, dict) else {},
                       template=_small_layer(store, by_type.get(TEMPLATE_LAYER)),
                       system=_small_layer(store, by_type.get(SYSTEM_LAYER)))


def _blob(store: Path, layer: dict[str, Any]) -> Path:
    digest = str(layer.get("digest", ""))
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise OllamaStoreError(f"a layer's digest {digest!r} is not sha256:HEX")
    return store / "blobs" / f"sha256-{hexdigest}"


def _small_layer(store: Path, layer: dict[str, Any] | None) -> str:
    """The text of a template, parameters or system layer; "" when there is none (or it is not text)."""
    if layer is None:
        return ""
    try:
        path = _blob(store, layer)
        if path.stat().st_size > MAX_SMALL_LAYER:
            return ""
        return path.read_text(errors="replace")
    except (OSError, OllamaStoreError):
        return ""
