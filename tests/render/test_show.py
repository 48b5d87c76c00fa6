"""`promptctl show` reads at a glance: why a row has no answer, and per row only the metrics the
run asked for, each as a reader takes it in (rmse and mae as the row's absolute error)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from promptctl.render.terminal import no_answer, row_scores
from tests import helpers
from tests.fakeserver import FakeOpenAI, last_user_message

PROMPT = """\
name: guess
model: gpt-4o-mini
messages:
  - role: user
    content: "Guess {{ q }}"
output:
  pattern: 'Guess: (?P<answer>-?\\d+(\\.\\d+)?)'
  type: number
metrics: [rmse, format_validity]
evalset: ../evalsets/guess.jsonl
"""
ROWS = ('{"id": "close", "input": {"q": "a"}, "expected": 3}\n'
        '{"id": "far", "input": {"q": "b"}, "expected": 1}\n'
        '{"id": "mute", "input": {"q": "c"}, "expected": 2}\n')
REPLIES = {"Guess a": "Guess: 3.5", "Guess b": "Guess: 3", "Guess c": "I would rather not"}


@pytest.fixture
def guess(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: FakeOpenAI) -> FakeOpenAI:
    root = tmp_path / "proj"
    (root / "prompts").mkdir(parents=True)
    (root / "evalsets").mkdir()
    (root / "prompts" / "guess.yaml").write_text(PROMPT, encoding="utf-8")
    (root / "evalsets" / "guess.jsonl").write_text(ROWS, encoding="utf-8")
    monkeypatch.chdir(root)
    monkeypatch.setenv("COLUMNS", "300")
    api.responder = lambda body: REPLIES[last_user_message(body)]
    return api


def _line(out: str, row: str) -> str:
    [line] = [ln for ln in out.splitlines() if re.match(rf"\s*{row}\s", ln)]
    return line


def test_show_says_why_there_is_no_answer_and_scores_only_what_was_asked(
        guess: FakeOpenAI) -> None:
    run = helpers.eval_run("prompts/guess.yaml")
    out = helpers.invoke("show", run["id"]).stdout
    assert "no answer: the pattern did not match" in _line(out, "mute")
    assert "invalid" not in out
    assert re.search(r"abs error 0\.5\s+format_validity 1\b", _line(out, "close")), out
    assert re.search(r"abs error 2\s+format_validity 1\b", _line(out, "far")), out
    assert re.search(r"abs error -\s+format_validity 0\b", _line(out, "mute")), out
    for internal in ("squared_error", "answer_num", "expected_num", "exact_match", "="):
        assert internal not in out.split("┃ ms", 1)[-1], internal


def test_row_scores_follow_the_metrics_asked_for() -> None:
    scores = {"format_validity": 1.0, "exact_match": 0.0, "answer_num": 2.5,
              "expected_num": 3.0, "squared_error": 0.25, "label_answer": "a",
              "label_expected": "b", "contains": 1.0, "judge": True}
    assert row_scores(["format_validity"], scores) == "format_validity 1"
    assert row_scores(["accuracy", "exact_match"], scores) == "accuracy 0  exact_match 0"
    assert row_scores(["rmse", "mae", "pearson", "spearman"], scores) == "abs error 0.5"
    assert row_scores(["f1_macro", "contains", "judge", "missing"], scores) == (
        "label wrong  contains 1  judge 1  missing -")
    assert row_scores(["rmse"], {"format_validity": 0.0}) == "abs error -"
    assert row_scores([], scores) == ""


def test_no_answer_reads_as_a_sentence() -> None:
    assert no_answer("pattern did not match") == "no answer: the pattern did not match"
    assert no_answer("'x' is not one of the labels") == "no answer: 'x' is not one of the labels"
    assert no_answer(None) == "no answer: it could not be read"


def test_an_unfinished_run_shows_the_scores_its_rows_hold() -> None:
    """An interrupted run has no totals naming its metrics: its rows' own scores say which."""
    import io

    from promptctl.render.terminal import InertConsole, show_rows
    from promptctl.runs import read_row, read_run

    run = {"id": "r", "created_at": "2026-01-01T00:00:00Z", "prompt_name": "p", "model": "m",
           "git_commit": None, "git_dirty": None,
           "prompt_version": "v", "status": "running", "metrics": None, "summary": None}
    row = {"row_id": "a", "kind": "eval", "sample": 0, "input": {"q": 1}, "completion": "7",
           "answer": 7, "valid": True, "expected": 6, "has_expected": True, "cached": False,
           "scores": {"format_validity": 1.0, "exact_match": 0.0, "answer_num": 7.0,
                      "expected_num": 6.0, "squared_error": 1.0},
           "prompt_tokens": 1, "completion_tokens": 1, "latency_ms": 3.0, "error": None}
    buffer = io.StringIO()
    show_rows(InertConsole(file=buffer, width=300), read_run(run), [read_row(row)])
    out = buffer.getvalue()
    assert "format_validity 1  exact_match 0  abs error 1" in out and "squared" not in out


def test_show_row_prints_one_row_with_every_text_whole(guess: FakeOpenAI) -> None:
    long = "Guess: 3 because " + "the reasons go on and on; " * 1000 + "THE END"
    guess.responder = lambda body: long if last_user_message(body) == "Guess b" else "Guess: 1"
    run = helpers.eval_run("prompts/guess.yaml")
    table = helpers.invoke("show", run["id"]).stdout
    assert "THE END" not in table  # the table cuts a completion short

    out = helpers.invoke("show", run["id"], "--row", "far").stdout
    assert "row far" in out and "row close" not in out and "row mute" not in out
    assert "".join(out.split()).count("".join(long.split())) == 1  # whole, however wrapped
    assert "expected" in out and "abs error 2" in out

    doc = json.loads(helpers.invoke("show", run["id"], "--row", "far", "--json").stdout)
    assert [(r["row_id"], r["completion"]) for r in doc["rows"]] == [("far", long)]
    missing = helpers.run_cli("show", run["id"], "--row", "nope")
    assert missing.exit_code == 2 and "no row 'nope'" in missing.stderr


def test_a_judge_answer_and_the_judge_error_are_on_lines_of_their_own(
        project: Path, judged_api: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The judged project: the judge answers row r3 (three) unreadably."""
    monkeypatch.setenv("COLUMNS", "300")
    run = helpers.eval_run("prompts/echo.yaml")
    lines = helpers.invoke("show", run["id"]).stdout.splitlines()
    [said] = [ln for ln in lines if "long judge: I would rather not say." in ln]
    assert "could not be read" not in said
    [error] = [ln for ln in lines if "long judge error:" in ln]
    assert "long judge error: the judge's answer could not be read: pattern did not match" in error
    assert "rather not say" not in error
    # A row the judge scored shows its answer and no error.
    assert any("long judge: score 3" in ln for ln in lines)
    assert sum("judge error" in ln for ln in lines) == 1
