from pathlib import Path

import pytest

from hoshikage.config import ConfigError, load_settings, parse_listen_address


def settings(tmp_path, environ=None, flags=None, yaml_text="", drop_ins=None):
    config = tmp_path / "hoshikage.yaml"
    config.write_text(yaml_text)
    for name, text in (drop_ins or {}).items():
        (tmp_path / "conf.d").mkdir(exist_ok=True)
        (tmp_path / "conf.d" / name).write_text(text)
    return load_settings(config_file=config, environ=environ or {}, flags=flags)


def test_defaults_match_the_seed(tmp_path):
    result = settings(tmp_path)
    assert result.idle_timeout_seconds == 300
    assert result.great_timeout == 60
    assert result.ramdisk_path == Path("/mnt/temp/hoshikage")
    assert result.ramdisk_size == 12
    assert (result.cluster_divisor, result.min_clusters, result.max_clusters) == (100, 1, 20)
    assert result.sentence_bert_model == "cl-nagoya/ruri-small-v2"
    assert result.listen == ("tcp:127.0.0.1:8000",)
    assert result.threads >= 1


def test_precedence_defaults_yaml_dropin_env_flags(tmp_path):
    yaml_text = "idle_timeout_seconds: 10\ngreat_timeout: 5\nmax_clusters: 7\nthreads: 3\n"
    drop_ins = {"50-more.yaml": "great_timeout: 6\nmax_clusters: 8\n"}
    result = settings(tmp_path, yaml_text=yaml_text, drop_ins=drop_ins,
                      environ={"GREAT_TIMEOUT": "9", "HOSHIKAGE_MAX_CLUSTERS": "9"},
                      flags={"max_clusters": 11})
    assert result.idle_timeout_seconds == 10  # yaml
    assert result.threads == 3  # yaml
    assert result.great_timeout == 9  # env (seed alias) beats the drop-in
    assert result.max_clusters == 11  # flag beats env


def test_hoshikage_env_name_beats_seed_alias(tmp_path):
    result = settings(tmp_path, environ={"IDLE_TIMEOUT_SECONDS": "1", "HOSHIKAGE_IDLE_TIMEOUT_SECONDS": "2"})
    assert result.idle_timeout_seconds == 2


def test_seed_env_names_still_work(tmp_path):
    result = settings(tmp_path, environ={
        "IDLE_TIMEOUT_SECONDS": "42", "RAMDISK_PATH": "/mnt/x", "RAMDISK_SIZE": "2.5",
        "MODEL_MAP_FILE": "/srv/map.json", "CHROMA_PATH": "/srv/chroma",
        "SENTENCE_BERT_MODEL": "some/model", "CLUSTER_DIVISOR": "50", "MIN_CLUSTERS": "2",
        "MAX_CLUSTERS": "4", "GREAT_TIMEOUT": "3"})
    assert result.idle_timeout_seconds == 42
    assert result.ramdisk_path == Path("/mnt/x") and result.ramdisk_size == 2.5
    assert result.registry_file == Path("/srv/map.json")
    assert result.chroma_path == Path("/srv/chroma")
    assert (result.cluster_divisor, result.min_clusters, result.max_clusters) == (50, 2, 4)


@pytest.mark.parametrize("environ,expected", [
    ({"IDLE_TIMEOUT_SECONDS": "soon"}, "idle_timeout_seconds: must be an integer (got 'soon' from environment IDLE_TIMEOUT_SECONDS)"),
    ({"HOSHIKAGE_THREADS": "0"}, "threads: must be a positive integer"),
    ({"RAMDISK_SIZE": "-1"}, "ramdisk_size: must be greater than zero"),
    ({"HOSHIKAGE_LISTEN": "http://x"}, "listen: 'http://x' is not tcp:HOST:PORT or unix:PATH"),
    ({"HOSHIKAGE_LOG_LEVEL": "loud"}, "log_level: must be one of"),
    ({"MIN_CLUSTERS": "5", "MAX_CLUSTERS": "2"}, "min_clusters: must not exceed max_clusters"),
])
def test_invalid_values_name_the_key_and_reason(tmp_path, environ, expected):
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, environ=environ)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'idle_timeout'"):
        settings(tmp_path, yaml_text="idle_timeout: 3\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        settings(tmp_path, yaml_text="a: [1,\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        settings(tmp_path, yaml_text="- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"max_clusters: must be an integer \(got 'many' from .*hoshikage.yaml\)"):
        settings(tmp_path, yaml_text="max_clusters: many\n")


def test_explicit_config_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "missing.yaml", environ={})


def test_shipped_default_config_file_is_valid():
    shipped = Path(__file__).resolve().parents[2] / "etc" / "hoshikage" / "hoshikage.yaml"
    result = load_settings(config_file=shipped, environ={})
    assert result.idle_timeout_seconds == 300


@pytest.mark.parametrize("text,parsed", [
    ("tcp:127.0.0.1:8000", ("tcp", "127.0.0.1", 8000)),
    ("tcp:[::1]:80", ("tcp", "::1", 80)),
    ("unix:/run/hoshikage/hoshikage.sock", ("unix", "/run/hoshikage/hoshikage.sock", None)),
])
def test_listen_addresses(text, parsed):
    assert parse_listen_address(text) == parsed


@pytest.mark.parametrize("text", ["tcp:host", "tcp:host:99999", "unix:", "udp:1.2.3.4:5"])
def test_bad_listen_addresses(text):
    with pytest.raises(ValueError):
        parse_listen_address(text)


def test_gpu_layers_default_to_auto_and_take_numbers(tmp_path):
    assert settings(tmp_path).gpu_layers == "auto"
    assert settings(tmp_path, environ={"HOSHIKAGE_GPU_LAYERS": "-1"}).gpu_layers == -1
    assert settings(tmp_path, yaml_text="gpu_layers: 20\n").gpu_layers == 20
    with pytest.raises(ConfigError, match=r"gpu_layers: must be 'auto', -1 \(all layers\) or a number"):
        settings(tmp_path, environ={"HOSHIKAGE_GPU_LAYERS": "-5"})


def test_memory_settings(tmp_path):
    config = tmp_path / "hoshikage.yaml"
    config.write_text("memory_overflow: off\nmemory_retention_days: 7\nembedding_query_prefix: ''\n")
    settings = load_settings(config_file=config, environ={"HOSHIKAGE_EMBEDDING_PASSAGE_PREFIX": "passage: "})
    assert (settings.memory_overflow, settings.memory_retention_days) == ("off", 7)
    assert (settings.embedding_query_prefix, settings.embedding_passage_prefix) == ("", "passage: ")
    assert load_settings(config_file=config, environ={"HOSHIKAGE_MEMORY_OVERFLOW": "summarize"}).memory_overflow == \
        "summarize"
    with pytest.raises(ConfigError, match="memory_overflow: must be off or summarize"):
        load_settings(config_file=config, environ={"HOSHIKAGE_MEMORY_OVERFLOW": "sometimes"})


def test_embedding_prefixes_follow_the_model():
    from hoshikage.memory.embed import Embedder

    assert (Embedder("cl-nagoya/ruri-small-v2").query_prefix, Embedder("cl-nagoya/ruri-small-v2").passage_prefix) \
        == ("クエリ: ", "文章: ")
    assert Embedder("/models/all-MiniLM-L6-v2").query_prefix == ""
    assert Embedder("cl-nagoya/ruri-small-v2", query_prefix="").query_prefix == ""


def test_the_configuration_man_page_describes_every_option():
    """docs/hoshikage.yaml.5 has an entry (.TP, then the key in bold) for each option the daemon reads."""
    import re

    from hoshikage.config import OPTIONS

    page = (Path(__file__).resolve().parents[2] / "docs" / "hoshikage.yaml.5").read_text()
    described = set(re.findall(r"^\.TP\n\.B (\S+)$", page, re.M))
    assert {option.name for option in OPTIONS} <= described
