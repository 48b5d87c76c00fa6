"""Files a project names are read only inside the project, as regular files of a sane size
(promptctl.files), and eval sets read from git at a ref likewise (gitinfo.read_at_ref)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from promptctl import files
from promptctl.errors import InputError
from promptctl.files import Reference, project_root, quote, read_file
from promptctl.gitinfo import read_at_ref
from promptctl.prompts import load_prompt
from promptctl.target import target_at_ref as prompt_at_ref
from tests.helpers import commit_all, git_identity, git_init

SECRET = "OPENAI_API_KEY=sk-live-5ecret-do-not-echo"

PROMPT = """\
name: p
messages:
  - role: user
    content: "{{ text }}"
evalset: EVALSET
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git work tree with prompts/ and evalsets/, a secret file outside it, and the
    current directory somewhere else altogether."""
    git_identity(monkeypatch)
    root = git_init(tmp_path / "repo")
    (root / "prompts").mkdir()
    (root / "evalsets").mkdir()
    (root / "evalsets" / "ok.jsonl").write_text('{"input": {"text": "hi"}}\n', encoding="utf-8")
    (tmp_path / ".env").write_text(SECRET + "\n", encoding="utf-8")
    (tmp_path / "outside.csv").write_text(SECRET + ",x\n1,2\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return root


def prompt_naming(root: Path, evalset: str, name: str = "p.yaml") -> Path:
    path = root / "prompts" / name
    path.write_text(PROMPT.replace("EVALSET", evalset), encoding="utf-8")
    return path


def evalset_error(prompt: Path) -> InputError:
    with pytest.raises(InputError) as info:
        load_prompt(prompt).load_evalset()
    exc = info.value
    assert exc.file == str(prompt), "the error names the prompt that named the file"
    assert exc.line == 5, "and the line of its evalset: key"
    assert exc.fix
    assert "sk-live" not in str(exc) and "5ecret" not in str(exc)
    return exc


def in_thread(fn: Any, timeout: float = 60) -> Any:
    """Run `fn` in a daemon thread: a read that hangs fails the test instead of the suite."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the read hung"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


# --- what a prompt names ----------------------------------------------------------------------

def test_an_eval_set_inside_the_project_loads(project: Path) -> None:
    evalset = load_prompt(prompt_naming(project, "../evalsets/ok.jsonl")).load_evalset()
    assert [r.input for r in evalset] == [{"text": "hi"}]


@pytest.mark.parametrize("evalset", ["../../.env.jsonl", "../../outside.csv",
                                     "../evalsets/../../outside.csv"])
def test_a_relative_path_out_of_the_project_is_refused(project: Path, evalset: str) -> None:
    (project.parent / ".env.jsonl").write_text(SECRET + "\n", encoding="utf-8")
    exc = evalset_error(prompt_naming(project, evalset))
    assert "outside the project" in exc.message
    assert "evalset:" in exc.message


def test_an_absolute_path_out_of_the_project_is_refused(project: Path) -> None:
    exc = evalset_error(prompt_naming(project, str(project.parent / "outside.csv")))
    assert "outside the project" in exc.message


def test_an_absolute_path_inside_the_project_is_fine(project: Path) -> None:
    evalset = load_prompt(prompt_naming(project, str(project / "evalsets" / "ok.jsonl"))).load_evalset()
    assert len(evalset) == 1


@pytest.mark.parametrize("target, name", [(".env", "linked.jsonl"), ("outside.csv", "linked.csv")])
def test_a_committed_symbolic_link_out_of_the_project_is_refused(project: Path, target: str,
                                                                 name: str) -> None:
    link = project / "evalsets" / name
    link.symlink_to(project.parent / target)
    exc = evalset_error(prompt_naming(project, f"../evalsets/{link.name}"))
    assert "symbolic link to a place outside the project" in exc.message


def test_a_symbolic_link_to_a_folder_out_of_the_project_is_refused(project: Path) -> None:
    (project / "evalsets" / "more").symlink_to(project.parent)
    exc = evalset_error(prompt_naming(project, "../evalsets/more/outside.csv"))
    assert "outside the project" in exc.message


def test_a_symbolic_link_within_the_project_is_followed(project: Path) -> None:
    (project / "evalsets" / "alias.jsonl").symlink_to(project / "evalsets" / "ok.jsonl")
    evalset = load_prompt(prompt_naming(project, "../evalsets/alias.jsonl")).load_evalset()
    assert len(evalset) == 1


def test_a_link_to_dev_zero_is_refused_before_any_read(project: Path) -> None:
    (project / "evalsets" / "zero.jsonl").symlink_to("/dev/zero")
    exc = in_thread(lambda: evalset_error(prompt_naming(project, "../evalsets/zero.jsonl")))
    assert "outside the project" in exc.message


def test_a_fifo_is_refused_without_hanging(project: Path) -> None:
    os.mkfifo(project / "evalsets" / "pipe.jsonl")
    exc = in_thread(lambda: evalset_error(prompt_naming(project, "../evalsets/pipe.jsonl")))
    assert "FIFO" in exc.message and "not a regular file" in exc.message


def test_a_missing_or_directory_eval_set_names_the_prompt_line(project: Path) -> None:
    assert "was not found" in evalset_error(prompt_naming(project, "../evalsets/nope.jsonl")).message
    (project / "evalsets" / "dir.jsonl").mkdir()
    assert "is a directory" in evalset_error(prompt_naming(project, "../evalsets/dir.jsonl")).message


def test_an_oversized_eval_set_is_refused_naming_the_limit(project: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("promptctl.evalsets.MAX_EVALSET_BYTES", 100)
    (project / "evalsets" / "big.jsonl").write_text('{"input": {"text": "x"}}\n' * 10, encoding="utf-8")
    exc = evalset_error(prompt_naming(project, "../evalsets/big.jsonl"))
    assert "larger than 100 bytes" in exc.message and "split" in exc.fix


def test_the_prompt_file_itself_may_not_link_out_of_the_project(project: Path) -> None:
    (project / "prompts" / "evil.yaml").symlink_to(project.parent / ".env")
    with pytest.raises(InputError) as info:
        load_prompt(project / "prompts" / "evil.yaml")
    assert "symbolic link to a place outside the project" in info.value.message
    assert SECRET not in str(info.value)


def test_a_prompt_named_from_outside_the_project_may_be_anywhere(tmp_path: Path) -> None:
    # Outside git and outside the current directory: no project, nothing to stay in.
    (tmp_path / "loose").mkdir()
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "s.jsonl").write_text('{"input": {"text": "hi"}}\n', encoding="utf-8")
    prompt = prompt_naming_at(tmp_path / "loose" / "p.yaml", "../sets/s.jsonl")
    assert len(load_prompt(prompt).load_evalset()) == 1


def prompt_naming_at(path: Path, evalset: str) -> Path:
    path.write_text(PROMPT.replace("EVALSET", evalset), encoding="utf-8")
    return path


def test_outside_git_the_current_directory_is_the_project(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    proj = tmp_path / "proj"
    (proj / "prompts").mkdir(parents=True)
    (tmp_path / "s.jsonl").write_text('{"input": {"text": "hi"}}\n', encoding="utf-8")
    monkeypatch.chdir(proj)
    prompt = prompt_naming_at(proj / "prompts" / "p.yaml", "../../s.jsonl")
    with pytest.raises(InputError) as info:
        load_prompt(prompt).load_evalset()
    assert "outside the project" in info.value.message
    assert str(proj) in info.value.message


# --- the reader itself --------------------------------------------------------------------------

def test_a_path_from_the_command_line_may_point_anywhere(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    (tmp_path / "x.jsonl").write_text("x")
    assert read_file(Path("../x.jsonl"), what="eval set", max_bytes=10) == b"x"


@pytest.mark.parametrize("make, kind", [
    (lambda p: os.mkfifo(p), "FIFO"),
    (lambda p: p.symlink_to("/dev/zero"), "device"),
    (lambda p: p.mkdir(), "directory"),
])
def test_only_regular_files_are_read_even_from_the_command_line(tmp_path: Path, make: Any,
                                                               kind: str) -> None:
    path = tmp_path / "f.jsonl"
    make(path)
    with pytest.raises(InputError) as info:
        in_thread(lambda: read_file(path, what="eval set", max_bytes=1 << 20))
    assert kind in info.value.message
    assert info.value.file == str(path)


def test_a_fifo_swapped_in_after_the_check_does_not_hang(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    regular, pipe = tmp_path / "r.jsonl", tmp_path / "p.jsonl"
    regular.write_text("{}\n")
    os.mkfifo(pipe)
    real_stat = os.stat

    def stat_before_the_swap(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        return real_stat(regular if os.fspath(path) == str(pipe) else path, *args, **kwargs)

    monkeypatch.setattr(files.os, "stat", stat_before_the_swap)
    with pytest.raises(InputError) as info:
        in_thread(lambda: read_file(pipe, what="eval set", max_bytes=1 << 20))
    assert "FIFO" in info.value.message


def test_a_file_over_the_limit_is_refused_with_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"x" * 3 * files.MiB)
    with pytest.raises(InputError) as info:
        read_file(path, what="eval set", max_bytes=2 * files.MiB)
    assert "larger than 2 MiB (3 MiB)" in info.value.message


def test_errors_about_a_named_file_point_at_the_naming_line(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        read_file(tmp_path / "nope.jsonl", what="eval set", max_bytes=10, root=tmp_path,
                  ref=Reference(tmp_path / "p.yaml", 7, "evalset"))
    assert (info.value.file, info.value.line) == (str(tmp_path / "p.yaml"), 7)
    assert "the eval set named by evalset:" in info.value.message


def test_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = git_init(tmp_path / "repo")
    (repo / "a" / "b").mkdir(parents=True)
    assert project_root(repo / "a" / "b" / "p.yaml") == repo
    monkeypatch.chdir(tmp_path)
    assert project_root(tmp_path / "x" / "p.yaml") == tmp_path
    assert project_root(Path("/p.yaml")) == Path("/")


def test_quote_cuts_names_short() -> None:
    assert quote("abc") == "'abc'"
    assert quote(SECRET) == repr(SECRET[:40]) + "…"
    assert len(quote("x" * 10_000)) < 50


# --- eval sets read from git at a ref ------------------------------------------------------------

def committed(project: Path, evalset: str) -> Path:
    prompt = prompt_naming(project, evalset)
    commit_all(project, "prompt")
    return prompt


def test_a_symbolic_link_committed_as_the_eval_set_is_refused_at_a_ref(project: Path) -> None:
    (project / "evalsets" / "linked.jsonl").symlink_to(project.parent / ".env")
    prompt = committed(project, "../evalsets/linked.jsonl")
    with pytest.raises(InputError) as info:
        prompt_at_ref(prompt, "HEAD")
    assert "symbolic link" in info.value.message
    assert SECRET not in str(info.value)


def test_an_eval_set_path_out_of_the_repository_is_refused_at_a_ref(project: Path) -> None:
    for evalset in ("../../outside.csv", "../evalsets/../../outside.csv"):
        prompt = committed(project, evalset)
        with pytest.raises(InputError) as info:
            prompt_at_ref(prompt, "HEAD")
        assert "points outside the repository" in info.value.message
        assert info.value.line == 5  # the prompt's evalset: line
        assert SECRET not in str(info.value)
    # Named inside the repository, `..` is resolved by name, not by following links.
    with pytest.raises(InputError) as info:
        read_at_ref(project / "evalsets" / ".." / ".." / "outside.csv", "HEAD")
    assert "outside the git work tree" in info.value.message or \
        "not inside a git repository" in info.value.message


def test_a_directory_is_not_read_as_a_file_at_a_ref(project: Path) -> None:
    prompt = committed(project, "../evalsets")
    with pytest.raises(InputError) as info:
        prompt_at_ref(prompt, "HEAD")
    assert "directory" in info.value.message


def test_a_blob_over_the_limit_is_refused_before_it_is_read(project: Path) -> None:
    prompt = committed(project, "../evalsets/ok.jsonl")
    with pytest.raises(InputError) as info:
        read_at_ref(project / "evalsets" / "ok.jsonl", "HEAD", max_bytes=10)
    assert "larger than" in info.value.message
    assert prompt_at_ref(prompt, "HEAD").evalset is not None  # within the default limit


def test_a_regular_eval_set_is_read_at_a_ref(project: Path) -> None:
    prompt = committed(project, "../evalsets/ok.jsonl")
    (project / "evalsets" / "ok.jsonl").write_text('{"input": {"text": "changed"}}\n', encoding="utf-8")
    at = prompt_at_ref(prompt, "HEAD")
    assert at.evalset is not None and [r.input for r in at.evalset] == [{"text": "hi"}]
    assert stat.S_ISREG(os.stat(project / "evalsets" / "ok.jsonl").st_mode)


def test_check_finds_changed_prompts_without_reading_devices_or_fifos(project: Path) -> None:
    # `check` compares a pull request's files with the base commit before loading them: a
    # committed link to /dev/zero or a FIFO must not hang or exhaust memory there either.
    from promptctl.gate import find_affected
    from promptctl.gitinfo import open_repo

    for name in ("zero", "pipe"):
        prompt_naming(project, f"../evalsets/{name}.jsonl", f"{name}.yaml")
        (project / "evalsets" / f"{name}.jsonl").write_text('{"input": {"text": "hi"}}\n')
    base = commit_all(project, "base")
    (project / "evalsets" / "zero.jsonl").unlink()
    (project / "evalsets" / "zero.jsonl").symlink_to("/dev/zero")
    commit_all(project, "pull request")
    (project / "evalsets" / "pipe.jsonl").unlink()
    os.mkfifo(project / "evalsets" / "pipe.jsonl")
    repo = open_repo(project, purpose="test")
    affected, _, _ = in_thread(lambda: find_affected(repo, base, []))
    assert sorted(c.rel for c in affected) == ["prompts/pipe.yaml", "prompts/zero.yaml"]
    for candidate in affected:
        with pytest.raises(InputError) as info:
            in_thread(lambda c=candidate: load_prompt(c.path).load_evalset())
        assert info.value.line == 5
