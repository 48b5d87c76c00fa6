"""A row's work is bounded as a whole: a for_each loop cannot multiply the limits of one
render by its number of items, and `validate` renders loop items before anything is sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from promptctl.pipeline_rows import MAX_FOR_EACH_ITEMS
from promptctl.templates import MAX_CHARS, MAX_ROW_WRITTEN
from tests import pipelinekit
from tests.fakeserver import FakeOpenAI, last_user_message
from tests.helpers import eval_run, invoke, use_fake_openai

LOOP_OVER_INPUT = """\
name: loop
kind: pipeline
steps:
  - id: stock
    for_each: "input.products"
    prompt: ../prompts/stock.yaml
    input: {product: "ITEM"}
output: "{{ steps.stock.answer | length }}"
output_type: number
metrics: [exact_match]
evalset: ../evalsets/support.jsonl
"""


def _project(root: Path, item_template: str, rows: list[dict[str, Any]],
             pipeline: str = LOOP_OVER_INPUT) -> Path:
    return pipelinekit.write_project(root, pipeline.replace("ITEM", item_template), rows)


def test_validate_refuses_a_row_whose_loop_outgrows_the_row_budget(tmp_path: Path) -> None:
    # Each item renders well inside one render's limit; all of them together do not.
    per_item = 40_000
    items = MAX_ROW_WRITTEN // per_item + 10
    assert per_item * 2 < MAX_CHARS and items < MAX_FOR_EACH_ITEMS
    path = _project(tmp_path, "{{ 'x' * " + str(per_item) + " }}",
                    [{"id": "big", "input": {"products": list(range(items))}, "expected": 1}])
    result = invoke("validate", str(path), code=2)
    assert "row 'big'" in result.stderr
    assert "the templates of one row write more than" in result.stderr
    assert "for_each" in result.stderr


def test_validate_passes_the_same_loop_over_fewer_items(tmp_path: Path) -> None:
    path = _project(tmp_path, "{{ 'x' * 40000 }}",
                    [{"id": "small", "input": {"products": list(range(20))}, "expected": 20}])
    invoke("validate", str(path))


def test_validate_refuses_too_many_items(tmp_path: Path) -> None:
    path = _project(tmp_path, "{{ item }}", [
        {"id": "ok", "input": {"products": ["a"]}, "expected": 1},
        {"id": "many", "input": {"products": list(range(MAX_FOR_EACH_ITEMS + 1))}, "expected": 1}])
    err = invoke("validate", str(path), code=2).stderr
    assert f"for_each gave {MAX_FOR_EACH_ITEMS + 1:,} items" in err
    assert "row 'many'" in err and "pipelines/support.yaml:5" in err


def test_validate_renders_each_item_of_a_loop_over_the_input(tmp_path: Path) -> None:
    path = _project(tmp_path, "{{ item.name }}", [
        {"id": "r1", "input": {"products": [{"name": "kettle"}, {"title": "lamp"}]},
         "expected": 2}])
    err = invoke("validate", str(path), code=2).stderr
    assert "row 'r1'" in err and "name" in err


def test_validate_renders_items_of_an_answer_the_row_expects(tmp_path: Path) -> None:
    """A loop over a model's answer: the row's expected answer for that step stands in."""
    pipeline = pipelinekit.PIPELINE.replace('input: {product: "{{ item }}"}',
                                            'input: {product: "{{ item.name }}"}')
    rows = [{"id": "r1", "input": {"text": "#kettle"}, "expected": 0,
             "steps": {"products": ["kettle"]}}]
    path = pipelinekit.write_project(tmp_path, pipeline, rows)
    err = invoke("validate", str(path), code=2).stderr
    assert "row 'r1'" in err and "name" in err
    rows[0]["steps"] = {"products": [{"name": "kettle"}]}
    pipelinekit.write_project(tmp_path, pipeline, rows)
    invoke("validate", str(path))


@pytest.fixture
def api(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    def answer(body: dict[str, Any]) -> str:
        if last_user_message(body).startswith("List products in: "):
            return json.dumps([f"p{i}" for i in range(MAX_FOR_EACH_ITEMS + 5)])
        return pipelinekit.answer(body)

    fake_openai.responder = answer
    return use_fake_openai(monkeypatch, fake_openai, "sk-test-loop-bounds-31f2")


def test_a_runaway_answer_is_not_looped_over(tmp_path: Path, api: FakeOpenAI,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = pipelinekit.write_project(tmp_path, rows=[
        {"id": "r1", "input": {"text": "#kettle"}, "expected": 0}])
    monkeypatch.chdir(tmp_path)
    run_id = eval_run(str(path))["id"]
    stock = [r for r in api.chat_requests if "Is it in stock" in last_user_message(r.body)]
    assert stock == []
    shown = json.loads(invoke("show", run_id, "--json").stdout)
    step = shown["rows"][0]["steps"]["stock"]
    assert f"for_each gave {MAX_FOR_EACH_ITEMS + 5:,} items" in step["extract_error"]
