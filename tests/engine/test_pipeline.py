"""Pipelines run through the engine: every step's answer computed by the fake server from
its request, the figures checked against hand counts, the cache, error rows, concurrency."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests import pipelinekit
from tests.fakeserver import FakeOpenAI, last_user_message
from tests.helpers import eval_json, invoke, show_rows, use_fake_openai

KEY = "sk-test-chain-7a6b5c4d3e2f91"


@pytest.fixture
def api(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    fake_openai.responder = pipelinekit.answer
    return use_fake_openai(monkeypatch, fake_openai, KEY)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    path = pipelinekit.write_project(root)
    monkeypatch.chdir(root)
    return path


def rows_of(run_id: str) -> dict[str, dict[str, Any]]:
    return {r["row_id"]: r for r in show_rows(run_id)}


def test_figures_equal_hand_counts(api: FakeOpenAI, project: Path) -> None:
    run, _ = eval_json(str(project))
    assert run["kind"] == "pipeline"
    assert run["n"] == 8 and run["errors"] == 0
    # End to end right on r1 r2 r6 r7 (see pipelinekit.ROWS).
    assert run["metrics"]["exact_match"]["value"] == pytest.approx(4 / 8)
    assert run["metrics"]["exact_match"]["n"] == 8
    route = run["steps"]["route"]["metrics"]["exact_match"]
    assert (route["value"], route["n"]) == (pytest.approx(6 / 7), 7)
    refund = run["steps"]["refund"]
    assert (refund["metrics"]["exact_match"]["value"], refund["metrics"]["exact_match"]["n"]) \
        == (pytest.approx(0.5), 2)
    assert refund["metrics"]["mae"]["value"] == pytest.approx(7.5)  # |40-40| and |15-30|
    # refund runs only where route said billing: r1 r3 r4 r6 r8.
    assert (refund["ran"], refund["skipped"]) == (5, 3)
    assert run["composability_gap"] == {"value": pytest.approx(2 / 5), "n": 5, "wrong": 2}
    assert run["control_flow"]["value"] == pytest.approx(0.5)
    assert run["control_flow"]["n"] == 2
    # Requests: route, products for each of 8 rows; refund 5; stock one per product
    # (kettle, lamp, phone, case).
    assert len(api.chat_requests) == 8 + 8 + 5 + 4


def test_each_step_request_and_answer_stored_with_the_row(api: FakeOpenAI, project: Path) -> None:
    run, _ = eval_json(str(project))
    rows = rows_of(run["id"])
    r1 = rows["r1"]
    assert r1["answer"] == 40 and r1["scores"]["exact_match"] == 1
    steps = r1["steps"]
    assert steps["route"]["messages"] == [{"role": "user",
                                           "content": "Route this ticket: Please refund $40 for #kettle"}]
    assert steps["route"]["answer"] == "billing" and steps["route"]["correct"] is True
    assert steps["refund"]["completion"] == "Refund: 40"
    assert steps["products"]["answer"] == ["kettle"]
    # for_each: one request per item, the answer the list of answers ("kettle": 6 letters).
    assert [i["input"] for i in steps["stock"]["items"]] == [{"product": "kettle"}]
    assert steps["stock"]["answer"] == ["yes"]
    r2 = rows["r2"]["steps"]
    assert r2["refund"]["skipped"] is True and r2["refund"]["answer"] is None
    assert r2["refund"]["flow_correct"] is True
    assert rows["r5"]["steps"]["refund"]["flow_correct"] is False
    assert rows["r7"]["steps"]["stock"]["answer"] == ["no", "yes"]  # phone, case


def test_cached_rerun_sends_nothing(api: FakeOpenAI, project: Path) -> None:
    first, _ = eval_json(str(project))
    sent = len(api.chat_requests)
    again, _ = eval_json(str(project))
    assert len(api.chat_requests) == sent
    assert again["cached"] == 8
    assert again["metrics"]["exact_match"]["value"] == first["metrics"]["exact_match"]["value"]
    assert again["composability_gap"] == first["composability_gap"]


def test_failed_step_makes_the_row_an_error(api: FakeOpenAI, project: Path) -> None:
    api.fail_matching("Is it in stock: lamp", status=400)
    run, _ = eval_json(str(project), code=3)
    assert run["errors"] == 1 and run["n"] == 8
    rows = rows_of(run["id"])
    assert rows["r2"]["error"].startswith("step stock:")
    assert rows["r2"]["steps"]["stock"]["error"]
    assert "scores" not in rows["r2"] or not rows["r2"]["scores"]
    # The error row is not scored as a wrong answer: 3 of the 7 other rows are right.
    assert run["metrics"]["exact_match"]["n"] == 7
    assert run["metrics"]["exact_match"]["value"] == pytest.approx(3 / 7)
    # ... and resume sends that row's requests again, once the server answers.
    api.reset()
    api.responder = pipelinekit.answer
    result = invoke("eval", "--resume", run["id"], "--json")
    resumed = json.loads(result.stdout)["runs"][0]
    assert resumed["errors"] == 0 and resumed["n"] == 8
    assert resumed["metrics"]["exact_match"]["value"] == pytest.approx(4 / 8)


def test_independent_steps_run_at_once(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch,
                                       project: Path) -> None:
    api = use_fake_openai(monkeypatch, fake_openai, KEY)
    # route and products read only the input: the server answers neither until both have
    # arrived, so the row can only finish if they were sent together.
    both = threading.Barrier(2, timeout=20)

    def answer(body: dict[str, Any]) -> str:
        text = last_user_message(body)
        if text.startswith(("Route this ticket", "List products in")):
            both.wait()
        return pipelinekit.answer(body)

    api.responder = answer
    pipelinekit.write_project(project.parent.parent, rows=[pipelinekit.ROWS[1]])  # r2 only
    run, _ = eval_json(str(project), "--concurrency", "4")
    assert run["errors"] == 0 and run["metrics"]["exact_match"]["value"] == 1.0
    assert api.max_in_flight >= 2


def test_dependent_steps_wait(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch,
                              tmp_path: Path) -> None:
    api = use_fake_openai(monkeypatch, fake_openai, KEY)
    api.responder = pipelinekit.answer
    api.latency = 0.1
    chain = """\
name: chain
kind: pipeline
steps:
  - id: refund
    when: "steps.route.answer == 'billing'"
    prompt: ../prompts/refund.yaml
    input: {text: "{{ input.text }}"}
  - id: route
    prompt: ../prompts/route.yaml
    input: {text: "{{ input.text }}"}
output: "{{ steps.refund.answer }}"
output_type: number
evalset: ../evalsets/support.jsonl
"""
    path = pipelinekit.write_project(tmp_path / "p", chain, rows=[pipelinekit.ROWS[0]])
    monkeypatch.chdir(tmp_path / "p")
    run, _ = eval_json(str(path))
    assert api.max_in_flight == 1
    order = [r["body"]["messages"][0]["content"].split(":")[0] for r in api.chat_requests]
    assert order == ["Route this ticket", "Refund amount for"]
    assert run["metrics"]["exact_match"]["value"] == 1.0


def test_retries_are_counted_per_request(api: FakeOpenAI, project: Path) -> None:
    api.fail_next(1, status=500)
    run, _ = eval_json(str(project), "--concurrency", "1")
    assert run["retries"] == 1 and run["errors"] == 0
    assert run["metrics"]["exact_match"]["value"] == pytest.approx(4 / 8)
    again, _ = eval_json(str(project))
    assert again["retries"] == 0 and again["cached"] == 8


def test_composability_gap_counts_only_rows_whose_tested_steps_were_right() -> None:
    from promptctl.pipeline_rows import composability_gap

    right, wrong = {"correct": True}, {"correct": False}
    rows: list[dict[str, Any]] = [
        {"expected": 1, "scores": {"exact_match": 1.0}, "steps": {"a": right, "b": right}},
        {"expected": 1, "scores": {"exact_match": 0.0}, "steps": {"a": right, "b": {}}},
        {"expected": 1, "scores": {"exact_match": 0.0}, "steps": {"a": right, "b": wrong}},
        {"expected": 1, "scores": {"exact_match": 0.0}, "steps": {"a": {}, "b": {}}},  # untested
        {"expected": 1, "error": "step a: 500", "steps": {"a": right}},  # an error, not scored
        {"scores": {}, "steps": {"a": right}},  # no expected final answer
        {"expected": 2, "answer": 3, "valid": True, "scores": {}, "steps": {"a": right}},
    ]
    assert composability_gap(rows) == {"value": pytest.approx(2 / 3), "n": 3, "wrong": 2}
    assert composability_gap([]) == {"value": None, "n": 0, "wrong": 0}


def test_a_template_of_several_parts_renders_text(api: FakeOpenAI, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = pipelinekit.PIPELINE.replace(
        'input: {text: "{{ input.text }}"}\n  - id: products',
        'input: {text: "{{ input.text }} (routed to {{ steps.route.answer }})"}\n  - id: products')
    assert pipeline != pipelinekit.PIPELINE
    path = pipelinekit.write_project(tmp_path / "p", pipeline, rows=pipelinekit.ROWS[:1])
    monkeypatch.chdir(tmp_path / "p")
    run, _ = eval_json(str(path))
    refund = rows_of(run["id"])["r1"]["steps"]["refund"]
    assert refund["input"] == {"text": "Please refund $40 for #kettle (routed to billing)"}
    assert refund["answer"] == 40 and run["metrics"]["exact_match"]["value"] == 1.0


def test_a_step_whose_input_cannot_be_made_is_a_wrong_answer_not_an_error(
        api: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [*pipelinekit.ROWS[:2],
            {"id": "nj", "input": {"text": "refund $5 NOJSON"}, "expected": 5,
             "steps": {"route": "billing"}}]
    path = pipelinekit.write_project(tmp_path / "p", rows=rows)
    monkeypatch.chdir(tmp_path / "p")
    run, _ = eval_json(str(path))
    assert run["errors"] == 0
    steps = rows_of(run["id"])["nj"]["steps"]
    assert steps["products"]["valid"] is False and steps["products"]["answer"] is None
    assert steps["stock"]["unrendered"] is True and "NoneType, not a list" in \
        steps["stock"]["extract_error"]
    assert run["steps"]["stock"]["unrendered"] == 1 and run["steps"]["stock"]["ran"] == 2
    # The final answer does not read the loop: the row is scored, and right.
    assert run["metrics"]["exact_match"]["value"] == 1.0 and run["metrics"]["exact_match"]["n"] == 3
    assert "not sent: for_each gave NoneType" in invoke("show", run["id"]).stdout


def test_a_prompt_template_failing_on_an_answer_does_not_stop_the_run(
        api: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A loop whose prompt adds 1 to the refund: on r2 refund was skipped (null), so the
    # prompt's own template cannot render for its item.
    pipeline = pipelinekit.PIPELINE.replace("output:", """\
  - id: plus_one
    for_each: "steps.products.answer"
    prompt: ../prompts/plus_one.yaml
    input: {x: "{{ steps.refund.answer }}"}
output:""")
    path = pipelinekit.write_project(tmp_path / "p", pipeline, rows=pipelinekit.ROWS[:2])
    (tmp_path / "p" / "prompts" / "plus_one.yaml").write_text(
        'messages:\n  - role: user\n    content: "Amount plus one: {{ x + 1 }}"\n',
        encoding="utf-8")
    monkeypatch.chdir(tmp_path / "p")
    run, _ = eval_json(str(path))
    assert run["errors"] == 0 and run["n"] == 2
    rows = rows_of(run["id"])
    [item] = rows["r1"]["steps"]["plus_one"]["items"]
    assert item["messages"][0]["content"] == "Amount plus one: 41.0"
    [item] = rows["r2"]["steps"]["plus_one"]["items"]
    assert item["unrendered"] is True and "messages" not in item
    assert rows["r2"]["steps"]["plus_one"]["answer"] == [None]
    assert run["metrics"]["exact_match"]["value"] == 1.0
