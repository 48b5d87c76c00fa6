"""Git facts of a run: commit, dirty flag, branch, and reading files at a ref."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from promptctl.errors import InputError
from promptctl.gitinfo import GitState, git_state, read_at_ref
from tests import helpers
from tests.fakeserver import FakeOpenAI
from tests.helpers import commit_all, copy_examples, git, git_init

PROMPT = "prompts/controversy.yaml"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = git_init(tmp_path / "repo")
    git(root, "config", "user.name", "Test User")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "commit.gpgsign", "false")
    copy_examples(root)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def api(api: FakeOpenAI) -> FakeOpenAI:
    """The fake server, answering every text with the same score."""
    api.responder = lambda body: "Controversy score: 5\nReason: middling."
    return api


def eval_run(*args: str) -> dict[str, Any]:
    """The run of `promptctl eval ARGS --limit 2 --json`."""
    return helpers.eval_run(*args, "--limit", "2")


# -- git_state -----------------------------------------------------------------------


def test_git_state_of_a_clean_tree(repo: Path) -> None:
    head = commit_all(repo, "prompts")
    state = git_state(repo / PROMPT, [repo / PROMPT])
    assert state == GitState(root=repo.resolve(), commit=head, dirty=False, branch="main")


def test_git_state_dirty_when_a_tracked_file_changes(repo: Path) -> None:
    commit_all(repo, "prompts")
    (repo / "evalsets" / "tickets.csv").write_text("id,text\n1,x\n", encoding="utf-8")
    assert git_state(repo / PROMPT).dirty is True


def test_git_state_dirty_when_the_prompt_is_untracked(repo: Path) -> None:
    commit_all(repo, "prompts")
    extra = repo / "prompts" / "new.yaml"
    extra.write_text("name: new\n", encoding="utf-8")
    assert git_state(extra, [extra]).dirty is True
    # An untracked file that is not part of the run does not make it dirty.
    assert git_state(repo / PROMPT, [repo / PROMPT]).dirty is False


def test_git_state_of_a_repository_without_commits(repo: Path) -> None:
    state = git_state(repo / PROMPT)
    assert state.commit is None
    assert state.dirty is True
    assert state.root == repo.resolve()


def test_git_state_detached_head_has_no_branch(repo: Path) -> None:
    head = commit_all(repo, "prompts")
    git(repo, "checkout", "-q", "--detach")
    state = git_state(repo / PROMPT)
    assert state.commit == head
    assert state.branch is None


def test_git_state_outside_git_is_empty(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("x: 1\n", encoding="utf-8")
    assert git_state(tmp_path / "p.yaml") == GitState()


def test_read_at_ref_reads_committed_bytes_without_touching_the_tree(repo: Path) -> None:
    path = repo / PROMPT
    first = commit_all(repo, "one")
    old = path.read_bytes()
    path.write_bytes(old.replace(b"max_tokens: 16", b"max_tokens: 32"))
    second = commit_all(repo, "two")
    path.write_bytes(b"uncommitted")
    assert read_at_ref(path, first) == (old, first)
    data, sha = read_at_ref(path, "HEAD")
    assert sha == second and b"max_tokens: 32" in data
    assert read_at_ref(path, "HEAD~1") == (old, first)
    assert path.read_bytes() == b"uncommitted"
    with pytest.raises(InputError, match="unknown git ref"):
        read_at_ref(path, "no-such-branch")
    (repo / "prompts" / "later.yaml").write_text("x: 1\n", encoding="utf-8")
    commit_all(repo, "three")
    with pytest.raises(InputError, match="did not exist"):
        read_at_ref(repo / "prompts" / "later.yaml", first)


def test_read_at_ref_outside_git(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("x: 1\n", encoding="utf-8")
    with pytest.raises(InputError, match="not inside a git repository"):
        read_at_ref(tmp_path / "p.yaml", "HEAD")


# -- runs keyed by commit -------------------------------------------------------------


def test_two_commits_give_two_runs_with_their_commits_and_versions(repo: Path, api: FakeOpenAI) -> None:
    first_commit = commit_all(repo, "first prompt")
    first_version = sha256(repo / PROMPT)
    first = eval_run(PROMPT)

    text = (repo / PROMPT).read_text(encoding="utf-8")
    (repo / PROMPT).write_text(text.replace("from 0 to 10.", "from 0 (calm) to 10 (explosive)."),
                               encoding="utf-8")
    second_commit = commit_all(repo, "reword the prompt")
    second_version = sha256(repo / PROMPT)
    second = eval_run(PROMPT)

    assert first_commit != second_commit and first_version != second_version
    assert (first["git_commit"], first["prompt_version"], first["git_dirty"]) == (
        first_commit, first_version, False)
    assert (second["git_commit"], second["prompt_version"], second["git_dirty"]) == (
        second_commit, second_version, False)
    assert first["git_branch"] == second["git_branch"] == "main"
    assert first["evalset"] == "evalsets/controversy.jsonl"
    # The reworded instruction was sent: nothing came from the first run's cache.
    assert second["cached"] == 0
    firsts = {r.body["messages"][0]["content"].splitlines()[0] for r in api.chat_requests}
    assert firsts == {"Give this text a controversy score from 0 to 10.",
                       "Give this text a controversy score from 0 (calm) to 10 (explosive)."}

    result = helpers.run_cli("runs", "--json")
    listed = {r["id"]: r for r in json.loads(result.stdout)["runs"]}
    assert listed[first["id"]]["git_commit"] == first_commit
    assert listed[second["id"]]["git_commit"] == second_commit


def test_a_modified_tracked_file_marks_the_run_dirty(repo: Path, api: FakeOpenAI) -> None:
    head = commit_all(repo, "prompts")
    (repo / PROMPT).write_text((repo / PROMPT).read_text(encoding="utf-8") + "# note\n",
                               encoding="utf-8")
    run = eval_run(PROMPT)
    assert run["git_commit"] == head
    assert run["git_dirty"] is True
    assert run["prompt_version"] == sha256(repo / PROMPT)


def test_an_untracked_prompt_marks_the_run_dirty(repo: Path, api: FakeOpenAI) -> None:
    head = commit_all(repo, "prompts")
    shutil.copy(repo / PROMPT, repo / "prompts" / "draft.yaml")
    run = eval_run("prompts/draft.yaml")
    assert run["git_commit"] == head
    assert run["git_dirty"] is True
    clean = eval_run(PROMPT)
    assert clean["git_dirty"] is False


def test_runs_outside_git_have_no_commit(tmp_path: Path, api: FakeOpenAI,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "plain"
    copy_examples(root)
    monkeypatch.chdir(root)
    run = eval_run(PROMPT)
    assert run["git_commit"] is None
    assert run["git_dirty"] is None
    assert run["git_branch"] is None
    assert run["n"] == 2
    assert run["metrics"]["format_validity"]["value"] == 1.0
