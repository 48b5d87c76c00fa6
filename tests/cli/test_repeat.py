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


@pytest.mark.parametrize("k", [5, 20])
def test_identical_samples_give_the_interval_and_n_of_one(project: Path, fake_openai: FakeOpenAI,
                                                          k: int) -> None:
    once = eval_run("prompts/vote.yaml")
    assert once["metrics"]["accuracy"]["value"] == pytest.approx(0.6)
    assert once["metrics"]["accuracy"]["n"] == 10
    low, high = once["metrics"]["accuracy"]["ci95"]
    assert high - low > 0.3  # ten rows say little: about [0.3, 0.9]

    repeated = eval_run("prompts/vote.yaml", "--repeat", str(k))
    assert fake_openai.count == 10 * k  # every sample was asked: the answers are all the same
    # The same ten answers k times over are still ten rows: same values, n and intervals
    # for every metric (the share, macro F1 and format validity).
    assert _metrics(repeated) == _metrics(once)
    assert (repeated["n"], repeated["samples"]) == (10, 10 * k)
    assert (once["n"], once["samples"]) == (10, 10)

    # What show --json gives (and the HTML report reads) is the stored summary.
    stored = show(repeated["id"])["run"]
    assert _metrics(stored) == _metrics(once) and stored["n"] == 10
    human = invoke("show", repeated["id"]).stdout
    assert f"rows 10 ({10 * k} samples)" in human


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


def test_accuracy_is_labelled_accuracy_in_rows_votes_flips_and_the_report(
        project: Path, fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    def alternate(body: dict[str, Any], call: int) -> str:
        return "echo: Question " + ("one" if call % 3 else "two")

    fake_openai.add_rule("Question one", alternate)
    run = eval_run("prompts/vote.yaml", "--repeat", "3")
    # The vote, pass@k and pass^k are scored with the prompt's own pass/fail metric, named.
    consistency = run["consistency"]
    assert consistency["metric"] == "accuracy"
    assert consistency["majority_vote"]["value"] == pytest.approx(0.6)
    human = invoke("show", run["id"]).stdout
    assert "majority-vote accuracy 0.600" in human and "(all three by accuracy)" in human
    # Each row's score is kept under the metric's own name.
    rows = show(run["id"])["rows"]
    assert {key for r in rows for key in r["scores"]} == {
        "accuracy", "format_validity", "label_answer", "label_expected"}
    assert "exact_match" not in human

    # A row that flips is named by the metric it flipped on.
    fake_openai.rules.clear()
    fake_openai.add_rule("Question three", lambda body, call: "echo: Question four")
    worse = eval_run("prompts/vote.yaml", "--no-cache")
    diff = json.loads(invoke("diff", run["id"], worse["id"], "--json").stdout)
    (flip,) = diff["flipped"]["pass_to_fail"]
    assert (flip["row_id"], flip["metric"]) == ("r03", "accuracy")
    assert diff["metrics"]["accuracy"]["n"] == 10

    # The HTML report reads these documents: no exact_match label anywhere in it.
    pytest.importorskip("vl_convert")
    page = tmp_path / "report.html"
    invoke("report", run["id"], "--diff", run["id"], worse["id"], "-o", str(page))
    assert "exact_match" not in page.read_text(encoding="utf-8")
