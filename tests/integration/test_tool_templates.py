"""The tool-call parsers, on what real models' chat templates render for a turn that calls tools.

The templates are the ones llama.cpp keeps for its own tests (models/templates in the
llama.cpp tree vendored in llama-cpp-python's sdist, fetched once from PyPI and cached).
Each template renders a conversation whose assistant turn calls two functions; what it
wrote for that turn is what the model was tuned to produce, and the parser for the
template's family must read both calls back.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from hoshikage.engine.chat_format import TEMPLATE_FORMAT, ChatFormatter
from hoshikage.engine.tools import HERMES, LLAMA3, MISTRAL, Tool, family_of, parse_calls

TEMPLATES = {  # file in llama.cpp/models/templates -> the family its syntax belongs to
    "Qwen-Qwen2.5-7B-Instruct.jinja": HERMES,
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": HERMES,
    "meta-llama-Llama-3.1-8B-Instruct.jinja": LLAMA3,
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": MISTRAL,
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": MISTRAL,
}
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "</s>")
TOOLS = [Tool("get_weather", "Weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}}),
         Tool("get_time", "Time in a zone", {"type": "object", "properties": {"zone": {"type": "string"}}})]
CALLS = [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "CET"})]


@pytest.fixture(scope="module")
def templates() -> Path:
    version = importlib.metadata.version("llama-cpp-python")
    cache = Path.home() / ".cache" / "hoshikage-test" / f"llama.cpp-templates-{version}"
    if not (cache / TEMPLATES_SENTINEL).exists():
        download = cache.parent / "sdist"
        download.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", str(download)], check=True, capture_output=True)
        archive = download / f"llama_cpp_python-{version}.tar.gz"
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as sdist:
            for member in sdist.getmembers():
                if "/models/templates/" in member.name and member.name.endswith(".jinja"):
                    (cache / Path(member.name).name).write_bytes(sdist.extractfile(member).read())
        archive.unlink()
        (cache / TEMPLATES_SENTINEL).touch()
    return cache


TEMPLATES_SENTINEL = ".complete"


def _rendered_turn(template: str, wanted: list) -> str:
    formatter = ChatFormatter(TEMPLATE_FORMAT, template=template, bos_token="<s>", eos_token="</s>")
    user = [{"role": "user", "content": "Weather and time in Paris?"}]
    calls = [{"id": f"call{index:05d}", "type": "function",  # Mistral's templates want 9-character ids
              "function": {"name": name, "arguments": json.dumps(arguments)}}
             for index, (name, arguments) in enumerate(wanted)]
    prompt = formatter.format(user, TOOLS).text
    whole = formatter.format(user + [{"role": "assistant", "content": "", "tool_calls": calls}], TOOLS).text
    assert whole.startswith(prompt), "the template renders the conversation's start the same way"
    turn = whole[len(prompt):]
    ends = [turn.find(marker) for marker in END_OF_TURN if marker in turn]
    return turn[:min(ends)] if ends else turn  # the model stops at its end-of-turn token


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_each_family_reads_back_what_its_template_renders(templates, name):
    template = (templates / name).read_text()
    assert family_of(template) == TEMPLATES[name]
    expected = CALLS if TEMPLATES[name] != LLAMA3 else CALLS[:1]  # Llama 3.1 allows one call per turn
    turn = _rendered_turn(template, expected)
    content, calls = parse_calls(turn, family_of(template), {tool.name for tool in TOOLS})
    assert [(call.name, json.loads(call.arguments)) for call in calls] == expected, turn
    assert not content.strip(), turn
