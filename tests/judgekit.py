"""A project judged by a fake judge, shared by the judge, rescore and judged-command tests.

The fake server plays the judge: it reads the answer out of the judge request and gives
its length as the score, except for the word `three`, which it answers unreadably.

Registered in tests/conftest.py's pytest_plugins: its fixtures `project` (the judged echo
project, the current directory) and `judged_api` (the fake server with the judge's rule)
serve every module that defines no `project` of its own.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fakeserver import Body, FakeOpenAI, last_user_message
from tests.helpers import ECHO_PROMPT, write_echo_project

JUDGE = """\
name: length_judge
model: gpt-4o
params:
  temperature: 0.7
  max_tokens: 8
messages:
  - role: user
    content: "JUDGE q={{ q }} answer={{ answer }} expected={{ expected }} completion={{ completion }}"
output:
  pattern: 'score (?P<answer>\\S+)'
  type: number
"""

JUDGED_PROMPT = ECHO_PROMPT.replace(
    "metrics: [exact_match, format_validity]",
    "metrics:\n  - exact_match\n  - name: long\n    llm_judge:\n      prompt: ../judges/length.yaml\n"
    # A gate a length judge and a label judge (0 or 1, as some tests make it) can both meet.
    "thresholds:\n  long: {min: 0.5}")


def judge_reply(body: Body, _call: int) -> str:
    """The fake judge: the answer's length, or an unreadable answer for `three`."""
    text = last_user_message(body)
    match = re.search(r"answer=(\S+)", text)
    assert match is not None
    answer = match.group(1)
    if answer == "three":
        return "I would rather not say."
    return f"score {len(answer)}"


def judge_requests(api: FakeOpenAI) -> list[Body]:
    return [r.body for r in api.chat_requests if "JUDGE" in last_user_message(r.body)]


def eval_requests(api: FakeOpenAI) -> list[Body]:
    return [r.body for r in api.chat_requests if "JUDGE" not in last_user_message(r.body)]


def write_judged_project(root: Path, judge: str = JUDGE, prompt: str = JUDGED_PROMPT) -> Path:
    write_echo_project(root, prompt)
    (root / "judges").mkdir(exist_ok=True)
    (root / "judges" / "length.yaml").write_text(judge, encoding="utf-8")
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path/proj with the judged echo prompt and the length judge, and the current directory."""
    root = write_judged_project(tmp_path / "proj")
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def judged_api(api: FakeOpenAI) -> FakeOpenAI:
    """The fake server as the endpoint, answering judge requests with `judge_reply`."""
    api.add_rule("JUDGE", judge_reply)
    return api
