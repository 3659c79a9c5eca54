"""One Settings object, built from: defaults < YAML files < environment < CLI flags.

Every option is declared once in OPTIONS with its type, default, and the
environment names it answers to: ``HOSHIKAGE_<NAME>`` always, plus the seed
README's names (``IDLE_TIMEOUT_SECONDS``, ``RAMDISK_PATH``, ...) as aliases so
an existing ``.env`` keeps working. A bad value anywhere is a ConfigError whose
message is one line naming the key, where it came from, and why it is wrong.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hoshikage.api_keys import ApiKey, parse_api_keys, with_single_key

DEFAULT_CONFIG_FILE = Path("/etc/hoshikage/hoshikage.yaml")
GPU_LAYERS_AUTO = "auto"  # gpu_layers: every layer that fits the device (engine/offload.py)


class ConfigError(Exception):
    """A setting that cannot be used; str() is the one line to show the admin."""


def _positive_int(value: Any) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError("must be a positive integer")
    return number


def _non_negative_int(value: Any) -> int:
    number = _int(value)
    if number < 0:
        raise ValueError("must be zero or a positive integer")
    return number


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    raise ValueError("must be an integer")


def _positive_number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number") from None
    if not number > 0:
        raise ValueError("must be greater than zero")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _path(value: Any) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError("must be a non-empty path")
    return Path(value).expanduser()


def _optional_path(value: Any) -> Path | None:
    return None if value in (None, "") else _path(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value in (None, "") else _text(value)


def _optional_prefix(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string (empty for none)")
    return value


def _chroma_url(value: Any) -> str | None:
    """A Chroma server's address: http(s)://host[:port]; None or "": the embedded store."""
    if value in (None, ""):
        return None
    from urllib.parse import urlsplit

    text = str(value).strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("must be a URL such as http://127.0.0.1:8001") from None
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/")
            or parts.query or parts.fragment or parts.username):
        raise ValueError("must be http://host:port or https://host:port, with no path, such as "
                         "http://127.0.0.1:8001")
    return text.rstrip("/")


def _memory_overflow(value: Any) -> str:
    if value is False:  # YAML reads a bare `off` as false
        return "off"
    text = str(value).strip().lower()
    if text not in {"off", "summarize"}:
        raise ValueError("must be off or summarize")
    return text


def _cpu_weight_repack(value: Any) -> str:
    if isinstance(value, bool):  # YAML reads a bare on/off as a boolean
        return "on" if value else "off"
    text = str(value).strip().lower()
    if text not in {"auto", "on", "off"}:
        raise ValueError("must be auto, on or off")
    return text


def _listen_list(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError("must be a list of tcp:HOST:PORT or unix:PATH")
    result = []
    for item in items:
        item = str(item).strip()
        parse_listen_address(item)  # raises ValueError with the reason
        result.append(item)
    return tuple(result)


def _context_length(value: Any) -> int | None:
    """None for auto (engine/context_choice.py decides per model), else a positive token count."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    return _positive_int(value)


def parse_gpu_layers(value) -> int | str:
    """"auto", or an integer >= -1 (-1: all layers); ValueError otherwise."""
    if isinstance(value, str) and value.strip().lower() == GPU_LAYERS_AUTO:
        return GPU_LAYERS_AUTO
    if isinstance(value, bool):
        raise ValueError("must be 'auto' or an integer (-1: all layers)")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError("must be 'auto' or an integer (-1: all layers)") from None
    if isinstance(value, float) and value != number:
        raise ValueError("must be 'auto' or an integer (-1: all layers)")
    if number < -1:
        raise ValueError("must be 'auto', -1 (all layers) or a number of layers")
    return number


def _log_level(value: Any) -> str:
    level = str(value).strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("must be one of debug, info, warning, error")
    return level


def parse_listen_address(text: str) -> tuple[str, str, int | None]:
    """``tcp:HOST:PORT`` or ``unix:PATH`` -> (kind, host_or_path, port)."""
    kind, _, rest = text.partition(":")
    if kind == "unix" and rest:
        return "unix", rest, None
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if host and port.isdigit() and 0 <= int(port) <= 65535:
            return "tcp", host, int(port)
    raise ValueError(f"{text!r} is not tcp:HOST:PORT or unix:PATH")


@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[Any], Any]
    default: Callable[[], Any]
    help: str
    seed_env: tuple[str, ...] = ()

    @property
    def env_names(self) -> tuple[str, ...]:
        return ("HOSHIKAGE_" + self.name.upper(), *self.seed_env)


def _default_state_dir() -> Path:
    # systemd's StateDirectory= tells us where we may write; a person running
    # the daemon by hand gets a per-user directory instead of needing root.
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/hoshikage")
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "hoshikage"


PACKAGED_METRICS_DIR = Path("/var/lib/hoshikage-metrics")


def _default_threads() -> int:
    from hoshikage.hardware import physical_core_count

    return physical_core_count()


OPTIONS: tuple[Option, ...] = (
    Option("listen", _listen_list, lambda: ("tcp:127.0.0.1:8000",),
           "addresses to bind when systemd passes no sockets"),
    Option("state_dir", _path, _default_state_dir,
           "where the registry, imported models and memory live"),
    Option("model_map_file", _optional_path, lambda: None,
           "model registry file (default: STATE_DIR/models.json)", ("MODEL_MAP_FILE",)),
    Option("idle_timeout_seconds", _non_negative_int, lambda: 300,
           "seconds without requests before models are released (0: never)",
           ("IDLE_TIMEOUT_SECONDS",)),
    Option("great_timeout", _positive_number, lambda: 60.0,
           "minutes without use before the RAM disk is released (fractions allowed)", ("GREAT_TIMEOUT",)),
    Option("ramdisk_path", _path, lambda: Path("/mnt/temp/hoshikage"),
           "mount point of the tmpfs that holds hot models", ("RAMDISK_PATH",)),
    Option("ramdisk_size", _positive_number, lambda: 12.0,
           "size of the RAM disk in GiB", ("RAMDISK_SIZE",)),
    Option("chroma_path", _optional_path, lambda: None,
           "ChromaDB directory (default: STATE_DIR/chroma)", ("CHROMA_PATH",)),
    Option("chroma_url", _chroma_url, lambda: None,
           "a Chroma server (http://host:port) that holds conversation memory instead of chroma_path; "
           "daemons that share it share conversations"),
    Option("chroma_token", _optional_text, lambda: None,
           "sent to the Chroma server as \"Authorization: Bearer TOKEN\" (for a proxy or a hosted server "
           "that checks it)"),
    Option("sentence_bert_model", _text, lambda: "cl-nagoya/ruri-small-v2",
           "embedding model for conversation memory", ("SENTENCE_BERT_MODEL",)),
    Option("cluster_divisor", _positive_int, lambda: 100,
           "messages per cluster when summarising", ("CLUSTER_DIVISOR",)),
    Option("min_clusters", _positive_int, lambda: 1, "fewest summary clusters", ("MIN_CLUSTERS",)),
    Option("max_clusters", _positive_int, lambda: 20, "most summary clusters", ("MAX_CLUSTERS",)),
    Option("sentence_model_alias", _optional_text, lambda: None,
           "the name under which the memory's embedding model also serves /v1/embeddings and /api/embed "
           "(default: the last part of sentence_bert_model, e.g. ruri-small-v2)"),
    Option("embedding_query_prefix", _optional_prefix, lambda: None,
           "text put before a memory query for the embedding model (default: \"クエリ: \" for ruri models, "
           "else none)"),
    Option("embedding_passage_prefix", _optional_prefix, lambda: None,
           "text put before each remembered sentence for the embedding model (default: \"文章: \" for ruri "
           "models, else none)"),
    Option("memory_retention_days", _positive_int, lambda: 30,
           "conversations unused for this many days are forgotten (checked when memory opens and when idle)"),
    Option("memory_overflow", _memory_overflow, lambda: "off",
           "chat completions longer than the context: off (400 context_length_exceeded) or summarize "
           "(memory's summary and recall, as /v1/responses always does)"),
    Option("threads", _positive_int, _default_threads,
           "decode threads per model (default: physical cores)"),
    Option("context_length", _context_length, lambda: None,
           "context window for chat models registered without --ctx: auto (the model's trained context, capped so "
           "that its slots' KV cache takes at most half the memory budget left after its weights) or a number "
           "of tokens"),
    Option("gpu_layers", parse_gpu_layers, lambda: GPU_LAYERS_AUTO,
           "layers to offload for models registered without --gpu-layers: auto (all that fit the GPU), "
           "-1 (all) or a number"),
    Option("flash_attn", _bool, lambda: True,
           "flash attention (llama-server's default too; ~9% faster decode on CPU here)"),
    Option("prompt_cache_min_tokens", _non_negative_int, lambda: 256,
           "reuse the KV cache of a shared prompt prefix at least this long"),
    Option("prompt_cache_ram_mib", _non_negative_int, lambda: 1024,
           "host memory per chat model for KV prompt-cache entries taken from slots reused for other prompts "
           "(counted in memory_budget_mib; 0: none)"),
    Option("prompt_cache_disk_mib", _non_negative_int, lambda: 4096,
           "disk per chat model for KV prompt-cache entries saved at unload and exit, restored after an idle "
           "exit (0: none)"),
    Option("prompt_cache_dir", _optional_path, lambda: None,
           "where saved KV prompt-cache entries live (default: RAMDISK_PATH/prompt-cache when the RAM disk is "
           "mounted, else STATE_DIR/prompt-cache)"),
    Option("memory_budget_mib", _non_negative_int, lambda: 0,
           "memory all loaded models may take together (0: three quarters of RAM)"),
    Option("gpu_memory_budget_mib", _non_negative_int, lambda: 0,
           "GPU memory all loaded models may take together (0: what the GPUs have free at the first "
           "load, less 1 GiB)"),
    Option("batch_invariant", _bool, lambda: True,
           "same greedy text alone or batched: skip llama.cpp's repacked weight kernels, whose "
           "rounding depends on how many tokens share a step"),
    Option("cpu_weight_repack", _cpu_weight_repack, lambda: GPU_LAYERS_AUTO,
           "let llama.cpp repack weights into its CPU-specific buffers: auto (yes, except where it would use "
           "the AMX buffer type, which crashes: llama.cpp issue #20824), on or off"),
    Option("adaptive_threads", _bool, lambda: True,
           "decode with fewer threads while other programs keep cores busy (un-niced ones), so a busy "
           "machine slows decoding in proportion instead of stalling every step"),
    Option("default_max_tokens", _non_negative_int, lambda: 0,
           "tokens an answer may take when the request sets no max_tokens/max_output_tokens/num_predict (0: until "
           "the context is full, as at OpenAI)"),
    Option("slots", _positive_int, lambda: 4,
           "requests one model decodes together (each with its own context_length of KV cache)"),
    Option("spare_slots", _non_negative_int, lambda: 1,
           "KV sequences beyond slots, taken only by an identity that holds no slot while others hold them all"),
    Option("max_queue", _non_negative_int, lambda: 32,
           "requests that may wait for a busy model; beyond them 429 with Retry-After"),
    Option("max_queue_per_identity", _non_negative_int, lambda: 16,
           "requests one identity (a uid, a key name) may have waiting for a model; beyond them 429"),
    Option("queue_timeout_seconds", _positive_number, lambda: 300.0,
           "longest a request waits for its turn before 503 with Retry-After"),
    Option("api_key", _optional_text, lambda: None,
           "one bearer key for TCP, an admin identity named api_key (the unix socket tells users by their uid)"),
    Option("api_keys", parse_api_keys, lambda: (),
           "named bearer keys for TCP: name -> key, sha256:HEX, or {key, admin}; each name is an identity"),
    Option("exit_when_idle", _bool, lambda: False,
           "exit after idle_timeout_seconds instead of only releasing models (on under socket activation)"),
    Option("max_body_bytes", _positive_int, lambda: 8 * 1024 * 1024,
           "largest request body accepted (413 beyond it)"),
    Option("body_timeout_seconds", _positive_number, lambda: 60.0,
           "longest a request body may take to arrive (408 beyond it)"),
    Option("connection_idle_seconds", _positive_number, lambda: 30.0,
           "a connection with no request in progress for this long is closed (the keep-alive timeout; "
           "also for a request head that trickles in)"),
    Option("max_connections", _positive_int, lambda: 512,
           "open connections at most; beyond, the longest idle one is closed, or 503 when all are busy"),
    Option("embedded_model", _bool, lambda: True,
           "register the packaged gemma3-270m model on start when it is installed"),
    Option("metrics", _bool, lambda: True,
           "write Prometheus figures to metrics_textfile for node_exporter's textfile collector"),
    Option("metrics_textfile", _optional_path, lambda: None,
           "where the figures go (default: /var/lib/hoshikage-metrics/hoshikage.prom when that directory "
           "exists, as the packages create it, readable by node_exporter's user; else "
           "STATE_DIR/metrics/hoshikage.prom)"),
    Option("metrics_interval_seconds", _positive_number, lambda: 15.0,
           "how often the figures are written while the daemon runs (and once at exit)"),
    Option("log_level", _log_level, lambda: "INFO", "debug, info, warning or error"),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


@dataclasses.dataclass(frozen=True)
class Settings:
    listen: tuple[str, ...]
    state_dir: Path
    model_map_file: Path | None
    idle_timeout_seconds: int
    great_timeout: float
    ramdisk_path: Path
    ramdisk_size: float
    chroma_path: Path | None
    chroma_url: str | None
    chroma_token: str | None
    sentence_bert_model: str
    sentence_model_alias: str | None
    cluster_divisor: int
    min_clusters: int
    max_clusters: int
    embedding_query_prefix: str | None
    embedding_passage_prefix: str | None
    memory_retention_days: int
    memory_overflow: str
    threads: int
    context_length: int | None  # None: auto (engine/context_choice.py)
    gpu_layers: int | str
    flash_attn: bool
    prompt_cache_min_tokens: int
    prompt_cache_ram_mib: int
    prompt_cache_disk_mib: int
    prompt_cache_dir: Path | None
    memory_budget_mib: int
    gpu_memory_budget_mib: int
    batch_invariant: bool
    cpu_weight_repack: str
    adaptive_threads: bool
    default_max_tokens: int
    slots: int
    spare_slots: int
    max_queue: int
    max_queue_per_identity: int
    queue_timeout_seconds: float
    api_key: str | None
    api_keys: tuple[ApiKey, ...]
    exit_when_idle: bool
    max_body_bytes: int
    body_timeout_seconds: float
    connection_idle_seconds: float
    max_connections: int
    embedded_model: bool
    metrics: bool
    metrics_textfile: Path | None
    metrics_interval_seconds: float
    log_level: str

    @property
    def tcp_keys(self) -> tuple[ApiKey, ...]:
        """Every key TCP accepts: the named ones and the single api_key (checked in load_settings)."""
        return with_single_key(self.api_keys, self.api_key)

    @property
    def registry_file(self) -> Path:
        return self.model_map_file or self.state_dir / "models.json"

    @property
    def sentence_model_name(self) -> str:
        """The memory's embedding model as the APIs list it: the setting, else its name's last part."""
        if self.sentence_model_alias:
            return self.sentence_model_alias
        parts = [part for part in Path(self.sentence_bert_model.rstrip("/")).parts if part != "/"]
        # A package's model directory is often just "model": its parent names it.
        if len(parts) > 1 and parts[-1].lower() in ("model", "models"):
            return parts[-2]
        return parts[-1] if parts else self.sentence_bert_model

    @property
    def metrics_path(self) -> Path | None:
        """The textfile the figures go to; None when metrics are off."""
        if not self.metrics:
            return None
        if self.metrics_textfile:
            return self.metrics_textfile
        if PACKAGED_METRICS_DIR.is_dir():  # created by hoshikage.tmpfiles for node_exporter
            return PACKAGED_METRICS_DIR / "hoshikage.prom"
        return self.state_dir / "metrics" / "hoshikage.prom"

    @property
    def memory_dir(self) -> Path:
        return self.chroma_path or self.state_dir / "chroma"

    @property
    def models_dir(self) -> Path:
        return self.state_dir / "models"


def load_settings(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge every layer into Settings, or raise ConfigError naming the bad key."""
    environ = os.environ if environ is None else environ
    raw: dict[str, tuple[Any, str]] = {}

    explicit_file = config_file or _env_path(environ, "HOSHIKAGE_CONFIG")
    for path in _config_files(explicit_file or DEFAULT_CONFIG_FILE, required=explicit_file is not None):
        for key, value in _read_yaml(path).items():
            if key not in OPTIONS_BY_NAME:
                raise ConfigError(f"{path}: unknown key {key!r}")
            raw[key] = (value, str(path))

    for option in OPTIONS:
        # The HOSHIKAGE_ name wins over the seed's alias when both are set.
        env_name = next((name for name in option.env_names if name in environ), None)
        if env_name is not None:
            raw[option.name] = (environ[env_name], f"environment {env_name}")

    for key, value in (flags or {}).items():
        if value is not None:
            raw[key] = (value, "command line")

    values = {}
    for option in OPTIONS:
        if option.name in raw:
            value, source = raw[option.name]
            try:
                values[option.name] = option.parse(value)
            except ValueError as error:
                raise ConfigError(f"{option.name}: {error} (got {value!r} from {source})") from None
        else:
            values[option.name] = option.default()
    if values["min_clusters"] > values["max_clusters"]:
        raise ConfigError(
            f"min_clusters: must not exceed max_clusters "
            f"({values['min_clusters']} > {values['max_clusters']})"
        )
    try:
        with_single_key(values["api_keys"], values["api_key"])
    except ValueError as error:
        raise ConfigError(f"api_keys: {error}") from None
    return Settings(**values)


def _env_path(environ: Mapping[str, str], name: str) -> Path | None:
    return Path(environ[name]) if environ.get(name) else None


def _config_files(main_file: Path, *, required: bool) -> list[Path]:
    """The main YAML file, then ``conf.d/*.yaml`` beside it in name order."""
    files = []
    try:
        present = main_file.exists() and not main_file.is_dir()  # /dev/null counts: "no settings"
    except PermissionError:  # a directory this user may not search: _read_yaml says so, not a traceback
        present = True
    if present:
        files.append(main_file)
    elif required:
        raise ConfigError(f"config file {main_file} does not exist")
    drop_in_dir = main_file.parent / "conf.d"
    if drop_in_dir.is_dir():
        files.extend(sorted(drop_in_dir.glob("*.yaml")))
    return files


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: must be a mapping of key: value")
    return document
