"""`eval --batch` against a batch server that cannot be trusted: long and hostile result
lines, and files without end. Each ends as error rows or a clear error that leaves the run
resumable, never as a crash (exit 4) or a hang."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptctl.engine.batch import BatchLimits
from promptctl.errors import InputError
from promptctl.providers.base import BatchInfo, ReadLimits
from promptctl.providers.batch import OpenAIBatches
from promptctl.providers.openai import OpenAIProvider
from promptctl.store import SQLiteStore
from tests.fakeserver import FakeOpenAI
from tests.helpers import invoke, store_db

pytestmark = pytest.mark.usefixtures("quick_polls")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    # The store the CLI of these tests opens too (PROMPTCTL_STORE, set by `isolated`).
    path = store_db(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = SQLiteStore(path)
    yield s
    s.close()


def only_run(store: SQLiteStore) -> dict[str, Any]:
    (run,) = store.list_runs()
    return dict(store.get_run(str(run["id"])))


# -- reading files: linear in their size, capped per line and per file ----------------------


def test_lines_are_split_at_each_newline_and_a_line_over_the_cap_is_skipped(
        server: FakeOpenAI) -> None:
    # Long enough to span many chunks of the download; the cap is exactly its length.
    long = json.dumps({"custom_id": "long", "pad": "x" * 300_000}).encode()
    too_long = json.dumps({"custom_id": "too long", "pad": "x" * 300_001}).encode()
    content = (b'{"custom_id": "a"}\n\n' + long + b"\n" + too_long + b'\n{"custom_id": "b"}\n'
               + b'[1]\n{"custom_id": "c"}')  # no newline after the last line
    file_id = server._new_file(content, "out.jsonl", "batch_output")

    async def read() -> list[tuple[str | None, str]]:
        api = OpenAIBatches(OpenAIProvider("openai", server.base_url, "k", concurrency=1,
                                           max_retries=0))
        api.limits = ReadLimits(line_bytes=len(long))
        try:
            return [(cid, str(result)) async for cid, result in
                    api.results(BatchInfo(id="batch_x", status="completed", output_file_id=file_id))]
        finally:
            await api.aclose()

    malformed = "the batch gave a malformed result line for this request"
    assert asyncio.run(read()) == [("a", malformed), ("long", malformed), ("b", malformed),
                                   ("c", malformed)]


def test_a_result_file_over_the_cap_stops_the_run_which_resumes(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCTL_BATCH_MAX_RESULT_BYTES", "300")
    result = invoke("eval", "prompts/echo.yaml", "--batch", code=3)
    assert "the file is over 300 bytes ($PROMPTCTL_BATCH_MAX_RESULT_BYTES); stopped reading it" \
        in result.stderr
    assert "raise PROMPTCTL_BATCH_MAX_RESULT_BYTES" in result.stderr
    run_id = only_run(store)["id"]
    assert f"promptctl eval --resume {run_id}" in result.stderr
    monkeypatch.delenv("PROMPTCTL_BATCH_MAX_RESULT_BYTES")
    resumed = json.loads(invoke("eval", "--resume", run_id, "--json").stdout)["runs"][0]
    assert resumed["n"] == 5 and resumed["errors"] == 0
    assert len(api.batch_creations) == 1 and resumed["batch"]["reattached"] == 1


def test_limits_read_the_read_caps_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert BatchLimits.from_env().read == ReadLimits(16 * 1024 * 1024, 4 * 1024**3)
    monkeypatch.setenv("PROMPTCTL_BATCH_MAX_LINE_BYTES", "100")
    monkeypatch.setenv("PROMPTCTL_BATCH_MAX_RESULT_BYTES", "1000")
    assert BatchLimits.from_env().read == ReadLimits(100, 1000)
    for name, value in [("PROMPTCTL_BATCH_POLL", "inf"), ("PROMPTCTL_BATCH_MAX_LINE_BYTES", "0")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(InputError, match=f"\\${name} is '{value}'"):
            BatchLimits.from_env()
        monkeypatch.delenv(name)
