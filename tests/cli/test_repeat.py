"""`eval --repeat K`: a row's K samples are one row of the metrics, not K independent rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import FakeOpenAI
from tests.helpers import eval_run, invoke, show, use_fake_openai

WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
# Six rows expect the word they ask about (the fake server echoes it), four expect another.
EXPECTED = WORDS[:6] + ["one", "two", "three", "four"]

PROMPT = """\
name: vote
model: gpt-4o-mini
params:
  max_tokens: 16
messages:
  - role: user
    content: "Question {{ q }}"
output:
  pattern: 'echo: Question (?P<answer>\\w+)'
  type: label
  labels: [one, two, three, four, five, six, seven, eight, nine, ten]
metrics: [accuracy, f1_macro, format_validity]
evalset: ../evalsets/vote.jsonl
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI) -> Path:
    root = tmp_path / "proj"
    (root / "prompts").mkdir(parents=True)
    (root / "evalsets").mkdir()
    (root / "prompts" / "vote.yaml").write_text(PROMPT, encoding="utf-8")
    rows = "".join(json.dumps({"id": f"r{i + 1:02d}", "input": {"q": w}, "expected": e}) + "\n"
                   for i, (w, e) in enumerate(zip(WORDS, EXPECTED, strict=True)))
    (root / "evalsets" / "vote.jsonl").write_text(rows, encoding="utf-8")
    monkeypatch.chdir(root)
    use_fake_openai(monkeypatch, fake_openai, "sk-test-repeat-5e1d")
    return root


def _metrics(run: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {name: (m["value"], m["n"], tuple(m["ci95"])) for name, m in run["metrics"].items()}


def test_twenty_identical_samples_give_the_interval_and_n_of_one(project: Path,
                                                                 fake_openai: FakeOpenAI) -> None:
    once = eval_run("prompts/vote.yaml")
    assert once["metrics"]["accuracy"]["value"] == pytest.approx(0.6)
    assert once["metrics"]["accuracy"]["n"] == 10
    low, high = once["metrics"]["accuracy"]["ci95"]
    assert high - low > 0.3  # ten rows say little: about [0.3, 0.9]

    twenty = eval_run("prompts/vote.yaml", "--repeat", "20")
    assert fake_openai.count == 10 * 20  # every sample was asked: the answers are all the same
    # The same ten answers twenty times over are still ten rows: same values, n and intervals
    # for every metric (the share, macro F1 and format validity).
    assert _metrics(twenty) == _metrics(once)
    assert (twenty["n"], twenty["samples"]) == (10, 200)
    assert (once["n"], once["samples"]) == (10, 10)

    # What show --json gives (and the HTML report reads) is the stored summary.
    stored = show(twenty["id"])["run"]
    assert _metrics(stored) == _metrics(once) and stored["n"] == 10
    human = invoke("show", twenty["id"]).stdout
    assert "rows 10 (200 samples)" in human


def test_samples_of_a_row_are_averaged_before_rows_are_resampled(
        project: Path, fake_openai: FakeOpenAI) -> None:
    # Row r01 is answered right on even calls and wrong on odd ones: half its samples pass.
    def alternate(body: dict[str, Any], call: int) -> str:
        return "echo: Question " + ("one" if call % 2 == 0 else "two")

    fake_openai.add_rule("Question one", alternate)
    run = eval_run("prompts/vote.yaml", "--repeat", "4")
    accuracy = run["metrics"]["accuracy"]
    # Rows r02..r06 pass every sample, r01 half of them, the rest none: (5 + 0.5) / 10.
    assert accuracy["value"] == pytest.approx(0.55)
    assert accuracy["n"] == 10
