"""Pipeline files: loading, the version, and every check `validate` makes before anything is
sent, each error naming the file and the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptctl.engine.plan import plan_requests
from promptctl.errors import InputError
from promptctl.pipelines import is_pipeline_file, load_pipeline
from tests import pipelinekit
from tests.helpers import invoke


def write(tmp_path: Path, pipeline: str = pipelinekit.PIPELINE,
          rows: list[dict[str, object]] | None = None) -> Path:
    return pipelinekit.write_project(tmp_path, pipeline, rows)


def error_of(path: Path) -> InputError:
    with pytest.raises(InputError) as info:
        pipeline = load_pipeline(path, path.parent.parent)
        plan_requests(pipeline, pipeline.load_evalset())
    return info.value


def line_of(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


def test_loads_steps_order_and_version(tmp_path: Path) -> None:
    path = write(tmp_path)
    assert is_pipeline_file(path) and not is_pipeline_file(tmp_path / "prompts" / "route.yaml")
    pipeline = load_pipeline(path, tmp_path)
    assert [s.id for s in pipeline.steps] == ["route", "refund", "products", "stock"]
    assert pipeline.step("refund").deps == {"route"}
    assert pipeline.step("stock").deps == {"products"}
    assert pipeline.order.index("route") < pipeline.order.index("refund")
    assert set(pipeline.prompts) == {f"prompts/{n}.yaml" for n in pipelinekit.PROMPTS}
    # The version covers the prompts it uses: editing one changes it, the file unchanged.
    before = pipeline.version
    prompt = tmp_path / "prompts" / "stock.yaml"
    prompt.write_text(prompt.read_text(encoding="utf-8").replace("in stock", "available"),
                      encoding="utf-8")
    assert load_pipeline(path, tmp_path).version != before
    path.write_text(path.read_text(encoding="utf-8") + "# a comment\n", encoding="utf-8")
    assert load_pipeline(path, tmp_path).version not in (before,)


@pytest.mark.parametrize(("old", "new", "needle", "words"), [
    ('input: {product: "{{ item }}"}', 'input: {product: "{{ steps.prodcts.answer }}"}',
     "steps.prodcts", "steps.prodcts, which is not a step"),
    ("prompt: ../prompts/refund.yaml", "prompt: ../prompts/refnd.yaml", "refnd.yaml",
     "does not exist"),
    ('when: "steps.route.answer == \'billing\'"', 'when: "steps.route.answer == "',
     "when:", "syntax error"),
    ('  - id: route\n    prompt: ../prompts/route.yaml\n    input: {text: "{{ input.text }}"}',
     '  - id: route\n    prompt: ../prompts/route.yaml\n    input: {text: "{{ steps.refund.answer }}"}',
     "- id: route", "cycle"),
    ('input: {product: "{{ item }}"}', 'input: {item: "{{ item }}"}', "input: {item",
     "uses product, which the step's input does not give"),
    ("    for_each: \"steps.products.answer\"\n", "", 'input: {product: "{{ item }}"}',
     "only a for_each step has"),
    ("  - id: refund\n", "  - id: refund\n    retries: 3\n", "retries", "unknown key 'retries'"),
    ('input: {text: "{{ input.text }}"}\n  - id: products',
     'input: {text: "{{ steps[input.text] }}"}\n  - id: products', "steps[input.text]",
     "other than as steps.ID"),
])
def test_file_errors_name_the_line(tmp_path: Path, old: str, new: str, needle: str,
                                   words: str) -> None:
    assert old in pipelinekit.PIPELINE
    path = write(tmp_path, pipelinekit.PIPELINE.replace(old, new, 1))
    error = error_of(path)
    assert words in error.message
    assert Path(str(error.file)).name == "support.yaml"
    assert error.line == line_of(path, needle)


def test_row_missing_an_input_field_is_found_before_sending(tmp_path: Path) -> None:
    rows = [*pipelinekit.ROWS[:3], {"id": "bad", "input": {"txt": "typo"}, "expected": 0}]
    path = write(tmp_path, rows=rows)
    error = error_of(path)
    assert "reads input.text, which row 'bad' lacks" in error.message
    assert "support.jsonl:4" in error.message  # the row's own line
    assert error.line == line_of(path, '- id: route') + 2  # the input.text template


def test_row_naming_an_unknown_step(tmp_path: Path) -> None:
    rows = [*pipelinekit.ROWS[:2], {"id": "x", "input": {"text": "a"}, "steps": {"rout": "b"}}]
    path = write(tmp_path, rows=rows)
    error = error_of(path)
    assert "unknown step 'rout'" in error.message
    assert Path(str(error.file)).name == "support.jsonl" and error.line == 3


def test_step_template_failing_on_a_row(tmp_path: Path) -> None:
    pipeline = pipelinekit.PIPELINE.replace(
        'input: {text: "{{ input.text }}"}\n  - id: refund',
        'input: {text: "{{ input.text * 2000000 }}"}\n  - id: refund', 1)
    path = write(tmp_path, pipeline)
    error = error_of(path)
    assert "input.text of step route" in error.message
    assert error.line == line_of(path, "* 2000000")


def test_validate_command_reports_file_and_line(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, pipelinekit.PIPELINE.replace("steps.products.answer", "steps.product.answer"))
    monkeypatch.chdir(tmp_path)
    result = invoke("validate", "pipelines/support.yaml", "--json", code=2)
    (entry,) = json.loads(result.stdout)["files"]
    assert entry["line"] == line_of(path, "for_each") and "did you mean 'products'" in entry["fix"]
    write(tmp_path)
    ok = json.loads(invoke("validate", "--json").stdout)
    assert ok["ok"] is True
    assert any("pipeline, 4 steps, every row of support.jsonl (8) checked" in f["detail"]
               for f in ok["files"])


def test_the_repository_example_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import REPO

    monkeypatch.chdir(REPO)
    pipeline = load_pipeline(REPO / "pipelines" / "capital.yaml", REPO)
    evalset = pipeline.load_evalset()
    plan_requests(pipeline, evalset)
    rows = list(evalset)
    assert len(rows) >= 20
    assert pipeline.model == "gpt-4o-mini"  # the model its prompts share
    assert pipeline.step("capital").deps == {"kind", "country"}
    assert sum(1 for r in rows if (r.should_run or {}).get("country") is False) == 5
