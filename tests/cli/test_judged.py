"""A judged metric through the commands: resume, diff, check and history treat it as any
built-in metric, by its name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakeserver import FakeOpenAI, last_user_message
from tests.helpers import (
    ECHO_PROMPT,
    commit_all,
    eval_json,
    eval_run,
    git_identity,
    git_init,
    invoke,
    show_rows,
)
from tests.judgekit import (
    JUDGE,
    eval_requests,
    judge_reply,
    judge_requests,
    write_judged_project,
)

LABEL_JUDGE = JUDGE.replace("type: number", "type: label\n  labels: [pass, fail]")


def test_resume_judges_only_the_rows_it_sends(project: Path, judged_api: FakeOpenAI) -> None:
    judged_api.fail_matching("Question four", status=400, times=1)
    first, _ = eval_json("prompts/echo.yaml", code=3)
    assert first["errors"] == 1
    # one 3, two 3, five 4 (three unreadable, four failed): 10/3.
    assert first["metrics"]["long"]["value"] == pytest.approx(10 / 3)
    assert first["scorers"]["gpt-4o"]["requests"] == 4
    assert len(judge_requests(judged_api)) == 4
    run = eval_run("--resume", first["id"])
    assert run["id"] == first["id"]
    assert len(judge_requests(judged_api)) == 5
    assert sum("Question four" in last_user_message(b) for b in eval_requests(judged_api)) == 2
    assert run["metrics"]["long"]["value"] == pytest.approx(3.5)
    assert run["metrics"]["long"]["n"] == 4 and run["metrics"]["long"]["unscored"] == 1
    # The judge's usage adds the first process's to the resume's.
    assert run["scorers"]["gpt-4o"]["requests"] == 5
    assert {r["row_id"] for r in show_rows(run["id"]) if "judges" in r} == {
        "r1", "r2", "r3", "r4", "r5"}


def test_resume_refuses_a_changed_judge(project: Path, judged_api: FakeOpenAI) -> None:
    judged_api.fail_matching("Question four", status=400, times=1)
    first, _ = eval_json("prompts/echo.yaml", code=3)
    (project / "judges" / "length.yaml").write_text(JUDGE + "description: changed\n",
                                                    encoding="utf-8")
    count = judged_api.count
    result = invoke("eval", "--resume", first["id"], code=2)
    assert "metric long has changed since the run started" in result.stderr
    assert "promptctl rescore" in result.stderr
    assert judged_api.count == count


def test_diff_on_a_continuous_judged_metric(project: Path, judged_api: FakeOpenAI) -> None:
    a = eval_run("prompts/echo.yaml")
    (project / "judges" / "length.yaml").write_text(JUDGE + "description: doubled\n",
                                                    encoding="utf-8")
    judged_api.rules.clear()
    judged_api.add_rule("JUDGE", lambda body, call: judge_reply(body, call).replace(
        "score 4", "score 8"))
    b = eval_run("prompts/echo.yaml")
    # four and five now score 8: (3 + 3 + 8 + 8) / 4.
    assert b["metrics"]["long"]["value"] == pytest.approx(5.5)
    diff = json.loads(invoke("diff", a["id"], b["id"], "--json").stdout)
    entry = diff["metrics"]["long"]
    assert entry["delta"] == pytest.approx(2.0)
    assert entry["test"] == "paired_permutation"
    assert entry["n"] == 4
    assert entry["direction"] == "better"
    text = invoke("diff", a["id"], b["id"]).stdout
    assert "long" in text


def test_diff_on_a_pass_fail_judge_is_mcnemar(project: Path, judged_api: FakeOpenAI) -> None:
    (project / "judges" / "length.yaml").write_text(LABEL_JUDGE, encoding="utf-8")
    judged_api.rules.clear()
    judged_api.add_rule("JUDGE", lambda body, _: "score pass")
    a = eval_run("prompts/echo.yaml")
    assert a["metrics"]["long"]["value"] == 1.0
    (project / "judges" / "length.yaml").write_text(LABEL_JUDGE + "description: strict\n",
                                                    encoding="utf-8")
    judged_api.rules.clear()
    judged_api.add_rule("JUDGE", lambda body, _: "score fail" if "answer=t" in
                        last_user_message(body) else "score pass")
    b = eval_run("prompts/echo.yaml")
    assert b["metrics"]["long"]["value"] == pytest.approx(3 / 5)
    entry = json.loads(invoke("diff", a["id"], b["id"], "--json").stdout)["metrics"]["long"]
    assert entry["delta"] == pytest.approx(-0.4)
    assert entry["test"] == "mcnemar_exact"
    # Two discordant rows, both worse: p = 2 * 0.5**2.
    assert entry["p_value"] == pytest.approx(0.5)
    assert entry["direction"] == "worse"


CHECKED = ECHO_PROMPT.replace(
    "metrics: [exact_match, format_validity]",
    "metrics:\n  - format_validity\n  - name: long\n    llm_judge:\n"
    "      prompt: ../judges/length.yaml\n"
    "thresholds:\n  long: {min: 3}\n  max_regression: {long: 0.5}")


def test_check_gates_a_judged_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     judged_api: FakeOpenAI) -> None:
    root = write_judged_project(tmp_path / "proj", prompt=CHECKED)
    git_identity(monkeypatch)
    git_init(root)
    monkeypatch.chdir(root)
    base = commit_all(root, "base")
    # Two-letter questions: every answer is two letters long, and three becomes readable.
    (root / "prompts" / "echo.yaml").write_text(
        CHECKED.replace("Question {{ q }}", "Question {{ q[:2] }}"), encoding="utf-8")
    commit_all(root, "shorter")
    result = invoke("check", "--base", base, "--json", code=1)
    document = json.loads(result.stdout)
    text = json.dumps(document)
    assert "long" in text
    human = invoke("check", "--base", base, code=1).stdout
    assert "long ≥ 3" in human and "FAIL" in human
    assert "long drop ≤ 0.5" in human


def test_history_lists_the_judged_metric(project: Path, judged_api: FakeOpenAI) -> None:
    eval_run("prompts/echo.yaml")
    document = json.loads(invoke("history", "prompts/echo.yaml", "--json").stdout)
    assert "long" in json.dumps(document)
    assert "3.5" in invoke("history", "prompts/echo.yaml").stdout


def test_the_html_report_shows_the_judge_answers(project: Path, judged_api: FakeOpenAI,
                                                 tmp_path: Path) -> None:
    run = eval_run("prompts/echo.yaml")
    out = tmp_path / "report.html"
    invoke("report", run["id"], "-o", str(out))
    page = out.read_text(encoding="utf-8")
    assert "I would rather not say." in page
    assert "could not be read" in page


def test_a_judge_whose_key_is_not_set_is_named_with_its_own_fix_before_anything_is_sent(
        project: Path, judged_api: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    # The evaluated model on endpoint `eval`, whose key is set; the judge (gpt-4o) on the
    # OpenAI API, whose key is not.
    (project / "promptctl.yaml").write_text(
        f"endpoints:\n  eval: {{base_url: '{judged_api.base_url}', api_key_env: EVAL_KEY}}\n"
        f"  judging: {{base_url: '{judged_api.base_url}', api_key_env: JUDGE_KEY}}\n",
        encoding="utf-8")
    monkeypatch.setenv("EVAL_KEY", "sk-test-evaluated")
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_BASE_URL")
    model = ("--model", "eval/gpt-4o-mini")
    result = invoke("eval", "prompts/echo.yaml", *model, code=2)
    assert ("prompts/echo.yaml:14: metric 'long' (judge judges/length.yaml) uses model gpt-4o, "
            "whose API key $OPENAI_API_KEY is not set") in result.stderr
    assert ("fix: export OPENAI_API_KEY=..., or give the judge a model on another endpoint: "
            "model: ENDPOINT/MODEL in judges/length.yaml, or llm_judge: {prompt: ..., model: "
            "ENDPOINT/MODEL} in prompts/echo.yaml") in result.stderr
    assert "--model" not in result.stderr  # the evaluated model's fix would not mend it
    assert judged_api.count == 0
    assert json.loads(invoke("runs", "--json").stdout) == {"runs": []}
    # The judge given a model in the prompt file: that line, and the fix there.
    prompt = project / "prompts" / "echo.yaml"
    prompt.write_text(prompt.read_text(encoding="utf-8").replace(
        "prompt: ../judges/length.yaml", "prompt: ../judges/length.yaml\n      model: judging/gpt-4o"),
        encoding="utf-8")
    result = invoke("eval", "prompts/echo.yaml", *model, code=2)
    assert ("prompts/echo.yaml:16: metric 'long' (judge judges/length.yaml) uses model "
            "judging/gpt-4o, whose API key $JUDGE_KEY is not set") in result.stderr
    assert ("fix: export JUDGE_KEY=..., or give the judge a model on another endpoint: change "
            "llm_judge.model (ENDPOINT/MODEL) in prompts/echo.yaml") in result.stderr
    assert judged_api.count == 0
    monkeypatch.setenv("JUDGE_KEY", "sk-test-judge")
    run = eval_run("prompts/echo.yaml", *model)
    assert run["scorers"]["judging/gpt-4o"]["requests"] == 5
    # Rescoring sends only judge requests: their key is checked before the new run.
    monkeypatch.delenv("JUDGE_KEY")
    result = invoke("rescore", run["id"], code=2)
    assert "whose API key $JUDGE_KEY is not set" in result.stderr
    assert len(json.loads(invoke("runs", "--json").stdout)["runs"]) == 1
