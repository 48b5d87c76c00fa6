"""llm_judge metrics: a judge prompt scores each completion through the run's engine
(the fake judge of tests/judgekit.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakeserver import FakeOpenAI, last_user_message
from tests.helpers import eval_run, git_init, invoke, show, show_rows
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


def test_a_cached_judge_keeps_its_cost_and_says_it_paid_nothing(
        project: Path, judged_api: FakeOpenAI) -> None:
    first = eval_run("prompts/echo.yaml")
    second = eval_run("prompts/echo.yaml")
    usage, again = first["scorers"]["gpt-4o"], second["scorers"]["gpt-4o"]
    # The answers' tokens and cost as if nothing were cached: the same on both runs; paid now:
    # all of it on the first run, nothing on the second.
    for key in ("prompt_tokens", "completion_tokens", "cost_usd"):
        assert again[key] == pytest.approx(usage[key]), key
    assert usage["cost_usd"] > 0 and usage["spent_usd"] == pytest.approx(usage["cost_usd"])
    assert again["spent_usd"] == 0


def test_a_judge_without_a_price_stays_unknown_when_cached(
        project: Path, judged_api: FakeOpenAI) -> None:
    # The judge on an endpoint of promptctl.yaml: no price is known for it.
    (project / "promptctl.yaml").write_text(
        f"endpoints:\n  jdg:\n    base_url: {judged_api.base_url}\n", encoding="utf-8")
    judge = project / "judges" / "length.yaml"
    judge.write_text(JUDGE.replace("model: gpt-4o", "model: jdg/gpt-4o"), encoding="utf-8")
    first = eval_run("prompts/echo.yaml")
    assert (first["scorers"]["jdg/gpt-4o"]["cost_usd"],
            first["scorers"]["jdg/gpt-4o"]["spent_usd"]) == (None, None)
    second = eval_run("prompts/echo.yaml")
    usage = second["scorers"]["jdg/gpt-4o"]
    assert (usage["requests"], usage["cached"]) == (0, 5)
    # Not $0: what five cached judge answers would cost is as unknown as on the first run;
    # what this run paid for them is known, nothing.
    assert usage["cost_usd"] is None and usage["spent_usd"] == 0
    shown = invoke("show", second["id"]).stdout
    assert "jdg/gpt-4o 0 requests (cached 5, errors 0)" in shown
    assert "cost unknown (add the model to pricing: in promptctl.yaml) (paid now $0.0000)" in shown


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
    # Every sample is judged; the metric rests on the four rows judged (two samples each).
    assert run["metrics"]["long"]["n"] == 4
    assert run["metrics"]["long"]["unscored"] == 1


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


def test_counts_are_over_eval_rows_with_few_shot_examples_apart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, judged_api: FakeOpenAI) -> None:
    with_examples = JUDGED_PROMPT.replace(
        "metrics:", "examples:\n  - input: {q: three}\n    expected: three\n"
        "  - input: {q: ten}\n    expected: ten\n  - input: {q: seven}\n    expected: seven\n"
        "metrics:")
    root = write_judged_project(tmp_path / "proj", prompt=with_examples)
    monkeypatch.chdir(root)
    judged_api.fail_matching("Question seven", status=400)  # one few-shot request fails
    run = eval_run("prompts/echo.yaml", code=3)
    # The judge gives r3 and the example "three" no score: counted apart, as n counts rows.
    failed = run["scoring_errors"]["long"]
    assert (failed["count"], failed["samples"], failed["fewshot"]) == (1, 1, 1)
    assert [(r["row_id"], r["kind"]) for r in failed["rows"]] == [("r3", "eval"),
                                                                  ("ex1", "fewshot")]
    assert (run["metrics"]["long"]["n"], run["metrics"]["long"]["unscored"]) == (4, 1)
    assert (run["fewshot_metrics"]["long"]["n"], run["fewshot_metrics"]["long"]["unscored"]) \
        == (1, 1)
    assert run["errors"] == 0  # the failed request was a few-shot example's
    shown = invoke("show", run["id"]).stdout
    assert "long: no score for 1 rows and 1 few-shot examples (r3: " in shown
    assert "ex1 (few-shot): " in shown
    assert "errors 0  few-shot errors 1" in shown
    # A judge that gave no score leaves no key in the row's scores: only scores are there.
    rows = show(run["id"])["rows"]
    assert all(set(r["scores"] or {}) <= {"exact_match", "format_validity", "long"} for r in rows)


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


def test_judge_requests_are_taken_from_the_runs_allowance(project: Path,
                                                          judged_api: FakeOpenAI) -> None:
    from promptctl.allowance import Allowance
    from promptctl.config import Config
    from promptctl.engine import EvalOptions, run_eval
    from promptctl.prompts import load_prompt
    from promptctl.providers import resolve_model
    from promptctl.store import SQLiteStore

    config = Config(root=project)
    prompt = load_prompt(project / "prompts" / "echo.yaml", project)
    store = SQLiteStore(project / "allowance.db")
    # Five rows, each answered and then judged: ten requests wanted, seven allowed.
    allowance = Allowance(requests=7)
    try:
        run_eval(prompt, resolve_model("gpt-4o-mini", config), store=store, config=config,
                 options=EvalOptions(concurrency=1, allowance=allowance))
    finally:
        store.close()
    assert judged_api.count == 7 == allowance.sent
    assert judge_requests(judged_api) and allowance.cut
