"""A prompt and its eval set read from git at a ref, without touching the work tree or index."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from promptctl.errors import InputError
from promptctl.target import target_at_ref as prompt_at_ref
from tests.helpers import commit_all, git, git_identity, git_init

PROMPT = """\
name: greet
model: gpt-4o-mini
messages:
  - role: user
    content: "STYLE {{ who }}"
metrics: [format_validity]
evalset: ../evalsets/greet.jsonl
"""


def rows(*names: str) -> str:
    return "".join(json.dumps({"id": n, "input": {"who": n}}) + "\n" for n in names)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    git_identity(monkeypatch, email="t@example.invalid")
    root = tmp_path / "repo"
    (root / "prompts").mkdir(parents=True)
    (root / "evalsets").mkdir()
    git_init(root)
    (root / "prompts" / "greet.yaml").write_text(PROMPT.replace("STYLE", "Hello"), encoding="utf-8")
    (root / "evalsets" / "greet.jsonl").write_text(rows("ann", "bob"), encoding="utf-8")
    commit_all(root, "first")
    (root / "prompts" / "greet.yaml").write_text(PROMPT.replace("STYLE", "Hi"), encoding="utf-8")
    (root / "evalsets" / "greet.jsonl").write_text(rows("ann", "bob", "cyd"), encoding="utf-8")
    commit_all(root, "second")
    return root


def snapshot(root: Path) -> tuple[str, str, bytes, bytes, bytes]:
    return (git(root, "status", "--porcelain"), git(root, "ls-files", "--stage"),
            (root / ".git" / "index").read_bytes(), (root / "prompts" / "greet.yaml").read_bytes(),
            (root / "evalsets" / "greet.jsonl").read_bytes())


def test_reads_the_prompt_and_its_eval_set_as_committed(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD~1").strip()
    at = prompt_at_ref(repo / "prompts" / "greet.yaml", "HEAD~1")
    committed = git(repo, "show", f"{first}:prompts/greet.yaml").encode()
    assert at.target.version == hashlib.sha256(committed).hexdigest()
    assert at.target.source == committed.decode()
    assert at.target.render({"who": "x"}, row_id="1")[0]["content"] == "Hello x"
    assert at.evalset is not None
    assert [r.id for r in at.evalset.rows] == ["ann", "bob"]
    assert at.git.commit == first and at.git.dirty is False and at.git.branch is None
    assert at.git.root == repo.resolve()
    head = prompt_at_ref(repo / "prompts" / "greet.yaml", "main")
    assert head.evalset is not None and len(head.evalset.rows) == 3
    assert head.git.commit == git(repo, "rev-parse", "HEAD").strip()


def test_a_dirty_work_tree_and_index_are_left_exactly_as_they_were(repo: Path) -> None:
    (repo / "prompts" / "greet.yaml").write_text(PROMPT.replace("STYLE", "Yo"), encoding="utf-8")
    (repo / "evalsets" / "greet.jsonl").write_text(rows("zed"), encoding="utf-8")
    git(repo, "add", "evalsets/greet.jsonl")  # staged
    (repo / "notes.txt").write_text("untracked\n", encoding="utf-8")
    before = snapshot(repo)
    at = prompt_at_ref(repo / "prompts" / "greet.yaml", "HEAD~1")
    assert at.evalset is not None and [r.id for r in at.evalset.rows] == ["ann", "bob"]
    assert at.target.render({"who": "x"}, row_id="1")[0]["content"] == "Hello x"
    assert snapshot(repo) == before


def test_without_the_eval_set(repo: Path) -> None:
    at = prompt_at_ref(repo / "prompts" / "greet.yaml", "HEAD~1", with_evalset=False)
    assert at.evalset is None and at.target.evalset is not None


def test_unknown_ref(repo: Path) -> None:
    with pytest.raises(InputError, match="unknown git ref 'nope'"):
        prompt_at_ref(repo / "prompts" / "greet.yaml", "nope")


def test_a_file_that_did_not_exist_at_the_ref(repo: Path) -> None:
    (repo / "prompts" / "new.yaml").write_text(PROMPT, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "third")
    with pytest.raises(InputError, match="did not exist at HEAD~1"):
        prompt_at_ref(repo / "prompts" / "new.yaml", "HEAD~1")


def test_an_eval_set_missing_at_the_ref(repo: Path) -> None:
    git(repo, "mv", "evalsets/greet.jsonl", "evalsets/other.jsonl")
    (repo / "prompts" / "greet.yaml").write_text(
        PROMPT.replace("greet.jsonl", "other.jsonl"), encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "rename")
    # The prompt at HEAD names other.jsonl; at HEAD~1 it names greet.jsonl, which existed then.
    old = prompt_at_ref(repo / "prompts" / "greet.yaml", "HEAD~1")
    assert old.evalset is not None and len(old.evalset.rows) == 3
    # A prompt naming an eval set that its commit lacks is an error naming the file.
    (repo / "prompts" / "greet.yaml").write_text(
        PROMPT.replace("greet.jsonl", "missing.jsonl"), encoding="utf-8")
    git(repo, "commit", "-q", "-am", "broken")
    with pytest.raises(InputError, match="did not exist") as info:
        prompt_at_ref(repo / "prompts" / "greet.yaml", "HEAD")
    assert "missing.jsonl" in str(info.value)


def test_outside_git(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(PROMPT, encoding="utf-8")
    with pytest.raises(InputError, match="not inside a git repository"):
        prompt_at_ref(tmp_path / "p.yaml", "HEAD")
