import pytest

from hoshikage.gguf_meta import GGUFError, read_gguf_info
from tests.conftest import write_tiny_gguf


def test_reads_metadata_of_a_written_file(tmp_path):
    path = write_tiny_gguf(tmp_path / "m.gguf", architecture="llama", template="{{ messages }}")
    info = read_gguf_info(path)
    assert info.architecture == "llama"
    assert info.name == "tiny test model"
    assert info.context_length == 128
    assert info.quantization == "F16"
    assert info.parameter_count == 32
    assert info.chat_template == "{{ messages }}"
    assert info.summary()["has_chat_template"] is True


def test_reads_the_real_gemma_model(gemma_path):
    info = read_gguf_info(gemma_path)
    assert info.architecture == "gemma3"
    assert info.quantization == "Q4_K_M"
    assert info.context_length == 32768
    assert 250e6 < info.parameter_count < 300e6
    assert info.chat_template is None
    assert info.metadata["tokenizer.ggml.tokens"] == {"array_length": 262144}


@pytest.mark.parametrize("content,reason", [
    (b"", "not a GGUF model"),
    (b"PK\x03\x04" + b"\0" * 40, "not a GGUF model (starts with b'PK"),
    (b"GGUF" + (9).to_bytes(4, "little") + b"\0" * 40, "GGUF version 9 is not supported"),
])
def test_rejects_non_gguf(tmp_path, content, reason):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(GGUFError, match=reason.replace("(", r"\(").replace("'", ".")):
        read_gguf_info(path)


def test_rejects_truncated_file(tmp_path):
    whole = write_tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:60])
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf_info(cut)


def test_unreadable_and_directory(tmp_path):
    with pytest.raises(GGUFError, match="cannot read"):
        read_gguf_info(tmp_path / "missing.gguf")
    with pytest.raises(GGUFError, match="is a directory"):
        read_gguf_info(tmp_path)
