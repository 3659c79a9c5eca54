"""The weight-repacking rule (issue 20) on stubbed CPUs: what llama.cpp offers, and /proc/cpuinfo when it cannot say."""

from __future__ import annotations

import pytest

from hoshikage.config import ConfigError, load_settings
from hoshikage.engine.cpu_weights import cpu_flags, decide
from hoshikage.engine.llama import LoadOptions

SAPPHIRE_RAPIDS = frozenset("sse4_2 avx avx2 avx512f avx512_bf16 avx512_fp16 amx_tile amx_int8 amx_bf16".split())
ZEN4 = frozenset("sse4_2 avx avx2 avx512f avx512_bf16 avx512_vnni".split())
HASWELL = frozenset("sse4_2 avx avx2 fma".split())


@pytest.mark.parametrize("buffer_types,flags,allowed", [
    (("AMX", "CPU_REPACK"), SAPPHIRE_RAPIDS, False),  # a native or sapphirerapids-variant build on an AMX Xeon
    (("CPU_REPACK",), SAPPHIRE_RAPIDS, True),  # a variant built without AMX: nothing crashes here
    (("CPU_REPACK",), ZEN4, True),
    ((), HASWELL, True),
    (None, SAPPHIRE_RAPIDS, False),  # llama.cpp could not be asked: the CPU's flags decide, conservatively
    (None, ZEN4, True),
    (None, frozenset(), True),
])
def test_auto_keeps_weights_out_of_the_amx_buffer_only(buffer_types, flags, allowed):
    decision = decide("auto", buffer_types, flags)
    assert decision.allowed is allowed
    if not allowed:
        assert "#20824" in decision.reason and "cpu_weight_repack: on" in decision.reason


def test_a_variant_with_amx_does_not_bring_the_amx_buffer_back():
    # Whatever /proc/cpuinfo says, an AMX buffer type offered by the loaded backend turns repacking off.
    assert decide("auto", ("CPU_REPACK", "AMX"), ZEN4).allowed is False


def test_the_admin_decides_with_on_and_off():
    opted_in = decide("on", ("AMX",), SAPPHIRE_RAPIDS)
    assert opted_in.allowed and "known to crash" in opted_in.reason
    assert decide("on", (), HASWELL).allowed
    assert not decide("off", ("CPU_REPACK",), HASWELL).allowed
    assert not decide("off", None, frozenset()).allowed


def test_an_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="auto, on, off"):
        decide("sometimes", (), HASWELL)


def test_describe_names_what_llama_cpp_offered():
    described = decide("auto", ("AMX", "CPU_REPACK"), SAPPHIRE_RAPIDS).describe()
    assert described == {"allowed": False, "setting": "auto", "reason": described["reason"],
                         "extra_buffer_types": ["AMX", "CPU_REPACK"]}
    assert decide("auto", None, ZEN4).describe()["extra_buffer_types"] is None


def test_cpu_flags_reads_the_first_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_int8\nbugs\t: x\n\nflags\t: other\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse", "avx512f", "amx_int8"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize("embedding,batch_invariant,allowed,repacked", [
    (False, True, True, False),  # chat: batch invariance keeps plain weights
    (False, False, True, True),
    (False, False, False, False),  # the rule says no: never
    (True, True, True, True),  # embedding models are not batched across requests
    (True, True, False, False),
])
def test_load_options_apply_the_rule_to_chat_and_embedding_models(embedding, batch_invariant, allowed, repacked):
    options = LoadOptions(context_length=512, gpu_layers=0, threads=1, batch_invariant=batch_invariant,
                          weight_repack=allowed)
    assert options.repacks_weights(embedding) is repacked


@pytest.mark.parametrize("text,expected", [("", "auto"), ("cpu_weight_repack: on\n", "on"),
                                           ("cpu_weight_repack: off\n", "off"),
                                           ("cpu_weight_repack: AUTO\n", "auto")])
def test_the_setting_reads_yaml_on_and_off(tmp_path, text, expected):
    config = tmp_path / "hoshikage.yaml"
    config.write_text(text)
    assert load_settings(config_file=config, environ={}).cpu_weight_repack == expected


def test_a_bad_setting_names_the_choices(tmp_path):
    config = tmp_path / "hoshikage.yaml"
    config.write_text("cpu_weight_repack: fast\n")
    with pytest.raises(ConfigError, match="cpu_weight_repack: must be auto, on or off"):
        load_settings(config_file=config, environ={})
