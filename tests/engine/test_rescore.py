"""`promptctl rescore`: stored completions scored again; only missing judge answers are sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakeserver import FakeOpenAI, last_user_message
from tests.helpers import eval_run, invoke, runs_json, show_rows
from tests.judgekit import (
    JUDGE,
    JUDGED_PROMPT,
    eval_requests,
    judge_requests,
    write_judged_project,
)


def rescore(*args: str, code: int = 0) -> dict[str, object]:
    (run,) = json.loads(invoke("rescore", *args, "--json", code=code).stdout)["runs"]
    assert isinstance(run, dict)
    return run


def test_rescore_after_a_judge_change_sends_only_judge_requests(
        project: Path, judged_api: FakeOpenAI) -> None:
    old = eval_run("prompts/echo.yaml")
    assert len(eval_requests(judged_api)) == 5
    # The judge now answers 1 for answers with an "o" in them and reads a label.
    (project / "judges" / "length.yaml").write_text(
        JUDGE.replace("type: number", "type: label\n  labels: [pass, fail]"), encoding="utf-8")
    judged_api.rules.clear()
    judged_api.add_rule("JUDGE", lambda body, _: "score pass" if "o" in
                        last_user_message(body).split("answer=")[1].split()[0] else "score fail")
    new = rescore(old["id"])
    assert len(eval_requests(judged_api)) == 5  # no completion request was sent
    assert len(judge_requests(judged_api)) == 10  # five old, five new
    # one, two, four: an "o"; three, five: none.
    assert new["metrics"]["long"]["value"] == pytest.approx(3 / 5)  # type: ignore[index]
    assert new["metrics"]["exact_match"]["value"] == 1.0  # type: ignore[index]
    assert new["parent_run"] == old["id"]
    # The version covers the judge: the rescored run stands for the prompt with the new one.
    assert new["prompt_version"] != old["prompt_version"]
    assert new["scorers"]["gpt-4o"]["requests"] == 5  # type: ignore[index]
    rows = {r["row_id"]: r for r in show_rows(str(new["id"]))}
    assert rows["r1"]["completion"] == "echo: Question one"
    assert rows["r1"]["judges"]["long"]["completion"] == "score pass"
    assert rows["r1"]["cached"] is True
    # A second rescore finds every judge answer in the cache.
    count = judged_api.count
    again = rescore(old["id"])
    assert judged_api.count == count
    assert again["metrics"]["long"]["value"] == pytest.approx(3 / 5)  # type: ignore[index]
    assert {r["id"] for r in runs_json()} == {old["id"], new["id"], again["id"]}
    # An eval of the files as they are now is that same version (and sends nothing).
    assert eval_run("prompts/echo.yaml")["prompt_version"] == new["prompt_version"]
    assert judged_api.count == count


def test_rescore_reads_a_changed_output_pattern(project: Path, judged_api: FakeOpenAI) -> None:
    old = eval_run("prompts/echo.yaml")
    # Same requests, another pattern: only answers starting with t are read (two, three).
    (project / "prompts" / "echo.yaml").write_text(
        JUDGED_PROMPT.replace("(?P<answer>\\w+)", "(?P<answer>t\\w+)"), encoding="utf-8")
    new = rescore(old["id"])
    assert new["prompt_version"] != old["prompt_version"]
    assert new["metrics"]["exact_match"]["value"] == pytest.approx(2 / 5)  # type: ignore[index]
    # The judge sees answer=None for the three unread rows: new requests for those only.
    assert len(eval_requests(judged_api)) == 5
    assert len(judge_requests(judged_api)) == 8


def test_rescore_keeps_a_prompt_whose_requests_changed(project: Path,
                                                      judged_api: FakeOpenAI) -> None:
    old = eval_run("prompts/echo.yaml")
    (project / "prompts" / "echo.yaml").write_text(
        JUDGED_PROMPT.replace("Question {{ q }}", "Q: {{ q }}"), encoding="utf-8")
    new = rescore(old["id"])
    assert new["prompt_version"] == old["prompt_version"]
    assert new["metrics"]["exact_match"]["value"] == 1.0  # type: ignore[index]
    assert len(judged_api.chat_requests) == 10


def test_only_the_named_metrics_are_scored_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 judged_api: FakeOpenAI) -> None:
    two = JUDGED_PROMPT.replace(
        "thresholds:", "  - name: other\n    llm_judge:\n      prompt: ../judges/other.yaml\n"
        "thresholds:")
    root = write_judged_project(tmp_path / "proj", prompt=two)
    (root / "judges" / "other.yaml").write_text(JUDGE.replace("JUDGE", "JUDGE other"),
                                                encoding="utf-8")
    monkeypatch.chdir(root)
    old = eval_run("prompts/echo.yaml")
    assert old["metrics"]["other"]["value"] == pytest.approx(3.5)
    for name in ("length", "other"):
        (root / "judges" / f"{name}.yaml").write_text(
            (root / "judges" / f"{name}.yaml").read_text() + "description: changed\n")
    before = len(judge_requests(judged_api))
    new = rescore(old["id"], "--metrics", "long")
    sent = judge_requests(judged_api)[before:]
    assert len(sent) == 5
    assert not any("JUDGE other" in last_user_message(b) for b in sent)
    assert new["metrics"]["other"] == {**old["metrics"]["other"],  # type: ignore[index]
                                       "identity": new["metrics"]["other"]["identity"]}  # type: ignore[index]
    rows = {r["row_id"]: r for r in show_rows(str(new["id"]))}
    # r3's judge gave no score: no key in its scores (only scores are), its reason kept.
    assert "other" not in rows["r3"]["scores"] and rows["r3"]["judges"]["other"]["error"]
    assert new["metrics"]["other"]["unscored"] == 1  # type: ignore[index]
    assert rows["r1"]["judges"]["other"]["completion"] == "score 3"


def test_an_unknown_metric_is_refused(project: Path, judged_api: FakeOpenAI) -> None:
    old = eval_run("prompts/echo.yaml")
    result = invoke("rescore", old["id"], "--metrics", "nope", code=2)
    assert "'nope' is not a metric of prompt echo" in result.stderr
