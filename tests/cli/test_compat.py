"""`promptctl compat --from A --to B` end to end: the real CLI and the fake server, on a project
with two prompts, a pipeline (whose step prompts name no eval set) and two agents.

The fake server plays both models. `score` is answered from the request's model: the model
named in `worse` answers items 1..`broken` wrongly (`Answer: N+100`), every other model right;
the other files are answered the same on every model (tests/pipelinekit.py, tests/agentkit.py).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from typer.testing import Result

from tests import agentkit, helpers, pipelinekit
from tests.checkrepo import evalset_text, prompt_text
from tests.fakeserver import Body, FakeOpenAI, Reply, content_text, last_user_message
from tests.render import gfm

pytestmark = pytest.mark.both_stores  # run on SQLite, then on PostgreSQL

JUNIT_SCHEMA = xmlschema.XMLSchema(Path(__file__).parents[1] / "data" / "jenkins-junit.xsd")
SCHEMA_DIR = helpers.REPO / "docs" / "schema"

A, B = "model-a", "model-b"
# Rows of the agents' eval set kept: quick ones (no tool that sleeps to its timeout).
AGENT_ROWS = ("three", "anyorder", "gap", "ghost")


@dataclass
class Models:
    """Which model answers `score` wrongly, and on how many items."""

    worse: str | None = None
    broken: int = 0


def _reply(models: Models) -> Any:
    def reply(body: Body) -> Reply:
        first_user = next(content_text(m.get("content")) for m in body["messages"]
                          if m["role"] == "user")
        if first_user.startswith("["):  # an agent's question names its script
            return agentkit.answer(body)
        text = last_user_message(body)
        if text.startswith("Item "):
            item = int(text.split()[-1])
            wrong = body["model"] == models.worse and item <= models.broken
            return f"Answer: {item + 100 if wrong else item}"
        return pipelinekit.answer(body)
    return reply


@pytest.fixture
def models(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Models:
    """The project in the current directory, and the fake server as both models."""
    root = tmp_path / "proj"
    pipelinekit.write_project(root)
    agentkit.write_project(root)
    (root / "evalsets" / "agent.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in agentkit.ROWS if r["id"] in AGENT_ROWS),
        encoding="utf-8")
    (root / "prompts" / "score.yaml").write_text(prompt_text(), encoding="utf-8")
    (root / "evalsets" / "score.jsonl").write_text(evalset_text(), encoding="utf-8")
    monkeypatch.chdir(root)
    chosen = Models()
    fake_openai.responder = _reply(chosen)
    helpers.use_fake_openai(monkeypatch, fake_openai, "sk-test-compat-1a2b3c4d5e6f")
    return chosen


def invoke(*args: str, code: int = 0) -> Result:
    return helpers.invoke("compat", "--from", A, "--to", B, *args, code=code)


def compat_json(*args: str, code: int = 0) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(invoke("--json", *args, code=code).stdout)
    return document


def files(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in document["files"]}


def test_planted_regression_exits_1_naming_the_file_and_metric(models: Models) -> None:
    models.worse, models.broken = B, 15
    out = invoke(code=1).stdout
    # One table: the file, its metric, and the gate that failed.
    line = next(x for x in out.splitlines() if "prompts/score.yaml" in x)
    assert "exact_match" in line and "FAIL" in line and "worse" in line
    assert "-0.750" in line  # 15 of 20 rows went from right to wrong
    assert "exact_match drop ≤ 0.02" in out and "significantly" in out
    assert "regression: 1 regressed" in out
    # Every kind of target is in the table; the pipeline's step prompts have no eval set.
    for path in ("pipelines/support.yaml", "agents/calc.yaml", "agents/calc_react.yaml"):
        assert path in out
    assert "prompts/route.yaml: skip not compared: the prompt names no eval set" in out


def test_the_runs_are_stored_and_compared_as_diff_compares_them(models: Models) -> None:
    models.worse, models.broken = B, 15
    document = compat_json(code=1)
    score = files(document)["prompts/score.yaml"]
    assert (score["baseline_model"], score["model"]) == (A, B)
    assert score["status"] == "fail" and document["exit_code"] == 1
    assert score["metrics"]["exact_match"]["value"] == pytest.approx(0.25)  # B's run
    (gate,) = score["gates"]
    assert gate["metric"] == "exact_match" and gate["status"] == "fail"
    diff = json.loads(helpers.invoke("diff", score["baseline_run"], score["current_run"],
                                     "--json").stdout)
    assert diff["metrics"]["exact_match"]["delta"] == pytest.approx(-0.75)
    assert score["comparison"]["metrics"]["exact_match"] == diff["metrics"]["exact_match"]
    assert {r["model"] for r in helpers.runs_json()} == {A, B}


def test_no_regression_exits_0(models: Models) -> None:
    document = compat_json()
    assert document["exit_code"] == 0
    by_path = files(document)
    assert by_path["prompts/score.yaml"]["status"] == "pass"
    assert by_path["pipelines/support.yaml"]["comparison"]["metrics"]["exact_match"]["delta"] == 0
    assert by_path["agents/calc.yaml"]["current_run"] and by_path["agents/calc.yaml"]["baseline_run"]
    assert by_path["prompts/route.yaml"]["status"] == "skip"
    summary = document["summary"]
    assert summary["files"] == 8 and summary["skip"] == 4 and summary["fail"] == 0
    assert "compatible" in invoke().stdout


def test_improvement_exits_0(models: Models) -> None:
    models.worse, models.broken = A, 15
    out = invoke().stdout
    line = next(x for x in out.splitlines() if "prompts/score.yaml" in x)
    assert "+0.750" in line and "better" in line and "pass" in line


def test_an_insignificant_drop_warns_and_strict_fails_it(models: Models) -> None:
    models.worse, models.broken = B, 2
    score = files(compat_json("prompts/score.yaml"))["prompts/score.yaml"]
    assert score["status"] == "warn"
    assert files(compat_json("prompts/score.yaml", "--strict", code=1))[
        "prompts/score.yaml"]["status"] == "fail"


def test_a_second_run_sends_nothing(models: Models, fake_openai: FakeOpenAI) -> None:
    models.worse, models.broken = B, 15
    invoke(code=1)
    sent = fake_openai.count
    assert sent > 0
    again = compat_json(code=1)
    assert fake_openai.count == sent
    assert files(again)["prompts/score.yaml"]["gates"][0]["status"] == "fail"


@pytest.mark.usefixtures("quick_polls")
def test_batch_sends_the_prompts_through_the_batch_api(models: Models,
                                                       fake_openai: FakeOpenAI) -> None:
    models.worse, models.broken = B, 15
    document = compat_json("--batch", "prompts/score.yaml", "pipelines", code=1)
    # One batch per model for the prompt; the pipeline's requests are sent one by one.
    assert len(fake_openai.batch_creations) == 2
    assert files(document)["pipelines/support.yaml"]["status"] == "pass"
    assert files(document)["prompts/score.yaml"]["status"] == "fail"


def test_paths_narrow_what_is_compared(models: Models) -> None:
    only = compat_json("prompts/score.yaml", "agents")
    assert sorted(files(only)) == ["agents/calc.yaml", "agents/calc_react.yaml",
                                   "prompts/score.yaml"]
    assert len(compat_json(".")["files"]) == 8  # the project's root: every target folder
    assert "no prompt, pipeline or agent file in this folder" in invoke("evalsets", code=2).stderr


def test_markdown_junit_and_json_reports(models: Models, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    models.worse, models.broken = B, 15
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    md, junit = tmp_path / "compat.md", tmp_path / "out" / "junit.xml"
    document = compat_json("--markdown", str(md), "--junit", str(junit), code=1)

    schema = json.loads((SCHEMA_DIR / "compat.schema.json").read_text(encoding="utf-8"))
    registry: Registry[Any] = Registry().with_resources(
        (p.name, Resource.from_contents(json.loads(p.read_text(encoding="utf-8"))))
        for p in SCHEMA_DIR.glob("*.json"))
    errors = list(Draft202012Validator(schema, registry=registry).iter_errors(document))
    assert not errors, errors[0].message

    report = md.read_text(encoding="utf-8")
    assert report.startswith("<!-- promptctl-compat -->\n## promptctl compat: ❌ regression")
    shown = gfm.cmark(report)
    table = shown.tables[0]
    assert table[0] == ["file", "metric", "A", "B", "change", "95% CI", "p", "verdict", "gate"]
    score = next(r for r in table if "prompts/score.yaml" in r[0])
    assert score[1] == "exact_match" and score[4] == "-0.750" and "fail" in score[8]
    assert "exact_match drop ≤ 0.02" in shown.text and "pass → fail" in shown.text
    assert "model-a answer" not in report and "A answer" in report
    assert summary.read_text(encoding="utf-8") == report + "\n"

    JUNIT_SCHEMA.validate(str(junit))
    root = ET.parse(junit).getroot()
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    failing = cases[("promptctl.score", "exact_match.max_regression (exact_match drop ≤ 0.02)")]
    assert failing.find("failure") is not None
    assert cases[("promptctl.route", "evaluate")].find("skipped") is not None
    assert root.get("failures") == "1" and root.get("errors") == "0"


def test_usage_errors_exit_2(models: Models) -> None:
    assert "--to is required" in helpers.invoke("compat", "--from", A, code=2).stderr
    same = helpers.invoke("compat", "--from", A, "--to", A, code=2).stderr
    assert "the same model" in same
    assert "no such file or folder" in invoke("prompts/nope.yaml", code=2).stderr
    assert "significance" in invoke("--significance", "1.5", code=2).stderr


def test_a_broken_file_is_reported_and_exits_2(models: Models) -> None:
    Path("prompts/score.yaml").write_text(prompt_text().replace("metrics:", "metricz:"),
                                          encoding="utf-8")
    document = compat_json(code=2)
    score = files(document)["prompts/score.yaml"]
    assert score["status"] == "error" and "metricz" in score["error"]["message"]
    # The others are still compared.
    assert files(document)["pipelines/support.yaml"]["status"] == "pass"


def test_failed_requests_exit_3(models: Models, fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_matching("Item 3", status=400)
    score = files(compat_json("prompts/score.yaml", code=3))["prompts/score.yaml"]
    assert score["error"]["kind"] == "provider"
    assert re.search(r"request\(s\) failed after every retry", score["error"]["message"])


def test_html_report_opens_with_the_verdict(models: Models, tmp_path: Path) -> None:
    models.worse, models.broken = B, 15
    out = tmp_path / "compat.html"
    document = compat_json("prompts/score.yaml", "pipelines", "--html", str(out), code=1)
    page = out.read_text(encoding="utf-8")
    main = page[page.index("<main>"):]
    verdict = main[main.index('id="check"'):main.index("</section>")]
    assert '<h2 class="verdict">compat regression</h2>' in verdict
    assert "From model-a (A) to model-b (B)" in verdict and "<th>B (model-b)</th>" in verdict
    assert "fell by 0.75, more than the limit 0.02" in verdict
    # Each file's run on B, and its diff against the run on A.
    score = files(document)["prompts/score.yaml"]
    diff = main[main.index('id="diff-1"'):]
    assert diff.index(score["baseline_run"]) < diff.index("Deltas")


@pytest.mark.sqlite_only
def test_the_readme_ci_job_runs_one_compat_command() -> None:
    import yaml

    readme = (helpers.REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("```yaml\nname: promptctl compat\n", 1)[1].split("```", 1)[0]
    workflow = yaml.safe_load("name: promptctl compat\n" + block)
    [job] = workflow["jobs"].values()
    [step] = [s for s in job["steps"] if s.get("name") == "promptctl compat"]
    assert step["run"].startswith('promptctl compat --from "$FROM" --to "$TO"')
    # The inputs reach the command through the environment, never pasted into the script.
    assert "${{" not in step["run"] and step["env"]["TO"] == "${{ inputs.to }}"
