"""The daemon loads llama.cpp's libraries, on its main thread, before numpy (issue 9).

On a CUDA build the daemon crashed in llama_model_load_from_file when numpy
(and OpenBLAS's thread pool) came first and llama.cpp's backends were first
brought up on a worker thread; engine/native.py explains. This machine has no
GPU to crash, so the test guards the rule the fix relies on: in the real
`hoshikage serve` process, libllama is opened on the main thread before any
other thread exists and before anything imports numpy, and a model still
loads and answers.
"""

from __future__ import annotations

import json

import httpx

from tests.conftest import Daemon, register

# Runs `python -m hoshikage` with an audit hook that notes, in order, when
# libllama is opened and when numpy is first imported, and whether that
# happened on the main thread while no other thread existed yet.
RECORDING_LAUNCHER = """
import json, os, runpy, sys, threading
events = []
def note(event, args):
    if event == "ctypes.dlopen" and "libllama" in str(args[0]):
        events.append(["libllama", threading.current_thread() is threading.main_thread(),
                       threading.active_count() == 1])
    elif event == "import" and args[0] == "numpy" and not any(event[0] == "numpy" for event in events):
        events.append(["numpy", threading.current_thread() is threading.main_thread(),
                       threading.active_count() == 1])
        with open(os.environ["ORDER_FILE"], "w") as out:
            json.dump(events, out)
sys.addaudithook(note)
runpy.run_module("hoshikage", run_name="__main__", alter_sys=True)
"""


def test_llama_cpp_is_loaded_on_the_main_thread_before_numpy(tmp_path, gemma_path):
    register(tmp_path, gemma_path, "gemma", "--chat-format", "gemma", "--ctx", "512")
    order_file = tmp_path / "order.json"
    daemon = Daemon(tmp_path, {"ORDER_FILE": str(order_file)}, "--no-embedded-model",
                    launcher=("-c", RECORDING_LAUNCHER))
    try:
        answer = httpx.post(f"{daemon.base_url}/v1/chat/completions", timeout=120, json={
            "model": "gemma", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
        assert answer.status_code == 200, answer.text
    finally:
        daemon.stop()
    events = json.loads(order_file.read_text())
    assert events[0] == ["libllama", True, True], events  # first, on the main thread, before any other thread
    assert events[1][0] == "numpy", events
