"""Every kind of metric (built-in, llm_judge, similarity, custom) scores a pipeline's steps and
its final answer, as it scores a prompt: the one engine runs both. Values are worked out by
hand from pipelinekit's rows (see pipelinekit.ROWS and pipelinekit.answer)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from tests import pipelinekit
from tests.fakeserver import Body, FakeOpenAI, last_user_message, letter_vector
from tests.helpers import eval_json, invoke, show_rows, use_fake_openai

KEY = "sk-test-qx7v-5e4d3c2b1a9f"

JUDGE = """\
name: same_judge
model: gpt-4o
messages:
  - role: user
    content: "JUDGE answer={{ answer }} expected={{ expected }}"
output: {pattern: 'score (?P<answer>\\d)', type: number}
"""

NEAR = """\
def score(answer, expected, row):
    if answer is None or expected is None:
        return None
    return 1.0 if abs(float(answer) - float(expected)) <= 5 else 0.0
"""


def reply(body: Body) -> str:
    """The pipeline's steps as pipelinekit answers them; the judge gives 1 when the answer it
    is shown is the expected number, else 0."""
    text = last_user_message(body)
    found = re.fullmatch(r"JUDGE answer=(\S*) expected=(\S*)", text)
    if found is not None:
        same = float(found.group(1)) == float(found.group(2))
        return "score 1" if same else "score 0"
    return pipelinekit.answer(body)


@pytest.fixture
def api(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    fake_openai.responder = reply
    fake_openai.embedder = letter_vector
    return use_fake_openai(monkeypatch, fake_openai, KEY)


def project(root: Path, monkeypatch: pytest.MonkeyPatch, *, refund_metrics: str = "",
            route_metrics: str = "", end_metrics: str = "") -> Path:
    """pipelinekit's project with extra metric entries on the refund and route steps' prompts
    and on the pipeline's final answer."""
    path = pipelinekit.write_project(root)
    (root / "judges").mkdir(exist_ok=True)
    (root / "judges" / "same.yaml").write_text(JUDGE, encoding="utf-8")
    (root / "scorers").mkdir(exist_ok=True)
    (root / "scorers" / "near.py").write_text(NEAR, encoding="utf-8")
    for name, extra in (("refund", refund_metrics), ("route", route_metrics)):
        if extra:
            prompt = root / "prompts" / f"{name}.yaml"
            text = prompt.read_text(encoding="utf-8")
            names = re.search(r"metrics: \[(.*)\]", text)
            assert names is not None
            listed = "".join(f"  - {n.strip()}\n" for n in names.group(1).split(","))
            prompt.write_text(text.replace(names.group(0), "metrics:\n" + listed + extra),
                              encoding="utf-8")
    if end_metrics:
        path.write_text(pipelinekit.PIPELINE.replace("metrics: [exact_match]",
                                                     "metrics:\n  - exact_match\n" + end_metrics),
                        encoding="utf-8")
    monkeypatch.chdir(root)
    return path


def judge_requests(api: FakeOpenAI) -> list[str]:
    return [t for t in (last_user_message(r.body) for r in api.chat_requests) if t.startswith("JUDGE")]


def step_metric(run: dict[str, Any], step: str, name: str) -> tuple[Any, Any]:
    result = run["steps"][step]["metrics"][name]
    return result["value"], result["n"]


def test_built_in_metrics_on_a_step(api: FakeOpenAI, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = project(tmp_path / "p", monkeypatch)
    run, _ = eval_json(str(path))
    # refund ran with an expected value on r1 (40 for 40) and r3 (15 for 30).
    assert step_metric(run, "refund", "exact_match") == (pytest.approx(0.5), 2)
    assert step_metric(run, "refund", "mae") == (pytest.approx(7.5), 2)


def test_custom_scorer_on_a_step_and_end_to_end(api: FakeOpenAI, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = "  - name: near\n    custom: ../scorers/near.py:score\n"
    path = project(tmp_path / "p", monkeypatch, refund_metrics=scorer, end_metrics=scorer)
    run, _ = eval_json(str(path))
    # Step: r1 |40-40| <= 5, r3 |15-30| > 5.
    assert step_metric(run, "refund", "near") == (pytest.approx(0.5), 2)
    # End to end the answers are 40 0 15 25 0 10 0 30 for 40 0 30 50 20 10 0 60: within 5 on
    # r1 r2 r6 r7.
    assert run["metrics"]["near"]["value"] == pytest.approx(4 / 8)
    assert run["metrics"]["near"]["n"] == 8
    assert run["metrics"]["near"]["kind"] == "custom"


def test_judge_on_a_step_and_end_to_end(api: FakeOpenAI, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    judge = "  - name: same\n    llm_judge: {prompt: ../judges/same.yaml}\n"
    path = project(tmp_path / "p", monkeypatch, refund_metrics=judge, end_metrics=judge)
    run, _ = eval_json(str(path))
    assert step_metric(run, "refund", "same") == (pytest.approx(0.5), 2)
    assert run["metrics"]["same"]["value"] == pytest.approx(4 / 8)
    # Two step judgements (r1, r3) and one per row end to end.
    asked = judge_requests(api)
    assert len(asked) == 2 + 8
    assert any(re.fullmatch(r"JUDGE answer=15(\.0)? expected=30", t) for t in asked)
    # The judge's answer is kept with the step it judged.
    r3 = next(r for r in show_rows(run["id"]) if r["row_id"] == "r3")
    assert r3["steps"]["refund"]["judges"]["same"]["completion"] == "score 0"
    # A second run replays every request, the judges' included, from the cache.
    before = len(api.chat_requests)
    again, _ = eval_json(str(path))
    assert len(api.chat_requests) == before
    assert step_metric(again, "refund", "same") == step_metric(run, "refund", "same")


def test_similarity_on_a_step(api: FakeOpenAI, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    similar = "  - name: close\n    similarity: {model: text-embedding-3-small}\n"
    path = project(tmp_path / "p", monkeypatch, route_metrics=similar)
    run, _ = eval_json(str(path))
    # route has an expected value on 7 rows; it answers it on all but r5, which says
    # "technical" for "billing": letter counts give cosine 5 / sqrt(11 * 11).
    value, n = step_metric(run, "route", "close")
    assert n == 7
    assert value == pytest.approx((6 + 5 / math.sqrt(11 * 11)) / 7)
    assert api.embedding_requests


def test_validate_checks_a_step_scorer(api: FakeOpenAI, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = project(tmp_path / "p", monkeypatch,
                   refund_metrics="  - name: near\n    custom: ../scorers/near.py:missing\n")
    result = invoke("validate", str(path), code=2)
    assert "missing" in result.stderr and "near.py" in result.stderr
    result = invoke("eval", str(path), code=2)
    assert not api.chat_requests  # refused before anything is sent
