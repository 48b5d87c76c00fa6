"""`promptctl runs` and `promptctl show`: listing stored runs and one run row by row."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakeserver import FakeOpenAI
from tests.helpers import copy_examples, eval_run, invoke, runs_json, show

pytestmark = pytest.mark.both_stores  # run on SQLite, then on PostgreSQL

ECHO_PROMPT = """\
name: echo
model: gpt-4o-mini
messages:
  - role: user
    content: "Question {{ q }}"
examples:
  - input: {q: zero}
    expected: zero
output:
  pattern: 'echo: Question (?P<answer>\\w+)'
  type: string
metrics: [exact_match, format_validity]
evalset: ../evalsets/echo.jsonl
"""


@pytest.fixture
def api(api: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """The fake server, and the current directory in a copy of this repository's prompts and eval
    sets with an echo prompt beside them (its eval set: a right answer, a wrong one, one unscored)."""
    root = copy_examples(tmp_path / "proj")
    (root / "prompts" / "echo.yaml").write_text(ECHO_PROMPT, encoding="utf-8")
    (root / "evalsets" / "echo.jsonl").write_text(
        '{"id": "a", "input": {"q": "alpha"}, "expected": "alpha"}\n'
        '{"id": "b", "input": {"q": "beta"}, "expected": "gamma"}\n'
        '{"id": "c", "input": {"q": "delta"}}\n', encoding="utf-8")
    monkeypatch.chdir(root)
    return api


def test_runs_json_lists_runs_newest_first(api: FakeOpenAI) -> None:
    first = eval_run("prompts/echo.yaml")
    second = eval_run("prompts/echo.yaml", "--model", "gpt-4o")
    listed = runs_json()
    assert [r["id"] for r in listed] == [second["id"], first["id"]]
    assert listed[1] == first  # the stored record reads back as eval printed it
    assert [r["model"] for r in listed] == ["gpt-4o", "gpt-4o-mini"]


def test_runs_filters_by_prompt_and_limits(api: FakeOpenAI) -> None:
    echo = eval_run("prompts/echo.yaml")
    api.responder = lambda body: "Controversy score: 1"
    contro = eval_run("prompts/controversy.yaml", "--limit", "1")
    only = runs_json("echo")
    assert [r["id"] for r in only] == [echo["id"]]
    newest = runs_json("--limit", "1")
    assert [r["id"] for r in newest] == [contro["id"]]
    unknown = invoke("runs", "nosuchprompt", "--json", code=2)
    assert "no prompt named 'nosuchprompt'" in unknown.stderr and unknown.stdout == ""


def test_runs_human_table_and_empty_store(api: FakeOpenAI) -> None:
    empty = invoke("runs")
    assert "no runs stored yet" in empty.stdout
    run = eval_run("prompts/echo.yaml")
    table = invoke("runs")
    assert run["id"] in table.stdout
    assert "echo" in table.stdout
    assert "exact_match" in table.stdout
    assert "\x1b[" not in table.stdout


def test_show_json_has_every_row(api: FakeOpenAI) -> None:
    run = eval_run("prompts/echo.yaml")
    document = show(run["id"])
    assert document["run"] == run
    rows = {(r["kind"], r["row_id"]): r for r in document["rows"]}
    assert set(rows) == {("eval", "a"), ("eval", "b"), ("eval", "c"), ("fewshot", "ex1")}
    a, b, c = rows["eval", "a"], rows["eval", "b"], rows["eval", "c"]
    assert a["input"] == {"q": "alpha"}
    assert a["messages"] == [{"role": "user", "content": "Question alpha"}]
    assert a["completion"] == "echo: Question alpha"
    assert a["answer"] == "alpha"
    assert a["scores"]["exact_match"] == 1.0
    assert b["answer"] == "beta"
    assert b["expected"] == "gamma"
    assert b["scores"]["exact_match"] == 0.0
    assert c["has_expected"] is False
    assert "exact_match" not in (c["scores"] or {})
    assert c["scores"]["format_validity"] == 1.0
    for row in rows.values():
        assert row["prompt_tokens"] == 2 and row["completion_tokens"] == 3
        assert row["latency_ms"] > 0
        assert row["cached"] is False
    assert run["metrics"]["exact_match"]["n"] == 2
    assert run["metrics"]["exact_match"]["value"] == 0.5
    assert run["metrics"]["format_validity"]["n"] == 3
    assert run["fewshot_metrics"]["exact_match"]["value"] == 1.0


def test_show_human_lists_rows(api: FakeOpenAI) -> None:
    run = eval_run("prompts/echo.yaml")
    out = invoke("show", run["id"]).stdout
    for text in ("alpha", "beta", "gamma", "echo: Question delta", "ex1 (few-shot)", run["id"]):
        assert text in out
    assert "\x1b[" not in out


def test_show_accepts_a_unique_prefix(api: FakeOpenAI) -> None:
    first = eval_run("prompts/echo.yaml")
    second = eval_run("prompts/echo.yaml", "--no-cache")
    common = os.path.commonprefix([first["id"], second["id"]])
    assert common  # sortable ids made a moment apart share their leading digits
    for run in (first, second):
        prefix = run["id"][: len(common) + 1]
        shown = show(prefix)
        assert shown["run"]["id"] == run["id"]
    full = show(first["id"])
    assert full["run"]["id"] == first["id"]


def test_ambiguous_and_unknown_prefixes_exit_2(api: FakeOpenAI) -> None:
    first = eval_run("prompts/echo.yaml")
    second = eval_run("prompts/echo.yaml", "--no-cache")
    common = os.path.commonprefix([first["id"], second["id"]])
    ambiguous = invoke("show", common, "--json", code=2)
    assert "ambiguous" in ambiguous.stderr
    assert ambiguous.stdout == ""
    unknown = invoke("show", "zzzzzzzz", "--json", code=2)
    assert "no run 'zzzzzzzz'" in unknown.stderr
    assert "promptctl runs" in unknown.stderr
    assert unknown.stdout == ""
