"""A target's inputs are every file its result depends on: a pull request that changes only
a judge prompt or a scorer is checked, and the base side is evaluated with the base
commit's judge and scorer, not the work tree's."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests import helpers
from tests.checkrepo import Repo, prompt_text, reply
from tests.fakeserver import FakeOpenAI, last_user_message

pytestmark = pytest.mark.both_stores

SCORER = "def score(answer, expected, row):\n    return RESULT\n"
JUDGE = """\
name: judge
model: gpt-4o-mini
messages:
  - role: user
    content: "JUDGE MOOD {{ answer }}"
output: {pattern: 'score (?P<answer>\\d+)', type: number}
"""


def _responder(body: dict[str, Any]) -> str:
    text = last_user_message(body)
    if text.startswith("JUDGE"):
        return "score 1" if "LENIENT" in text else "score 0"
    return reply(body)


@pytest.fixture
def scored(repo: Repo, fake_openai: FakeOpenAI) -> Repo:
    """Base commit: the score prompt with a custom scorer and a judge, both generous."""
    fake_openai.responder = _responder
    helpers.git(repo.root, "checkout", "-q", "main")
    repo.write("scorers/match.py", SCORER.replace("RESULT", "float(answer == expected)"))
    repo.write("judges/judge.yaml", JUDGE.replace("MOOD", "LENIENT"))
    repo.write("prompts/score.yaml", prompt_text().replace(
        "metrics: [exact_match, format_validity]",
        "metrics:\n  - exact_match\n  - format_validity\n"
        "  - {name: match, custom: ../scorers/match.py:score}\n"
        "  - {name: judged, llm_judge: ../judges/judge.yaml}").replace(
        "max_regression: {exact_match: 0.02}",
        "max_regression: {exact_match: 0.02, match: 0.02, judged: 0.02}"))
    repo.commit("scored by a scorer and a judge")
    helpers.git(repo.root, "checkout", "-q", "feature")
    helpers.git(repo.root, "merge", "-q", "--ff-only", "main")
    return repo


def _check(code: int) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(helpers.invoke("check", "--json", code=code).stdout)
    return document


def _gate(entry: dict[str, Any], gate_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(g for g in entry["gates"] if g["id"] == gate_id)
    return found


def test_a_changed_scorer_alone_is_checked_against_the_base_scorer(scored: Repo) -> None:
    scored.write("scorers/match.py", SCORER.replace("RESULT", "0.0"))
    scored.commit("a stricter scorer")
    document = _check(1)
    [entry] = document["prompts"]
    assert entry["reasons"] == ["scorer scorers/match.py changed"]
    gate = _gate(entry, "match.max_regression")
    assert gate["status"] == "fail"
    # The baseline was scored by the base commit's scorer, the current run by this one.
    assert gate["baseline"] == 1.0 and gate["value"] == 0.0


def test_a_changed_judge_alone_is_checked_against_the_base_judge(scored: Repo) -> None:
    scored.write("judges/judge.yaml", JUDGE.replace("MOOD", "HARSH"))
    scored.commit("a harsher judge")
    document = _check(1)
    [entry] = document["prompts"]
    assert entry["reasons"] == ["judge prompt judges/judge.yaml changed"]
    gate = _gate(entry, "judged.max_regression")
    assert gate["baseline"] == 1.0 and gate["value"] == 0.0 and gate["status"] == "fail"


def test_unchanged_inputs_are_not_checked(scored: Repo) -> None:
    scored.write("README.md", "unrelated\n")
    scored.commit("docs")
    document = _check(0)
    assert document["prompts"] == [] and document["summary"]["unchanged"] == 1


def test_eval_at_a_ref_reads_its_scorer_and_judge_from_that_commit(scored: Repo) -> None:
    scored.write("scorers/match.py", SCORER.replace("RESULT", "0.0"))
    scored.write("judges/judge.yaml", JUDGE.replace("MOOD", "HARSH"))
    at_main = helpers.eval_run("prompts/score.yaml", "--ref", "main")
    assert at_main["metrics"]["match"]["value"] == 1.0
    assert at_main["metrics"]["judged"]["value"] == 1.0
    here = helpers.eval_run("prompts/score.yaml")
    assert here["metrics"]["match"]["value"] == 0.0
    assert here["metrics"]["judged"]["value"] == 0.0
    # The version covers the scorer and the judge: the two runs are two versions.
    assert at_main["prompt_version"] != here["prompt_version"]
