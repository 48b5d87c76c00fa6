"""A throw-away git repository with one prompt, for the `promptctl check` tests.

The fake server answers `Answer: N` to "Item N", except that a system message
containing `BREAK k` makes it answer wrongly for items 1..k: a test changes the
prompt and thereby chooses how much worse the new version is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import FakeOpenAI, last_user_message
from tests.helpers import GitRepo, git, git_identity, git_init, use_fake_openai

ROWS = 20

PROMPT = """\
name: score
description: DESCRIPTION
model: gpt-4o-mini
messages:
  - role: system
    content: "Reply with 'Answer: N'. STYLE"
  - role: user
    content: "Item {{ item }}"
output:
  pattern: 'Answer: (?P<answer>-?\\d+)'
  type: integer
metrics: [exact_match, format_validity]
evalset: ../evalsets/score.jsonl
thresholds:
  format_validity: {min: 0.9}
  max_regression: {exact_match: 0.02}
"""


def prompt_text(style: str = "Be brief.", description: str = "Echo the item number.") -> str:
    return PROMPT.replace("STYLE", style).replace("DESCRIPTION", description)


def evalset_text(rows: int = ROWS) -> str:
    return "".join(json.dumps({"id": f"r{i:02d}", "input": {"item": i}, "expected": i}) + "\n"
                   for i in range(1, rows + 1))


def reply(body: dict[str, Any]) -> str:
    system = str(body["messages"][0]["content"])
    item = int(last_user_message(body).split()[-1])
    broken = re.search(r"BREAK (\d+)", system)
    if broken and item <= int(broken.group(1)):
        return f"Answer: {item + 100}"
    return f"Answer: {item}"


Repo = GitRepo  # the repository and a few ways to change it


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI) -> Repo:
    """A repository on branch main with prompts/score.yaml and its eval set committed, and
    a feature branch checked out; the fake server answers for it."""
    git_identity(monkeypatch)
    root = git_init(tmp_path / "repo")
    r = Repo(root)
    r.write("prompts/score.yaml", prompt_text())
    r.write("evalsets/score.jsonl", evalset_text())
    r.commit("base")
    git(root, "checkout", "-q", "-b", "feature")
    fake_openai.responder = reply
    use_fake_openai(monkeypatch, fake_openai, "sk-test-check")
    monkeypatch.chdir(root)
    return r
