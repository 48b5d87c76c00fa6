"""Reading a batch's output file: seconds per file of one long line, for lines of growing size.

The time should grow in step with the line (linear), not with its square: before the reader
split each chunk once, a line of 40 MB took 14 s and one of 80 MB 54 s. The fake server
(tests/fakeserver.py) serves the file over real HTTP on 127.0.0.1 to the real openai SDK.

Each size is read twice: with the line cap raised above it (the line is parsed and its answer
read), and with the default cap of ReadLimits (a longer line is skipped as it streams in).

Run: python bench/batch_lines.py [MB ...]   (default: 1 10 40 80)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promptctl.providers.base import BatchInfo, ReadLimits  # noqa: E402
from promptctl.providers.batch import OpenAIBatches  # noqa: E402
from promptctl.providers.openai import OpenAIProvider  # noqa: E402
from tests.fakeserver import FakeOpenAI  # noqa: E402


def output_line(megabytes: float) -> bytes:
    text = "x" * int(megabytes * 1024 * 1024)
    line = {"id": "batch_req_1", "custom_id": '["eval","r1",0]',
            "response": {"status_code": 200, "request_id": "req_1", "body": {
                "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1}}},
            "error": None}
    return (json.dumps(line) + "\n").encode()


async def read_once(server: FakeOpenAI, content: bytes, limits: ReadLimits) -> tuple[float, int]:
    file_id = server._new_file(content, "out.jsonl", "batch_output")
    provider = OpenAIProvider("openai", server.base_url, "bench", concurrency=1, timeout=600,
                              max_retries=0)
    api = OpenAIBatches(provider)
    api.limits = limits
    info = BatchInfo(id="batch_bench", status="completed", output_file_id=file_id)
    started = time.perf_counter()
    chars = 0
    try:
        async for _, result in api.results(info):
            chars += len(getattr(result, "text", "") or "")
    finally:
        await api.aclose()
    return time.perf_counter() - started, chars


def main(sizes: list[float]) -> None:
    with FakeOpenAI() as server:
        for megabytes in sizes:
            content = output_line(megabytes)
            raised = ReadLimits(line_bytes=2 * len(content))
            for label, limits in (("cap raised", raised), ("default cap", ReadLimits())):
                seconds, chars = asyncio.run(read_once(server, content, limits))
                print(f"one line of {megabytes:g} MB, {label}: {seconds:.2f} s "
                      f"({seconds / megabytes:.3f} s/MB, {chars:,} characters of answer)",
                      flush=True)


if __name__ == "__main__":
    main([float(a) for a in sys.argv[1:]] or [1.0, 10.0, 40.0, 80.0])
