"""`eval --samples K`: K answers per row at a temperature, the voted one scored and compared
with the first sample on the same rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import FakeOpenAI
from tests.helpers import eval_run, invoke, run_cli, show, use_fake_openai

PROMPT = """\
name: pick
model: gpt-4o-mini
params:
  max_tokens: 16
messages:
  - role: user
    content: "Question {{ q }}"
output:
  pattern: '(?P<answer>[a-z]+)'
  type: label
  labels: [red, green, blue, none]
metrics: [accuracy, format_validity]
evalset: ../evalsets/pick.jsonl
"""

# Per row the answers of samples 0..4, and what the row expects. The vote's winner is worked
# out by hand in VOTED: the most common readable answer, a tie going to the answer sampled
# first; "??" cannot be read and does not vote.
ANSWERS = {
    "a": ["green", "red", "red", "blue", "red"],      # vote red (3); first sample wrong
    "b": ["red", "green", "green", "red", "blue"],    # tie red/green: red came first
    "c": ["blue", "blue", "??", "??", "??"],          # blue: the unreadable ones do not vote
    "d": ["??", "green", "blue", "blue", "green"],    # tie green/blue: green came first
    "e": ["red", "red", "red", "red", "red"],         # unanimous
    "f": ["blue", "green", "green", "red", "green"],  # green (3); first sample wrong
}
EXPECTED = {"a": "red", "b": "green", "c": "blue", "d": "green", "e": "red", "f": "green"}
VOTED = {"a": "red", "b": "red", "c": "blue", "d": "green", "e": "red", "f": "green"}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI) -> Path:
    root = tmp_path / "proj"
    (root / "prompts").mkdir(parents=True)
    (root / "evalsets").mkdir()
    (root / "prompts" / "pick.yaml").write_text(PROMPT, encoding="utf-8")
    rows = "".join(json.dumps({"id": k, "input": {"q": k}, "expected": v}) + "\n"
                   for k, v in EXPECTED.items())
    (root / "evalsets" / "pick.jsonl").write_text(rows, encoding="utf-8")
    monkeypatch.chdir(root)
    use_fake_openai(monkeypatch, fake_openai, "sk-test-vote-77a1")
    return root


def _row_of(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"]).removeprefix("Question ")


def per_choice(fake: FakeOpenAI) -> None:
    """Answer a request with n=K with sample i's answer in choice i."""
    def reshape(body: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
        answers = ANSWERS[_row_of(body)]
        for i, choice in enumerate(document["choices"]):
            choice["message"] = {**choice["message"], "content": answers[i % len(answers)]}
        return document
    fake.reshape = reshape


def per_request(fake: FakeOpenAI) -> None:
    """Answer each row's k-th request with sample k's answer (one request per sample)."""
    for row, answers in ANSWERS.items():
        fake.add_rule(f"Question {row}", lambda body, call, a=answers: a[call % len(a)])


def chat_ok(fake: FakeOpenAI) -> list[Any]:
    return [r for r in fake.chat_requests if r.status == 200]


def test_smoke(project: Path, fake_openai: FakeOpenAI) -> None:
    per_choice(fake_openai)
    result = run_cli("eval", "prompts/pick.yaml", "--samples", "5", "--json")
    print(result.stdout, result.stderr, result.exception)
    assert result.exit_code == 0
