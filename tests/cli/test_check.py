"""`promptctl check` end to end: the real CLI, real git repositories and the fake server."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from typer.testing import Result

from tests import helpers
from tests.checkrepo import Repo, evalset_text, prompt_text
from tests.fakeserver import FakeOpenAI
from tests.render import gfm

pytestmark = pytest.mark.both_stores  # run on SQLite, then on PostgreSQL


JUNIT_SCHEMA = xmlschema.XMLSchema(Path(__file__).parents[1] / "data" / "jenkins-junit.xsd")


def invoke(*args: str, code: int = 0) -> Result:
    """`promptctl check ARGS`, which must exit with `code`."""
    return helpers.invoke("check", *args, code=code)


def check_json(*args: str, code: int = 0) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(invoke("--json", *args, code=code).stdout)
    return document


def test_harmless_change_exit_0(repo: Repo) -> None:
    repo.write("prompts/score.yaml", prompt_text(description="Reworded."))
    repo.commit("reword")
    result = invoke()
    assert "score" in result.stdout and "check passed" in result.stdout
    assert "format_validity ≥ 0.9" in result.stdout


def test_regression_exit_1_names_the_failing_gate(repo: Repo) -> None:
    repo.write("prompts/score.yaml", prompt_text(style="BREAK 15"))
    repo.commit("worse")
    result = invoke(code=1)
    assert "FAIL" in result.stdout
    assert "exact_match drop ≤ 0.02" in result.stdout
    assert "check failed" in result.stdout


def test_insignificant_drop_warns_then_strict_fails(repo: Repo) -> None:
    repo.write("prompts/score.yaml", prompt_text(style="BREAK 2"))
    repo.commit("slightly worse")
    result = invoke()
    assert "warn" in result.stdout and "p=0.5" in result.stdout
    strict = invoke("--strict", code=1)
    assert "--strict" in strict.stdout


def test_evalset_only_change_is_checked(repo: Repo) -> None:
    repo.write("evalsets/score.jsonl", evalset_text(22))
    repo.commit("two more rows")
    document = check_json()
    [entry] = document["prompts"]
    assert entry["reasons"] == ["eval set evalsets/score.jsonl changed"]
    assert document["exit_code"] == 0


def test_provider_outage_exit_3(repo: Repo, fake_openai: FakeOpenAI) -> None:
    repo.write("prompts/score.yaml", prompt_text(style="Shorter."))
    repo.commit("change")
    fake_openai.fail_next(10_000, status=503, retry_after_ms=1)
    result = invoke(code=3)
    assert "provider failure" in result.stdout


def test_bad_key_is_exit_3(repo: Repo, fake_openai: FakeOpenAI) -> None:
    repo.write("prompts/score.yaml", prompt_text(style="Shorter."))
    repo.commit("change")
    fake_openai.fail_next(10_000, status=401)
    document = check_json(code=3)
    assert document["prompts"][0]["error"]["kind"] == "provider"


def test_usage_errors_exit_2(repo: Repo) -> None:
    assert "unknown git ref" in invoke("--base", "nope", code=2).stderr
    assert "no prompt named 'ghost'" in invoke("--prompt", "ghost", code=2).stderr
    invoke("--significance", "1.5", code=2)


def test_broken_prompt_exit_2(repo: Repo) -> None:
    repo.write("prompts/score.yaml", prompt_text().replace("metrics:", "metricz:"))
    repo.commit("typo")
    document = check_json(code=2)
    assert "metricz" in document["prompts"][0]["error"]["message"]


def test_junit_and_markdown_reports(repo: Repo, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    repo.write("prompts/score.yaml", prompt_text(style="BREAK 15"))
    repo.commit("worse")
    junit, md = tmp_path / "out" / "junit.xml", tmp_path / "report.md"
    invoke("--junit", str(junit), "--markdown", str(md), code=1)

    JUNIT_SCHEMA.validate(str(junit))
    tree = ET.parse(junit)
    root = tree.getroot()
    assert root.tag == "testsuites"
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    names = {name for _, name in cases}
    assert {"evaluate", "format_validity.min (format_validity ≥ 0.9)",
            "exact_match.max_regression (exact_match drop ≤ 0.02)"} <= names
    failing = cases[("promptctl.score", "exact_match.max_regression (exact_match drop ≤ 0.02)")]
    assert failing.find("failure") is not None
    assert cases[("promptctl.score", "format_validity.min (format_validity ≥ 0.9)")].find(
        "failure") is None
    assert root.get("tests") == "3" and root.get("failures") == "1"

    report = md.read_text(encoding="utf-8")
    assert "## promptctl check: ❌ failed" in report
    shown = gfm.cmark(report)
    assert "exact_match drop ≤ 0.02" in shown.text and "<details>" in report
    assert "pass → fail" in shown.text and "<code>101</code>" in shown.html
    assert "| p |" in report and "<0.001" in report
    step = summary.read_text(encoding="utf-8")
    assert step.startswith("earlier step\n") and report in step


def test_markdown_escapes_model_output(repo: Repo, fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    def evil(body: dict[str, Any]) -> str:
        return "Answer: 7 | <img src=x onerror=alert(1)> ![p](http://t.invalid/p.png)"

    repo.write("prompts/score.yaml", prompt_text(style="Whatever.").replace(
        "(?P<answer>-?\\d+)", "(?P<answer>.+)").replace("type: integer", "type: string"))
    repo.commit("loose pattern")
    invoke("--markdown", str(tmp_path / "r.md"))  # the baseline first: normal answers
    fake_openai.responder = evil
    repo.write("prompts/score.yaml", prompt_text(style="Other.").replace(
        "(?P<answer>-?\\d+)", "(?P<answer>.+)").replace("type: integer", "type: string"))
    repo.commit("evil answers")
    invoke("--base", "HEAD~1", "--markdown", str(tmp_path / "r.md"), code=1)
    report = (tmp_path / "r.md").read_text(encoding="utf-8")
    answer = "7 | <img src=x onerror=alert(1)> ![p](http://t.invalid/p.png)"
    for render in gfm.RENDERERS.values():
        shown = render(report)
        assert not {"img", "a"} & set(shown.tags), shown.html
        assert any(gfm.visible(c) == answer for row in shown.rows for c in row), shown.rows
        for table in shown.tables:  # each table intact: every row as wide as its header
            assert {len(row) for row in table} == {len(table[0])}, table


def test_check_is_listed_in_help() -> None:
    result = helpers.run_cli("--help")
    assert "check" in result.stdout
