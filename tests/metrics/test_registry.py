"""The metric registry: a new built-in metric is one function and one registration line,
and then works everywhere: validation, scoring, aggregates, thresholds, diff, history."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from promptctl.metrics import aggregates, registry
from promptctl.metrics.registry import PAIRED_MEAN, Metric, ScoreContext, Scores
from tests.fakeserver import FakeOpenAI
from tests.helpers import ECHO_PROMPT, eval_run, invoke, write_echo_project


def short_answer(ctx: ScoreContext) -> Scores:
    """1 when the answer has at most four characters."""
    return {"short_answer": 1.0 if ctx.extraction.valid and len(str(ctx.extraction.answer)) <= 4
            else 0.0}


@pytest.fixture
def registered() -> Iterator[None]:
    registry.builtin_names()  # the built-ins first, so the new one is added to them
    registry.register(Metric("short_answer", short_answer,
                             lambda c: aggregates.share(c.get("short_answer", [])),
                             PAIRED_MEAN, "short_answer"))
    yield
    registry._BUILTIN.pop("short_answer")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    prompt = ECHO_PROMPT.replace("metrics: [exact_match, format_validity]",
                                 "metrics: [exact_match, short_answer]\n"
                                 "thresholds:\n  short_answer: {min: 0.5}\n"
                                 "  max_regression: {short_answer: 0.1}")
    root = write_echo_project(tmp_path / "proj", prompt)
    monkeypatch.chdir(root)
    return root


def test_an_unregistered_metric_is_refused_with_the_names_that_exist(project: Path) -> None:
    result = invoke("validate", "prompts/echo.yaml", code=2)
    assert "unknown metric 'short_answer'" in result.stderr
    assert "exact_match" in result.stderr


def test_a_registered_metric_is_scored_aggregated_and_compared(
        registered: None, project: Path, api: FakeOpenAI) -> None:
    invoke("validate", "prompts/echo.yaml")
    run = eval_run("prompts/echo.yaml")
    # one, two, four and five have at most four letters; three does not.
    assert run["metrics"]["short_answer"]["value"] == pytest.approx(4 / 5)
    assert run["metrics"]["short_answer"]["n"] == 5
    api.add_rule("Question four", "echo: Question fourteen")
    second = eval_run("prompts/echo.yaml", "--no-cache")
    assert second["metrics"]["short_answer"]["value"] == pytest.approx(3 / 5)
    diff = json.loads(invoke("diff", run["id"], second["id"], "--json").stdout)
    entry = diff["metrics"]["short_answer"]
    assert entry["delta"] == pytest.approx(-0.2)
    # A 0/1 score on one sample per row is tested as exact_match is: McNemar.
    assert entry["test"] == "mcnemar_exact"
    assert entry["direction"] == "worse"


def test_every_kind_is_known_whichever_kind_module_is_imported_first() -> None:
    # In a fresh interpreter: one kind registered on its own must not hide the others.
    code = ("import promptctl.metrics.custom\n"
            "from promptctl.metrics.registry import kinds\n"
            "print(' '.join(sorted(kinds())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["custom", "llm_judge", "similarity"]
