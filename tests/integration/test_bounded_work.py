"""Work a request controls is bounded and can be let go (issue 21): a grammar step, a stop.

On the real model: a sequence whose token takes too long to find under its grammar fails alone while the
others in its batch finish; a cancelled request is let go in the middle of a whole-vocabulary grammar
pass; and a stop that the graceful path cannot finish still ends the process, non-zero.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import numpy as np
import pytest

from hoshikage.engine import sampling
from hoshikage.engine.llama import LoadedModel, LoadOptions
from hoshikage.engine.sampling import GrammarTooCostly, Sampler, SamplingCancelled, SamplingParams
from hoshikage.engine.scheduler import GenerationFailed, ModelScheduler
from hoshikage.registry import ModelEntry
from tests.llama_reference import repack_allowed

# Only text the model would hardly ever choose: the whole vocabulary gets checked at the first step.
RARE = 'root ::= "zqzqzq" [0-9]+'


@pytest.fixture(scope="module")
def model(gemma_path):
    entry = ModelEntry("gemma", str(gemma_path), 512, None, "gemma", False, 0.0, None)
    loaded = LoadedModel.load(entry, LoadOptions(context_length=512, gpu_layers=0, threads=2, slots=2,
                                                 weight_repack=repack_allowed()))
    yield loaded
    loaded.close()


def whole_vocabulary(model):
    data = np.empty(model.n_vocab, dtype=sampling._TOKEN_DATA)
    data["id"] = np.arange(model.n_vocab, dtype=np.int32)
    data["logit"] = 0.0
    data["p"] = 0.0
    return data


def test_a_cancelled_request_is_let_go_in_the_middle_of_a_grammar_pass(model):
    cancelled = threading.Event()
    sampler = Sampler(SamplingParams(temperature=0, grammar=RARE), model.n_vocab, vocab=model.model.vocab,
                      cancelled=cancelled)
    try:
        data = whole_vocabulary(model)
        sampler._apply_grammar(data)  # not cancelled: the whole pass, and the grammar allows few tokens
        allowed = int(np.isfinite(data["logit"]).sum())
        assert 0 < allowed < model.n_vocab // 100
        cancelled.set()
        with pytest.raises(SamplingCancelled):
            sampler._apply_grammar(whole_vocabulary(model))
    finally:
        sampler.close()


def test_a_grammar_step_over_its_time_fails_that_request_and_the_batch_goes_on(model, monkeypatch):
    monkeypatch.setattr(sampling, "GRAMMAR_STEP_SECONDS", 0.0)  # every whole-vocabulary pass is "too long"

    async def run():
        scheduler = ModelScheduler(model, max_waiting=4)
        try:
            costly = scheduler.submit(model.completion_prompt("The lighthouse", ()),
                                      SamplingParams(temperature=0, grammar=RARE), 8)
            plain = scheduler.submit(model.completion_prompt("The harbour", ()), SamplingParams(temperature=0), 8)

            async def drain(stream):
                return [chunk async for chunk in stream]

            results = await asyncio.gather(drain(costly), drain(plain), return_exceptions=True)
        finally:
            await scheduler.close()
        return results

    failed, finished = asyncio.run(run())
    assert isinstance(failed, GenerationFailed) and isinstance(failed.__cause__, GrammarTooCostly), failed
    assert finished[-1].finish_reason == "length" and finished[-1].completion_tokens == 8


def test_a_stop_that_hangs_ends_the_process_anyway():
    script = ("import logging, sys, time; logging.basicConfig(stream=sys.stderr)\n"
              "from hoshikage.daemon import _exit_if_stuck\n"
              "_exit_if_stuck(0.5, 'SIGTERM received')\n"
              "time.sleep(600)  # a stop that never finishes\n")
    stopped = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 70
    assert "stopping (SIGTERM received) took more than 0.5 s" in stopped.stderr
