"""`promptctl eval --resume RUN`: only the rows a run has no answer for are sent again."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import FakeOpenAI, last_user_message
from tests.helpers import (
    ECHO_PROMPT,
    ECHO_WORDS,
    commit_all,
    echo_evalset,
    eval_json,
    git,
    git_identity,
    git_init,
    invoke,
    runs_json,
    show,
    store_db,
)


def sent(api: FakeOpenAI) -> list[str]:
    return [last_user_message(r.body) for r in api.chat_requests]


def store_rows(tmp_path: Path, run_id: str) -> list[tuple[str, str, int, int]]:
    """(kind, row_id, sample, copies) of every stored row of the run, straight from SQLite."""
    with sqlite3.connect(store_db(tmp_path)) as conn:
        found = conn.execute("SELECT kind, row_id, sample, COUNT(*) FROM rows WHERE run_id = ? "
                             "GROUP BY kind, row_id, sample ORDER BY row_id, sample", (run_id,)).fetchall()
    conn.close()
    return [tuple(r) for r in found]


@pytest.fixture
def api(api: FakeOpenAI, echo_project: Path) -> FakeOpenAI:
    """The fake server, with the current directory in the echo project."""
    return api


@pytest.fixture
def repo(echo_project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The echo project as a git repository with everything committed."""
    git_identity(monkeypatch)
    git_init(echo_project)
    commit_all(echo_project, "base")
    return echo_project


def run_with_failures(api: FakeOpenAI, *words: str, args: tuple[str, ...] = ()) -> dict[str, Any]:
    """An eval where the rows asking about `words` fail (400: not retried, so the test is quick)."""
    for word in words:
        api.fail_matching(f"Question {word}", status=400)
    run, result = eval_json("prompts/echo.yaml", *args, code=3)
    assert run["errors"] == len(words)
    assert f"promptctl eval --resume {run['id']}" in result.stderr
    api.reset()
    return run


def test_resume_sends_only_the_missing_rows_until_the_run_is_complete(
        api: FakeOpenAI, tmp_path: Path) -> None:
    first = run_with_failures(api, "two", "four")
    assert first["n"] == 5
    assert first["metrics"]["exact_match"]["n"] == 3
    before = {r["row_id"]: r for r in show(first["id"])["rows"]}

    # The first resume meets the fault again on r4: r2 is mended, r4 stays an error.
    api.fail_matching("Question four", status=400)
    run, result = eval_json("--resume", first["id"], code=3)
    assert sorted(sent(api)) == ["Question four", "Question two"]
    assert run["id"] == first["id"]
    assert run["errors"] == 1
    assert f"promptctl eval --resume {first['id']}" in result.stderr
    api.reset()

    # A unique prefix names the run; only r4 is left to send.
    run, _ = eval_json("--resume", first["id"][:8])
    assert sent(api) == ["Question four"]
    assert run["id"] == first["id"]
    assert run["status"] == "complete"
    assert run["n"] == 5
    assert run["errors"] == 0
    assert run["metrics"]["exact_match"]["value"] == 1.0
    assert run["metrics"]["exact_match"]["n"] == 5
    assert run["metrics"]["format_validity"]["n"] == 5

    assert store_rows(tmp_path, first["id"]) == [("eval", f"r{i}", 0, 1) for i in range(1, 6)]
    rows = {r["row_id"]: r for r in show(first["id"])["rows"]}
    assert all(r["error"] is None and r["answer"] == ECHO_WORDS[i] for i, r in enumerate(rows.values()))
    # The rows answered the first time are kept as they were, not replayed from the cache.
    assert run["cached"] == 0
    for rid in ("r1", "r3", "r5"):
        assert rows[rid] == before[rid]
    # Resuming adds to the run: no second run appears.
    assert [r["id"] for r in runs_json()] == [first["id"]]

    # A complete run has nothing left to send.
    api.reset()
    run, _ = eval_json("--resume", first["id"])
    assert api.count == 0
    assert run["n"] == 5 and run["errors"] == 0


def test_resume_in_human_output(api: FakeOpenAI) -> None:
    first = run_with_failures(api, "three")
    result = invoke("eval", "--resume", first["id"])
    assert sent(api) == ["Question three"]
    assert "exact_match" in result.stdout


def test_resume_keeps_the_runs_limit(api: FakeOpenAI, tmp_path: Path) -> None:
    first = run_with_failures(api, "two", args=("--limit", "3"))
    assert first["n"] == 3
    run, _ = eval_json("--resume", first["id"])
    assert sent(api) == ["Question two"]  # r4 and r5 were never part of the run
    assert run["n"] == 3 and run["errors"] == 0 and run["cached"] == 0
    assert [r[1] for r in store_rows(tmp_path, first["id"])] == ["r1", "r2", "r3"]


def test_resume_uses_the_prompt_as_it_was_when_the_run_started(api: FakeOpenAI, echo_project: Path) -> None:
    first = run_with_failures(api, "two")
    path = echo_project / "prompts" / "echo.yaml"
    path.write_text(ECHO_PROMPT.replace("Question {{ q }}", "Query {{ q }}")
                    .replace("echo: Question", "echo: Query"), encoding="utf-8")
    run, _ = eval_json("--resume", first["id"])
    assert sent(api) == ["Question two"]  # the stored prompt, not the edited file
    assert run["prompt_version"] == first["prompt_version"]
    assert run["errors"] == 0 and run["cached"] == 0
    assert run["metrics"]["exact_match"]["value"] == 1.0  # scored with the stored pattern too
    rows = {r["row_id"]: r for r in show(first["id"])["rows"]}
    assert rows["r2"]["messages"] == [{"role": "user", "content": "Question two"}]


def test_resume_reads_a_changed_eval_set_from_git(api: FakeOpenAI, repo: Path, tmp_path: Path) -> None:
    first = run_with_failures(api, "two")
    assert first["git_commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert first["git_dirty"] is False
    (repo / "evalsets" / "echo.jsonl").write_text(
        echo_evalset(["one", "deux", "three", "four", "five", "six"]), encoding="utf-8")
    git(repo, "commit", "-q", "-am", "edit the eval set")
    run, _ = eval_json("--resume", first["id"])
    assert sent(api) == ["Question two"]  # the old row r2, and no r6
    assert run["n"] == 5 and run["errors"] == 0 and run["cached"] == 0
    assert run["evalset_version"] == first["evalset_version"]
    assert [r[1] for r in store_rows(tmp_path, first["id"])] == ["r1", "r2", "r3", "r4", "r5"]


def test_resume_reads_an_uncommitted_edit_away_from_git(api: FakeOpenAI, repo: Path) -> None:
    first = run_with_failures(api, "two")
    (repo / "evalsets" / "echo.jsonl").write_text(echo_evalset(["one", "deux"]), encoding="utf-8")
    run, _ = eval_json("--resume", first["id"])
    assert sent(api) == ["Question two"]
    assert run["n"] == 5 and run["errors"] == 0 and run["cached"] == 0


def test_resume_when_the_old_eval_set_cannot_be_found_exits_2(api: FakeOpenAI, echo_project: Path) -> None:
    first = run_with_failures(api, "two")  # not a git repository
    (echo_project / "evalsets" / "echo.jsonl").write_text(echo_evalset(["one", "deux"]), encoding="utf-8")
    result = invoke("eval", "--resume", first["id"], code=2)
    assert "has changed since it started" in result.stderr
    assert "cannot be found in git" in result.stderr
    assert "evalsets/echo.jsonl" in result.stderr
    assert "promptctl eval prompts/echo.yaml" in result.stderr  # the fix: start a new run
    assert api.count == 0
    (echo_project / "evalsets" / "echo.jsonl").unlink()
    result = invoke("eval", "--resume", first["id"], code=2)
    assert "has changed since it started" in result.stderr
    assert api.count == 0
    assert len(show(first["id"])["rows"]) == 5  # the run is untouched


def test_resume_of_a_dirty_run_whose_eval_set_changed_again_exits_2(
        api: FakeOpenAI, repo: Path) -> None:
    evalset = repo / "evalsets" / "echo.jsonl"
    evalset.write_text(echo_evalset([*ECHO_WORDS, "six"]), encoding="utf-8")  # not committed
    first = run_with_failures(api, "two")
    assert first["git_dirty"] is True
    evalset.write_text(echo_evalset(ECHO_WORDS), encoding="utf-8")  # back to the committed version
    result = invoke("eval", "--resume", first["id"], code=2)
    assert "cannot be found in git" in result.stderr
    assert api.count == 0


@pytest.mark.parametrize("extra", [
    ["prompts/echo.yaml"],
    ["--model", "gpt-4o"],
    ["--limit", "2"],
    ["--repeat", "2"],
    ["--evalset", "evalsets/echo.jsonl"],
    ["--dry-run"],
])
def test_resume_with_other_arguments_is_a_usage_error(api: FakeOpenAI, extra: list[str]) -> None:
    result = invoke("eval", "--resume", "01jq0000000000", *extra, code=2)
    assert "--resume takes only the run id" in result.stderr
    assert api.count == 0


def test_resume_of_an_unknown_run_exits_2(api: FakeOpenAI) -> None:
    result = invoke("eval", "--resume", "nosuchrun", code=2)
    assert "no run 'nosuchrun'" in result.stderr
    assert api.count == 0


def test_resume_cache_only_with_a_missing_row_sends_nothing(api: FakeOpenAI) -> None:
    first = run_with_failures(api, "two")
    result = invoke("eval", "--resume", first["id"], "--cache-only", code=2)
    assert "1 of 1 requests are not in the cache" in result.stderr
    assert api.count == 0
    # Another run answers r2; the resume can then replay it from the cache.
    eval_json("prompts/echo.yaml")
    api.reset()
    run, _ = eval_json("--resume", first["id"], "--cache-only")
    assert api.count == 0
    assert run["errors"] == 0 and run["n"] == 5
    assert run["cached"] == 1


def test_resume_of_a_ref_run_reads_that_commit(api: FakeOpenAI, repo: Path, tmp_path: Path) -> None:
    (repo / "evalsets" / "echo.jsonl").write_text(echo_evalset(["one", "deux"]), encoding="utf-8")
    (repo / "prompts" / "echo.yaml").write_text(ECHO_PROMPT.replace("Question", "Query"),
                                                encoding="utf-8")
    git(repo, "commit", "-q", "-am", "new prompt and eval set")
    first = run_with_failures(api, "two", args=("--ref", "HEAD~1"))
    assert first["n"] == 5
    run, _ = eval_json("--resume", first["id"])
    assert sent(api) == ["Question two"]
    assert run["n"] == 5 and run["errors"] == 0 and run["cached"] == 0


REPEAT_PROMPT = ECHO_PROMPT.replace("metrics:", "examples:\n  - input: {q: zero}\n    expected: zero\n"
                                    "metrics:")


def test_resume_completes_missing_samples_and_few_shot_rows(
        api: FakeOpenAI, echo_project: Path, tmp_path: Path) -> None:
    (echo_project / "prompts" / "echo.yaml").write_text(REPEAT_PROMPT, encoding="utf-8")
    first = run_with_failures(api, "two", "zero", args=("--repeat", "2", "--limit", "3"))
    assert first["errors"] == 2  # both samples of r2; the few-shot errors are counted apart
    run, _ = eval_json("--resume", first["id"])
    assert sorted(sent(api)) == ["Question two", "Question two", "Question zero", "Question zero"]
    assert (run["n"], run["samples"]) == (3, 6) and run["errors"] == 0 and run["cached"] == 0
    assert store_rows(tmp_path, first["id"]) == [
        (kind, rid, s, 1) for kind, rid in (("fewshot", "ex1"), ("eval", "r1"), ("eval", "r2"),
                                            ("eval", "r3")) for s in (0, 1)]


def test_resume_of_a_no_cache_run_still_uses_no_cache(api: FakeOpenAI) -> None:
    first = run_with_failures(api, "two", args=("--no-cache",))
    eval_json("--resume", first["id"])
    assert sent(api) == ["Question two"]
    stats = json.loads(invoke("cache", "stats", "--json").stdout)
    assert stats["entries"] == 0


@pytest.mark.parametrize("ref", ["", " "])
def test_resume_of_an_empty_run_id_is_a_usage_error(api: FakeOpenAI, ref: str) -> None:
    run_with_failures(api, "two")  # the only run: an empty prefix must not pick it
    result = invoke("eval", "--resume", ref, code=2)
    assert "run id" in result.stderr
    assert api.count == 0


def test_resume_cache_only_of_a_no_cache_run_replays_from_the_cache(api: FakeOpenAI) -> None:
    first = run_with_failures(api, "two", args=("--no-cache",))
    eval_json("prompts/echo.yaml")  # another run puts every answer in the cache
    api.reset()
    run, _ = eval_json("--resume", first["id"], "--cache-only")
    assert api.count == 0
    assert run["errors"] == 0 and run["n"] == 5
    assert run["cached"] == 1


def test_resume_finishes_a_run_stopped_by_a_fatal_error(api: FakeOpenAI, tmp_path: Path) -> None:
    calls: list[str] = []

    def responder(body: dict[str, Any]) -> str:
        calls.append(last_user_message(body))
        if len(calls) == 2:
            api.fail_next(1, status=401)  # the third request meets a revoked key
        return "echo: " + calls[-1]

    api.responder = responder
    invoke("eval", "prompts/echo.yaml", "--concurrency", "1", code=3)
    (first,) = runs_json()
    assert first["status"] == "failed" and first["n"] == 2
    api.reset()
    run, _ = eval_json("--resume", first["id"])
    assert sent(api) == ["Question three", "Question four", "Question five"]
    assert run["status"] == "complete" and run["n"] == 5 and run["errors"] == 0
    assert [r[1] for r in store_rows(tmp_path, first["id"])] == ["r1", "r2", "r3", "r4", "r5"]


def test_resume_is_refused_while_another_live_process_runs_the_run(api: FakeOpenAI, tmp_path: Path) -> None:
    run = run_with_failures(api, "two")
    other = subprocess.Popen(["sleep", "30"])
    try:
        db = tmp_path / "store" / "results.db"
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE runs SET status = 'running', owner = ? WHERE id = ?",
                         (f"{socket.gethostname()}:{other.pid}:ab12", run["id"]))
        conn.close()
        result = invoke("eval", "--resume", run["id"], code=2)
        assert f"still being run by process {other.pid} on {socket.gethostname()}" in result.stderr
        assert api.count == 0
    finally:
        other.kill()
        other.wait()
    # Once that process is gone the run can be finished.
    invoke("eval", "--resume", run["id"])
    assert api.count == 1
