"""llm_judge metrics: a judge prompt scores each completion through the run's engine
(the fake judge of tests/judgekit.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakeserver import FakeOpenAI, last_user_message
from tests.helpers import eval_run, git_init, invoke, show_rows
from tests.judgekit import (
    JUDGE,
    JUDGED_PROMPT,
    eval_requests,
    judge_requests,
    write_judged_project,
)


def test_the_judge_scores_each_row_and_an_unreadable_answer_is_unscored(
        project: Path, judged_api: FakeOpenAI) -> None:
    run = eval_run("prompts/echo.yaml")
    # one 3, two 3, four 4, five 4; three unreadable: mean 14/4 over four rows.
    long = run["metrics"]["long"]
    assert long["value"] == pytest.approx(3.5)
    assert long["n"] == 4
    assert long["unscored"] == 1
    assert long["kind"] == "llm_judge"
    assert run["metrics"]["exact_match"]["value"] == 1.0
    judged = judge_requests(judged_api)
    assert len(judged) == 5
    # The judge runs at temperature 0 on its own model, whatever its file says.
    assert {b["model"] for b in judged} == {"gpt-4o"}
    assert {b["temperature"] for b in judged} == {0}
    assert {b["max_tokens"] for b in judged} == {8}
    first = next(b for b in judged if "q=one" in last_user_message(b))
    assert last_user_message(first) == ("JUDGE q=one answer=one expected=one "
                                         "completion=echo: Question one")
    # Usage is reported apart: the judge's five requests, none of the evaluated model's.
    usage = run["scorers"]["gpt-4o"]
    assert usage["requests"] == 5 and usage["cached"] == 0 and usage["errors"] == 0
    assert usage["prompt_tokens"] > 0
    assert run["tokens"]["prompt"] == sum(r["prompt_tokens"] for r in show_rows(run["id"]))


def test_each_row_keeps_the_judge_completion_and_show_displays_it(
        project: Path, judged_api: FakeOpenAI) -> None:
    run = eval_run("prompts/echo.yaml")
    rows = {r["row_id"]: r for r in show_rows(run["id"])}
    assert rows["r1"]["scores"]["long"] == 3
    assert rows["r1"]["judges"]["long"]["completion"] == "score 3"
    assert rows["r1"]["judges"]["long"]["score"] == 3
    three = rows["r3"]
    assert "long" not in three["scores"]
    assert three["judges"]["long"]["score"] is None
    assert "could not be read" in three["judges"]["long"]["error"]
    assert three["judges"]["long"]["completion"] == "I would rather not say."
    shown = invoke("show", run["id"]).stdout
    assert "long judge: score 4" in shown
    assert "I would rather not say." in shown
    summary = invoke("runs").stdout + invoke("show", run["id"]).stdout
    # Counted once, with the row and the reason.
    assert "long: no score for 1 rows (r3: the judge's answer could not be read" in summary
    assert "unscored rows" not in summary
    assert "gpt-4o 5 requests" in shown


def test_a_second_run_sends_nothing(project: Path, judged_api: FakeOpenAI) -> None:
    first = eval_run("prompts/echo.yaml")
    count = judged_api.count
    second = eval_run("prompts/echo.yaml")
    assert judged_api.count == count
    assert second["metrics"]["long"]["value"] == first["metrics"]["long"]["value"]
    assert second["scorers"]["gpt-4o"]["cached"] == 5
    assert second["scorers"]["gpt-4o"]["requests"] == 0


def test_a_changed_judge_prompt_is_asked_again(project: Path, judged_api: FakeOpenAI) -> None:
    first = eval_run("prompts/echo.yaml")
    # Same messages, another file: the sha256 is part of the judge requests' cache key.
    (project / "judges" / "length.yaml").write_text(JUDGE + "description: stricter\n",
                                                    encoding="utf-8")
    second = eval_run("prompts/echo.yaml")
    assert len(judge_requests(judged_api)) == 10
    assert len(eval_requests(judged_api)) == 5  # the evaluated model's answers were cached
    assert (first["metrics"]["long"]["identity"]["prompt_version"]
            != second["metrics"]["long"]["identity"]["prompt_version"])


def test_a_failed_judge_request_gives_no_score_not_a_zero(
        project: Path, judged_api: FakeOpenAI) -> None:
    judged_api.fail_matching("answer=four", status=400)
    run = eval_run("prompts/echo.yaml")
    assert run["metrics"]["long"]["n"] == 3
    assert run["metrics"]["long"]["value"] == pytest.approx(10 / 3)
    assert run["metrics"]["long"]["unscored"] == 2
    assert run["errors"] == 0
    row = {r["row_id"]: r for r in show_rows(run["id"])}["r4"]
    assert "judge request failed" in row["judges"]["long"]["error"]
    assert run["scorers"]["gpt-4o"]["errors"] == 1


def test_a_label_judge_scores_one_for_the_first_label(
        project: Path, judged_api: FakeOpenAI) -> None:
    label_judge = JUDGE.replace("type: number", "type: label\n  labels: [good, bad]")
    (project / "judges" / "length.yaml").write_text(label_judge, encoding="utf-8")
    judged_api.rules.clear()
    judged_api.add_rule("JUDGE", lambda body, _: "score good" if "answer=f" in
                        last_user_message(body) else "score bad")
    run = eval_run("prompts/echo.yaml")
    assert run["metrics"]["long"]["value"] == pytest.approx(2 / 5)  # four, five
    assert run["metrics"]["long"]["unscored"] == 0


@pytest.mark.parametrize(("judge", "message"), [
    (JUDGE.replace("type: number", "type: string"), "a judge gives a score"),
    (JUDGE.replace("model: gpt-4o\n", ""), "no model for the judge"),
    (JUDGE.replace("  - role: user", "  - role: judge"), "unknown role"),
])
def test_validate_checks_the_judge_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          judge: str, message: str) -> None:
    root = write_judged_project(tmp_path / "proj", judge)
    monkeypatch.chdir(root)
    result = invoke("validate", "prompts/echo.yaml", code=2)
    assert message in result.stderr


def test_the_judge_error_names_the_judge_file_and_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_judged_project(tmp_path / "proj",
                                JUDGE.replace("  - role: user", "  - role: judge"))
    monkeypatch.chdir(root)
    result = invoke("validate", "prompts/echo.yaml", code=2)
    assert "length.yaml:7" in result.stderr.replace("\n", "")


def test_a_judge_outside_the_project_is_refused(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(JUDGE, encoding="utf-8")
    root = write_judged_project(tmp_path / "proj", prompt=JUDGED_PROMPT.replace(
        "../judges/length.yaml", "../../elsewhere.yaml"))
    (root / ".git").mkdir()
    monkeypatch.chdir(root)
    result = invoke("validate", "prompts/echo.yaml", code=2)
    assert "outside the project" in result.stderr
    assert "echo.yaml" in result.stderr


def test_a_missing_judge_is_named_by_its_path_from_the_project_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_judged_project(tmp_path / "proj", prompt=JUDGED_PROMPT.replace(
        "../judges/length.yaml", "../judges/nope.yaml"))
    git_init(root)  # the project root, found from a folder below it
    monkeypatch.chdir(root / "prompts")
    result = invoke("validate", "echo.yaml", code=2)
    assert "'judges/nope.yaml' was not found" in result.stderr
    assert "../" not in result.stderr


def test_a_judge_that_judges_itself_is_refused(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    looping = JUDGE + "metrics:\n  - name: again\n    llm_judge: {prompt: length.yaml}\n"
    root = write_judged_project(tmp_path / "proj", looping)
    monkeypatch.chdir(root)
    result = invoke("validate", "prompts/echo.yaml", code=2)
    assert "may not judge itself" in result.stderr


def test_dry_run_counts_judge_requests(project: Path, judged_api: FakeOpenAI) -> None:
    document = json.loads(invoke("eval", "prompts/echo.yaml", "--dry-run", "--json").stdout)
    (plan,) = document["dry_run"]
    (judge,) = plan["scorers"]
    assert judge["metric"] == "long" and judge["model"] == "gpt-4o"
    assert judge["requests"] == 5
    assert judge["completion_tokens_max"] == 5 * 8
    assert judge["prompt_tokens"] > 0
    assert judge["estimated_cost_usd_max"] is not None
    assert judged_api.count == 0
    text = invoke("eval", "prompts/echo.yaml", "--dry-run").stdout
    assert "judge long" in text


def test_a_judge_template_that_needs_a_missing_field_is_found_before_sending(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, judged_api: FakeOpenAI) -> None:
    root = write_judged_project(tmp_path / "proj", JUDGE.replace("q={{ q }}", "q={{ topic }}"))
    monkeypatch.chdir(root)
    result = invoke("validate", "prompts/echo.yaml", code=2)
    assert "length.yaml" in result.stderr and "topic" in result.stderr
    assert "r1" in result.stderr
    invoke("eval", "prompts/echo.yaml", code=2)
    assert judged_api.count == 0


def test_every_sample_of_a_repeated_run_is_judged(project: Path, judged_api: FakeOpenAI) -> None:
    run = eval_run("prompts/echo.yaml", "--repeat", "2")
    assert run["metrics"]["long"]["value"] == pytest.approx(3.5)
    assert run["metrics"]["long"]["n"] == 8
    assert run["metrics"]["long"]["unscored"] == 2


def test_few_shot_examples_are_judged_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          judged_api: FakeOpenAI) -> None:
    with_examples = JUDGED_PROMPT.replace(
        "metrics:", "examples:\n  - input: {q: seven}\n    expected: seven\n"
        "  - input: {q: ten}\n    expected: ten\nmetrics:")
    root = write_judged_project(tmp_path / "proj", prompt=with_examples)
    monkeypatch.chdir(root)
    run = eval_run("prompts/echo.yaml")
    # seven 5, ten 3.
    assert run["fewshot_metrics"]["long"]["value"] == pytest.approx(4.0)
    assert run["fewshot_metrics"]["long"]["n"] == 2
    assert run["metrics"]["long"]["value"] == pytest.approx(3.5)


def test_cache_only_replays_the_judge_and_no_cache_asks_it_again(
        project: Path, judged_api: FakeOpenAI) -> None:
    eval_run("prompts/echo.yaml")
    count = judged_api.count
    replay = eval_run("prompts/echo.yaml", "--cache-only")
    assert judged_api.count == count
    assert replay["metrics"]["long"]["value"] == pytest.approx(3.5)
    fresh = eval_run("prompts/echo.yaml", "--no-cache")
    assert len(judge_requests(judged_api)) == 10
    assert fresh["scorers"]["gpt-4o"]["requests"] == 5
