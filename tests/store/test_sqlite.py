"""The SQLite store: runs, rows, cache, id prefixes, .gitignore, and no secrets on disk."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from promptctl.errors import InputError
from promptctl.store import SQLiteStore
from promptctl.store.sqlite import utcnow
from tests.fakeserver import FakeOpenAI, error_body
from tests.helpers import copy_examples, eval_run, run_cli, use_fake_openai

KEY = "sk-test-store-0a1b2c3d4e5f6a7b"


def run_record(run_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": run_id, "created_at": utcnow(), "status": "running", "prompt_name": "p",
        "prompt_path": "prompts/p.yaml", "prompt_version": "v1", "prompt_source": "src",
        "git_commit": "abc", "git_dirty": False, "git_branch": "main", "model": "gpt-4o-mini",
        "endpoint": "openai", "base_url": "https://api.openai.com/v1",
        "params": {"temperature": 0, "max_tokens": 8}, "evalset_path": "evalsets/e.jsonl",
        "evalset_version": "e1", "n_planned": 2, "options": {"repeat": 1}, **extra,
    }


def row(run_id: str, row_id: str, position: int, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": run_id, "kind": "eval", "position": position, "row_id": row_id, "sample": 0,
        "input": {"text": f"t{row_id}"}, "messages": [{"role": "user", "content": row_id}],
        "created_at": utcnow(), "cached": False, "attempts": 1, **extra,
    }


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SQLiteStore(tmp_path / "s" / "results.db")
    yield s
    s.close()


def test_run_round_trip(store: SQLiteStore) -> None:
    store.create_run(run_record("01aaa"))
    assert store.has_run("01aaa")
    assert not store.has_run("01aab")
    store.update_run("01aaa", status="complete", metrics={"rmse": {"value": 1.5, "n": 2, "ci95": None}},
                     summary={"n": 2, "errors": 0})
    run = store.get_run("01aaa")
    assert run["status"] == "complete"
    assert run["git_dirty"] is False
    assert run["params"] == {"temperature": 0, "max_tokens": 8}
    assert run["metrics"] == {"rmse": {"value": 1.5, "n": 2, "ci95": None}}
    assert run["summary"] == {"n": 2, "errors": 0}
    assert run["options"] == {"repeat": 1}
    assert run["fewshot_metrics"] is None


def test_rows_round_trip_and_expected_none_versus_missing(store: SQLiteStore) -> None:
    store.create_run(run_record("01aaa"))
    store.write_rows([
        row("01aaa", "r2", 1, expected=None, completion="x", answer=None, valid=False,
            scores={"format_validity": 0.0}),
        row("01aaa", "r1", 0, expected={"k": [1, 2]}, completion="y", answer={"k": [1, 2]},
            valid=True, scores={"exact_match": 1.0}, prompt_tokens=3, completion_tokens=1,
            latency_ms=12.5, cached=True),
        row("01aaa", "r3", 2, error="HTTP 500: boom", attempts=5),
        {**row("01aaa", "ex1", 0, expected=0), "kind": "fewshot"},
    ])
    rows = list(store.iter_rows("01aaa"))
    assert [(r["kind"], r["row_id"]) for r in rows] == [
        ("fewshot", "ex1"), ("eval", "r1"), ("eval", "r2"), ("eval", "r3")]
    by_id = {r["row_id"]: r for r in rows}
    assert by_id["r1"]["expected"] == {"k": [1, 2]}
    assert by_id["r1"]["answer"] == {"k": [1, 2]}
    assert by_id["r1"]["valid"] is True
    assert by_id["r1"]["cached"] is True
    assert by_id["r1"]["latency_ms"] == 12.5
    assert by_id["r2"]["has_expected"] is True and by_id["r2"]["expected"] is None
    assert by_id["r2"]["valid"] is False
    assert by_id["r3"]["has_expected"] is False
    assert by_id["r3"]["error"] == "HTTP 500: boom"
    assert by_id["r3"]["attempts"] == 5
    assert by_id["r3"]["valid"] is None
    assert [r["row_id"] for r in store.iter_rows("01aaa", kind="eval")] == ["r1", "r2", "r3"]


def test_rewriting_a_row_replaces_it(store: SQLiteStore) -> None:
    store.create_run(run_record("01aaa"))
    store.write_rows([row("01aaa", "r1", 0, error="timeout")])
    store.write_rows([row("01aaa", "r1", 0, completion="ok")])
    (only,) = store.iter_rows("01aaa")
    assert only["error"] is None and only["completion"] == "ok"


def test_get_run_by_prefix(store: SQLiteStore) -> None:
    for run_id in ("01abc00", "01abd00", "01abd01"):
        store.create_run(run_record(run_id))
    assert store.get_run("01abc")["id"] == "01abc00"
    assert store.get_run("01abd00")["id"] == "01abd00"  # a full id wins over longer ids
    with pytest.raises(InputError, match="ambiguous"):
        store.get_run("01abd")
    with pytest.raises(InputError, match="ambiguous"):
        store.get_run("01ab")
    with pytest.raises(InputError, match="no run"):
        store.get_run("01abe")
    with pytest.raises(InputError, match="no run"):
        store.get_run("zz")


def test_list_runs_newest_first_with_filter_and_limit(store: SQLiteStore) -> None:
    store.create_run(run_record("01a"))
    store.create_run(run_record("01b", prompt_name="q"))
    store.create_run(run_record("01c"))
    assert [r["id"] for r in store.list_runs()] == ["01c", "01b", "01a"]
    assert [r["id"] for r in store.list_runs("p")] == ["01c", "01a"]
    assert [r["id"] for r in store.list_runs(limit=1)] == ["01c"]


def test_list_runs_reads_only_the_columns_asked_for(store: SQLiteStore) -> None:
    store.create_run(run_record("01a", git_dirty=True))
    store.update_run("01a", metrics={"rmse": {"value": 1.0, "n": 1, "ci95": None}})
    (run,) = store.list_runs("p", columns=("id", "git_dirty", "metrics"))
    assert run == {"id": "01a", "git_dirty": True, "metrics": {"rmse": {"value": 1.0, "n": 1, "ci95": None}}}
    with pytest.raises(ValueError, match="prompt_sauce"):
        store.list_runs(columns=("id", "prompt_sauce"))


def test_cache_round_trip(store: SQLiteStore) -> None:
    assert store.cache_get("k1") is None
    store.cache_put([("k1", {"text": "héllo", "prompt_tokens": 3}), ("k2", {"text": "b"})])
    assert store.cache_get("k1") == {"text": "héllo", "prompt_tokens": 3}
    store.cache_put([("k1", {"text": "new"})])
    assert store.cache_get("k1") == {"text": "new"}
    store.cache_put([])


def test_rows_and_their_cache_entries_commit_together_or_not_at_all(store: SQLiteStore) -> None:
    store.create_run(run_record("01aaa"))
    store.write_rows([row("01aaa", "r1", 0)], cache=[("k1", {"text": "a"})])
    assert [r["row_id"] for r in store.iter_rows("01aaa")] == ["r1"]
    assert store.cache_get("k1") == {"text": "a"}
    bad = row("01aaa", "r2", 1)
    del bad["kind"]  # NOT NULL: the insert fails
    with pytest.raises(Exception, match="NOT NULL"):
        store.write_rows([bad], cache=[("k2", {"text": "b"})])
    assert store.cache_get("k2") is None  # rolled back with the row
    assert [r["row_id"] for r in store.iter_rows("01aaa")] == ["r1"]


def test_run_totals_and_answered_columns_match_the_rows(store: SQLiteStore) -> None:
    store.create_run(run_record("01aaa"))
    store.write_rows([
        row("01aaa", "r1", 0, scores={"exact_match": 1}, prompt_tokens=10, completion_tokens=2,
            latency_ms=5.0, system_fingerprint="fp1", response_model="m1"),
        row("01aaa", "r2", 1, scores={"exact_match": 1}, prompt_tokens=20, completion_tokens=3,
            cached=True, latency_ms=7.0, system_fingerprint="fp2", response_model="m1"),
        row("01aaa", "r3", 2, error="HTTP 500", attempts=5),
        row("01aaa", "r4", 3, scores={"exact_match": 0}, prompt_tokens=1, completion_tokens=1,
            attempts=3),
        {**row("01aaa", "ex1", 0, scores=None, prompt_tokens=4, completion_tokens=1), "kind": "fewshot"},
    ])
    totals = store.run_totals("01aaa")
    assert totals["eval"] == {"n": 4, "errors": 1, "cached": 1, "retries": 4 + 2,
                              "prompt_tokens": 31, "completion_tokens": 6,
                              "spent_prompt_tokens": 11, "spent_completion_tokens": 3}
    assert totals["fewshot"]["n"] == 1 and totals["fewshot"]["prompt_tokens"] == 4
    assert list(store.iter_scores("01aaa", "eval")) == [{"exact_match": 1}, {"exact_match": 1},
                                                        {"exact_match": 0}]
    assert list(store.iter_scores("01aaa", "fewshot")) == [{}]
    assert store.answered_column("01aaa", "latency_ms") == [5.0, 7.0]
    assert store.answered_column("01aaa", "system_fingerprint") == ["fp1", "fp2"]
    with pytest.raises(ValueError):
        store.answered_column("01aaa", "error; DROP TABLE rows")


def test_a_second_connection_sees_the_writes(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    a, b = SQLiteStore(path), SQLiteStore(path)
    try:
        a.create_run(run_record("01x"))
        a.write_rows([row("01x", "r1", 0)])
        assert [r["row_id"] for r in b.iter_rows("01x")] == ["r1"]
    finally:
        a.close()
        b.close()


def test_store_in_a_promptctl_directory_gets_a_gitignore(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / ".promptctl" / "results.db").close()
    assert (tmp_path / ".promptctl" / ".gitignore").read_text(encoding="utf-8") == "*\n"


def test_an_existing_gitignore_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / ".promptctl").mkdir()
    (tmp_path / ".promptctl" / ".gitignore").write_text("results.db\n", encoding="utf-8")
    SQLiteStore(tmp_path / ".promptctl" / "results.db").close()
    assert (tmp_path / ".promptctl" / ".gitignore").read_text(encoding="utf-8") == "results.db\n"


def test_a_store_elsewhere_does_not_touch_that_directory(tmp_path: Path) -> None:
    # An .gitignore of "*" in, say, the project root would hide the whole project from git.
    SQLiteStore(tmp_path / "results.db").close()
    assert not (tmp_path / ".gitignore").exists()


# -- through the CLI -------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI) -> Path:
    root = copy_examples(tmp_path / "proj")
    monkeypatch.chdir(root)
    use_fake_openai(monkeypatch, fake_openai, KEY)
    fake_openai.responder = lambda body: "Controversy score: 4\nReason: fine."
    return root


def eval_cli(*args: str, code: int = 0) -> dict[str, Any]:
    return eval_run("prompts/controversy.yaml", *args, code=code)


def test_default_store_is_git_ignored(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMPTCTL_STORE")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    run = eval_cli("--limit", "2")
    assert (project / ".promptctl" / "results.db").exists()
    assert (project / ".promptctl" / ".gitignore").read_text(encoding="utf-8") == "*\n"
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=project,
                            check=True, capture_output=True, text=True).stdout
    assert ".promptctl" not in status
    assert "prompts/controversy.yaml" in status
    assert run["n"] == 2


def test_api_key_never_reaches_the_store(project: Path, fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    eval_cli("--limit", "3")
    # A failed row whose server message echoes the key, and a refused key.
    fake_openai.fail_next(5, status=500, retry_after_ms=1,
                          body=error_body(500, f"gateway could not use {KEY}"))
    failed = eval_cli("--limit", "4", "--no-cache", "--concurrency", "1", code=3)
    assert failed["errors"] == 0 and failed["fewshot_metrics"]["format_validity"]["n"] == 3
    fake_openai.fail_next(1, status=401, body=error_body(401, f"Incorrect API key provided: {KEY}"))
    result = run_cli("eval", "prompts/controversy.yaml", "--no-cache", "--limit", "1")
    assert result.exit_code == 3
    store_dir = tmp_path / "store"
    files = [p for p in store_dir.iterdir() if p.is_file()]
    assert any(p.name == "results.db" for p in files)
    # The grep reaches the stored rows (main file or WAL): the masked message is there.
    assert any(b"gateway could not use ***" in p.read_bytes() for p in files)
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path.name
