"""`promptctl history`: one line per prompt version, newest first, with a trend per metric."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from promptctl.render.compare import history_terminal, sparkline
from promptctl.render.terminal import InertConsole
from promptctl.results import HistoryPoint, HistoryResult
from tests.cli.test_diff import ROWS, Repo, eval_ref, exact_match, repo
from tests.helpers import git, invoke, use_fake_openai

pytestmark = pytest.mark.both_stores  # run on SQLite, then on PostgreSQL

__all__ = ["repo"]  # the fixture, imported for this module's tests


def history_json(*args: str) -> dict[str, Any]:
    return dict(json.loads(invoke("history", *args, "--json").stdout))


def test_history_lists_the_three_versions_newest_first(repo: Repo) -> None:
    # Evaluated out of order: the order comes from git, not from when the runs were made.
    runs = {ref: eval_ref(ref) for ref in ("HEAD", "HEAD~2", "HEAD~1")}
    result = history_json("prompts/score.yaml")
    versions = result["versions"]
    assert [v["git_commit"] for v in versions] == [repo.sha(r) for r in ("HEAD", "HEAD~1", "HEAD~2")]
    assert [v["subject"] for v in versions] == ["prompt V3", "prompt V2", "prompt V1"]
    assert [v["run"] for v in versions] == [runs[r]["id"] for r in ("HEAD", "HEAD~1", "HEAD~2")]
    assert [v["prompt_version"] for v in versions] == [runs[r]["prompt_version"]
                                                       for r in ("HEAD", "HEAD~1", "HEAD~2")]
    assert [v["metrics"]["exact_match"] for v in versions] == [
        pytest.approx(exact_match(v)) for v in ("V3", "V2", "V1")]
    for v in versions:
        log = git(repo.root, "log", "-1", "--format=%an|%cI", v["git_commit"]).strip().split("|")
        assert (v["author"], v["date"]) == (log[0], log[1])
        assert v["model"] == "gpt-4o-mini" and v["n"] == ROWS and v["git_dirty"] is False
    assert result["prompt"] == "score" and result["warnings"] == []
    assert history_json("score") == result  # by name as well as by file


def test_history_human_output_has_a_line_per_version_and_trends(repo: Repo) -> None:
    for ref in ("HEAD~2", "HEAD~1", "HEAD"):
        eval_ref(ref)
    out = invoke("history", "score").stdout
    lines = [line for line in out.splitlines() if re.match(r"\s*[0-9a-f]{10}\s", line)]
    assert [line.split()[0] for line in lines] == [repo.sha(r)[:10] for r in
                                                   ("HEAD", "HEAD~1", "HEAD~2")]
    assert "prompt V3" in lines[0] and "Test Author" in lines[0]
    trend = sparkline([exact_match(v) for v in ("V1", "V2", "V3")])
    assert re.search(rf"exact_match\s+{trend}\s+\(oldest → newest\)", out), out
    assert trend == "█▆▁"
    assert "\x1b[" not in out


def test_history_by_model(repo: Repo) -> None:
    eval_ref("HEAD~1")
    eval_ref("HEAD")
    eval_ref("HEAD", "--model", "gpt-4o")
    only = history_json("score", "--model", "gpt-4o")
    assert [(v["model"], v["git_commit"]) for v in only["versions"]] == [("gpt-4o", repo.sha("HEAD"))]
    assert only["versions"][0]["metrics"]["exact_match"] == 1.0
    both = history_json("score")
    assert sorted((v["model"], v["subject"]) for v in both["versions"]) == [
        ("gpt-4o", "prompt V3"), ("gpt-4o-mini", "prompt V2"), ("gpt-4o-mini", "prompt V3")]
    out = invoke("history", "score").stdout
    assert "model" in out and out.count("(oldest → newest)") >= 2


def test_a_work_in_progress_version_is_the_newest(repo: Repo) -> None:
    eval_ref("HEAD")
    repo.write("prompts/score.yaml", (repo.root / "prompts" / "score.yaml").read_text(
        encoding="utf-8").replace("V3", "V2"))
    invoke("eval", "prompts/score.yaml", "--json")
    versions = history_json("score")["versions"]
    assert [v["git_dirty"] for v in versions] == [True, False]
    assert versions[0]["git_commit"] == repo.sha("HEAD")
    out = invoke("history", "score").stdout
    assert re.search(rf"{repo.sha('HEAD')[:10]}\*", out), out


def test_no_runs_yet(repo: Repo) -> None:
    assert history_json("score")["versions"] == []
    assert "no complete runs of score stored yet" in invoke("history", "score").stdout
    assert "with model x" in invoke("history", "score", "-m", "x").stdout


def test_history_outside_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             fake_openai: Any) -> None:
    from tests.cli.test_diff import evalset_text, prompt_text, reply

    root = tmp_path / "plain"
    (root / "prompts").mkdir(parents=True)
    (root / "evalsets").mkdir()
    (root / "prompts" / "score.yaml").write_text(prompt_text("V2"), encoding="utf-8")
    (root / "evalsets" / "score.jsonl").write_text(evalset_text(), encoding="utf-8")
    monkeypatch.chdir(root)
    use_fake_openai(monkeypatch, fake_openai, "sk-test-history")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    fake_openai.responder = reply
    invoke("eval", "prompts/score.yaml", "--json")
    (v,) = history_json("score")["versions"]
    assert v["git_commit"] is None and v["subject"] is None
    assert v["metrics"]["exact_match"] == pytest.approx(exact_match("V2"))
    assert "no commit" not in invoke("history", "score").stdout


def test_sparkline() -> None:
    assert sparkline([0, 0.5, 1]) == "▁▅█"
    assert sparkline([2, 2]) == "▁▁"
    assert sparkline([1, None, 3]) == "▁ █"
    assert sparkline([None]) == ""


def _point(run: str, value: float | None) -> HistoryPoint:
    return HistoryPoint(run=run, created_at="2026-01-01T00:00:00Z", prompt_version="v" + run,
                        model="m", git_commit=None, git_dirty=None, date=None, author=None,
                        subject=None, evalset_version=None, metrics={"exact_match": value}, n=4,
                        errors=0)


def _trend(values: list[float | None]) -> str:
    """The trend line `history` prints for versions with these values, oldest first."""
    buffer = io.StringIO()
    points = tuple(_point(str(i), v) for i, v in enumerate(values))
    history_terminal(InertConsole(file=buffer, width=200),
                     HistoryResult(prompt="p", model=None, versions=points[::-1], warnings=()))
    (line,) = [ln for ln in buffer.getvalue().splitlines() if "oldest → newest" in ln]
    return line.strip()


def test_a_sparkline_that_cannot_tell_0_from_1_says_the_value() -> None:
    # One bar looks the same whatever the value: the value is printed beside it.
    assert _trend([0.0]) == "exact_match  ▁  0.000  (oldest → newest)"
    assert _trend([1.0]) == "exact_match  ▁  1.000  (oldest → newest)"
    assert _trend([0.0, 0.0, None]) == "exact_match  ▁▁   every version 0.000  (oldest → newest)"
    assert _trend([1.0, 1.0]) == "exact_match  ▁▁  every version 1.000  (oldest → newest)"
    # A series that varies draws its own shape.
    assert _trend([0.0, 1.0]) == "exact_match  ▁█  (oldest → newest)"


def test_history_of_one_version_prints_its_value(repo: Repo) -> None:
    run = eval_ref("HEAD")
    value = run["metrics"]["exact_match"]["value"]
    out = invoke("history", "score").stdout
    assert re.search(rf"exact_match\s+▁\s+{value:.3f}\s+\(oldest → newest\)", out), out
