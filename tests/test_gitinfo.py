"""Git facts of a run: commit, dirty flag, branch, and reading files at a ref."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from promptctl.errors import InputError
from promptctl.gitinfo import (
    SHALLOW_FIX,
    GitState,
    find_repo,
    git_state,
    open_repo,
    read_at_ref,
    work_tree,
)
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


# -- the repository through GitPython -------------------------------------------------


def test_a_bare_repository_has_no_work_tree(repo: Path, tmp_path: Path) -> None:
    commit_all(repo, "prompts")
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    assert work_tree(bare) is None and find_repo(bare) is None
    assert git_state(bare) == GitState()
    with pytest.raises(InputError, match="bare git repository") as info:
        open_repo(bare, purpose="test")
    assert "clone with a checkout" in (info.value.fix or "")


def test_a_shallow_clone_is_named_when_a_ref_is_missing(repo: Path, tmp_path: Path) -> None:
    commit_all(repo, "one")
    (repo / "x.txt").write_text("x\n", encoding="utf-8")
    commit_all(repo, "two")
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))
    shallow = open_repo(clone, purpose="test")
    assert shallow.shallow and not open_repo(repo, purpose="test").shallow
    with pytest.raises(InputError, match="not in this clone") as info:
        shallow.resolve("HEAD~1")
    assert info.value.fix == SHALLOW_FIX


@pytest.mark.parametrize("ref", ["--output=/tmp/promptctl-pwned", "-h", "HEAD@{1}", "", "a\nb",
                                 "x" * 300])
def test_refs_that_are_options_or_reflog_entries_never_reach_git(repo: Path, ref: str) -> None:
    commit_all(repo, "prompts")
    with pytest.raises(InputError):
        open_repo(repo, purpose="test").resolve(ref)
    assert not Path("/tmp/promptctl-pwned").exists()


def test_stored_commit_ids_that_are_not_commits_are_not_found(repo: Path) -> None:
    head = commit_all(repo, "prompts")
    found = open_repo(repo, purpose="test")
    assert found.has_commit(head) and found.has_commit("HEAD")
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    for sha in ("0" * 40, tree, "--output=/tmp/promptctl-pwned", "../../etc/passwd", "a\nb", ""):
        assert not found.has_commit(sha), sha
        assert found.read(sha, PROMPT) is None
    assert found.commit_facts({"0" * 40, tree}) == {}


def test_files_at_a_commit_and_what_is_not_a_file(repo: Path) -> None:
    (repo / "prompts" / "link.yaml").symlink_to("controversy.yaml")
    head = commit_all(repo, "prompts")
    found = open_repo(repo, purpose="test")
    assert found.read(head, PROMPT) == (repo / PROMPT).read_bytes()
    assert found.read(head, "/" + PROMPT) == (repo / PROMPT).read_bytes()
    for missing in ("prompts/none.yaml", "", "/", PROMPT + "/x", "prompts//controversy.yaml"):
        assert found.read(head, missing) is None, missing
    with pytest.raises(InputError, match="symbolic link"):
        found.read(head, "prompts/link.yaml")
    with pytest.raises(InputError, match="directory"):
        found.read(head, "prompts")
    with pytest.raises(InputError, match="larger than"):
        found.read(head, PROMPT, max_bytes=10)
    listed = found.list_files(head, "prompts", (".yaml",))
    assert "prompts/controversy.yaml" in listed and "prompts/link.yaml" in listed
    assert listed == sorted(listed) and all(p.startswith("prompts/") for p in listed)
    assert found.list_files(head, "no-such-dir", (".yaml",)) == []
    assert found.list_files(head, PROMPT, (".yaml",)) == []


def test_a_submodule_is_not_read_as_a_file(repo: Path, tmp_path: Path) -> None:
    commit_all(repo, "prompts")
    top = git_init(tmp_path / "top")
    (top / "README").write_text("top\n", encoding="utf-8")
    git(top, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(repo), "sub")
    head = commit_all(top, "add the submodule")
    with pytest.raises(InputError, match="submodule"):
        open_repo(top, purpose="test").read(head, "sub")


def test_many_files_at_one_commit_are_read_through_one_git_process(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(30):
        (repo / "prompts" / f"p{i}.yaml").write_text(f"name: p{i}\n", encoding="utf-8")
    head = commit_all(repo, "prompts")
    found = open_repo(repo, purpose="test")
    import git as gitpython

    started: list[list[str]] = []
    real = gitpython.cmd.safer_popen

    def counting(command: list[str], *args: Any, **kwargs: Any) -> Any:
        started.append(list(command))
        return real(command, *args, **kwargs)

    monkeypatch.setattr(gitpython.cmd, "safer_popen", counting)
    for i in range(30):
        assert found.read(head, f"prompts/p{i}.yaml") == f"name: p{i}\n".encode()
    # The object database's cat-file processes, started once each and reused.
    assert len(started) <= 3, started


def test_commit_facts_are_what_git_log_says(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Ada Lovelace")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2026-03-03T10:00:00+05:30")
    first = commit_all(repo, "prompts")
    (repo / "x.txt").write_text("x\n", encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a subject\non two lines\n\nand a body")
    second = git(repo, "rev-parse", "HEAD").strip()
    facts = open_repo(repo, purpose="test").commit_facts({first, second, "f" * 40})
    assert set(facts) == {first, second}
    for sha in (first, second):
        author, date, subject, ct = git(repo, "log", "-1", "--format=%an%x00%cI%x00%s%x00%ct",
                                        sha).rstrip("\n").split("\0")
        assert facts[sha]["author"] == author == "Ada Lovelace"
        assert (facts[sha]["date"], facts[sha]["subject"], facts[sha]["time"]) == (date, subject, int(ct))
    assert facts[second]["subject"] == "a subject on two lines"
    assert facts[second]["date"] == "2026-03-03T10:00:00+05:30"
    assert facts[second]["parents"] == [first] and facts[first]["parents"] == []


def test_a_git_dir_in_the_environment_does_not_redirect_the_project(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    head = commit_all(repo, "prompts")
    other = git_init(tmp_path / "other")
    (other / "o.txt").write_text("o\n", encoding="utf-8")
    commit_all(other, "other")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    assert git_state(repo / PROMPT, [repo / PROMPT]) == GitState(
        root=repo.resolve(), commit=head, dirty=False, branch="main")
    assert read_at_ref(repo / PROMPT, "HEAD") == ((repo / PROMPT).read_bytes(), head)


def test_a_linked_worktree_is_its_own_project(repo: Path, tmp_path: Path) -> None:
    head = commit_all(repo, "prompts")
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "side", str(linked))
    assert work_tree(linked / "prompts") == linked.resolve()
    assert git_state(linked / PROMPT) == GitState(root=linked.resolve(), commit=head, dirty=False,
                                                  branch="side")
    assert not open_repo(linked, purpose="test").shallow


def test_outside_git_no_git_process_runs_and_gitpython_is_not_loaded(tmp_path: Path) -> None:
    """A project outside any repository (a temporary folder, a bench) pays nothing for git."""
    import subprocess
    import sys

    (tmp_path / "p.yaml").write_text("x: 1\n", encoding="utf-8")
    code = ("import sys; from pathlib import Path; from promptctl.gitinfo import git_state; "
            "s = git_state(Path('p.yaml'), [Path('p.yaml')]); "
            "print(s.commit, s.dirty, 'git' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True, env={**os.environ, "PATH": ""}).stdout.split()
    # With no git on PATH, any attempt to run git would fail: none is made.
    assert out == ["None", "None", "False"]
