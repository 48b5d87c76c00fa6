"""Child process that sends chat requests through the `openai` SDK for its parent.

Run as ``python -m promptctl.providers._sender CONFIG_JSON`` with the API key in
``PROMPTCTL_SENDER_KEY``. It reads one JSON request per line on stdin and writes
one JSON answer per line on stdout, in completion order:

- ``{"id": N, "model": ..., "messages": [...], "params": {...}}`` sends a request;
  ``{"cancel": N}`` abandons one.
- ``{"ready": true}`` comes first, once the SDK client is built.
- ``{"id": N, "ok": {ChatResponse fields}}``, ``{"id": N, "failed": [message, status,
  attempts]}`` or ``{"id": N, "fatal": {"type", "message", "fix"}}`` answer it.

The SDK costs about 2 ms of CPU per request, so at high concurrency one process
saturates one core; several of these share the work over every core. The SDK's
own retries run here, so a retried request never crosses the pipe twice.

End of stdin (the parent closed it, or died) cancels what is in flight and exits.
Ctrl-C is the parent's to handle: the child ignores SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import traceback
from dataclasses import asdict
from typing import Any

KEY_ENV = "PROMPTCTL_SENDER_KEY"
LINE_LIMIT = 1 << 30  # a line holds a whole request or completion


async def _serve(config: dict[str, Any], api_key: str, out_fd: int) -> None:
    from promptctl.errors import PromptctlError
    from promptctl.providers.base import ChatRequest, RequestFailed
    from promptctl.providers.openai import OpenAIProvider

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", buffering=0))
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    provider = OpenAIProvider(config["name"], config["base_url"], api_key,
                              concurrency=config["concurrency"], aiohttp=_has_aiohttp())
    tasks: dict[int, asyncio.Task[None]] = {}
    writer.write(b'{"ready": true}\n')

    async def handle(msg: dict[str, Any]) -> None:
        rid = msg["id"]
        answer: dict[str, Any]
        try:
            res = await provider.complete(ChatRequest(msg["model"], msg["messages"], msg["params"]))
            answer = {"id": rid, "ok": asdict(res)}
        except RequestFailed as exc:
            answer = {"id": rid, "failed": [str(exc), exc.status, exc.attempts]}
        except PromptctlError as exc:
            answer = {"id": rid, "fatal": {"type": type(exc).__name__, "message": exc.message,
                                           "fix": exc.fix}}
        except Exception as exc:  # a bug: keep the traceback, and do not leave the parent waiting
            traceback.print_exc()
            answer = {"id": rid, "fatal": {"type": "ProviderError", "fix": None,
                                           "message": f"internal error in the sender process: {exc!r}"}}
        finally:
            tasks.pop(rid, None)
        writer.write(json.dumps(answer).encode("utf-8") + b"\n")
        await writer.drain()

    try:
        while line := await reader.readline():
            msg = json.loads(line)
            if "cancel" in msg:
                task = tasks.get(msg["cancel"])
                if task is not None:
                    task.cancel()
                continue
            tasks[msg["id"]] = asyncio.create_task(handle(msg))
    finally:
        for task in list(tasks.values()):
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await provider.aclose()


def _has_aiohttp() -> bool:
    import importlib.util

    return importlib.util.find_spec("aiohttp") is not None


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = sys.argv[1:] if argv is None else argv
    config = json.loads(args[0])
    api_key = os.environ.pop(KEY_ENV, "none")
    # The protocol owns the real stdout; a library that prints goes to stderr instead.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    asyncio.run(_serve(config, api_key, out_fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
