"""Many `promptctl eval` processes writing one store at once, sharing one cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakeserver import FakeOpenAI
from tests.helpers import cli_process, invoke, write_echo_project

WORDS = [f"w{i}" for i in range(12)]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_eval_processes_write_one_store_at_once(api: FakeOpenAI, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                request: pytest.FixtureRequest, kind: str) -> None:
    root = write_echo_project(tmp_path / "proj", words=WORDS)
    monkeypatch.chdir(root)
    if kind == "postgresql":
        monkeypatch.setenv("PROMPTCTL_STORE", request.getfixturevalue("pg_url"))
    api.latency = 0.01  # the processes' requests and writes interleave
    procs = [cli_process("eval", "prompts/echo.yaml", "--concurrency", "4", "--json", cwd=root)
             for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, [err for _, err in outputs]
    runs = [json.loads(out)["runs"][0] for out, _ in outputs]
    assert len({r["id"] for r in runs}) == 3
    assert all(r["n"] == len(WORDS) and r["errors"] == 0 for r in runs)
    for run in runs:
        rows = json.loads(invoke("show", run["id"], "--json").stdout)["rows"]
        assert sorted(r["row_id"] for r in rows) == sorted(f"r{i + 1}" for i in range(len(WORDS)))
    # One shared cache: every process's answers are there once, under the same keys.
    stats = json.loads(invoke("cache", "stats", "--json").stdout)
    assert stats["entries"] == len(WORDS)
    sent = api.count
    again = json.loads(invoke("eval", "prompts/echo.yaml", "--json").stdout)["runs"][0]
    assert again["cached"] == len(WORDS) and api.count == sent
