"""Git facts for a run: commit, dirty flag, branch; files as they were at a ref.

GitPython is imported only when a repository is actually used.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptctl.errors import InputError
from promptctl.files import MAX_EVALSET_BYTES


@dataclass(frozen=True)
class GitState:
    """Where the work tree stood when a run started (all None outside git)."""

    root: Path | None = None
    commit: str | None = None
    dirty: bool | None = None
    branch: str | None = None


def _repo(path: Path) -> Any:
    import git

    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None


def git_state(path: Path, files: Sequence[Path] = ()) -> GitState:
    """State of the repository containing `path`.

    Dirty means tracked changes anywhere, or any of `files` (the prompt and
    its eval set) not yet tracked: either way HEAD alone does not reproduce the run.
    """
    start = path if path.is_dir() else path.parent
    repo = _repo(start)
    if repo is None:
        return GitState()
    root = Path(repo.working_tree_dir).resolve()
    try:
        commit = repo.head.commit.hexsha
    except ValueError:
        commit = None  # a repository with no commit yet
    try:
        branch = None if repo.head.is_detached else repo.active_branch.name
    except TypeError:
        branch = None
    dirty = bool(repo.is_dirty(untracked_files=False))
    if not dirty and files:
        rels = []
        for f in files:
            try:
                rels.append(str(f.resolve().relative_to(root)))
            except ValueError:
                continue
        if rels:
            untracked = repo.git.ls_files("--others", "--exclude-standard", "--", *rels)
            dirty = bool(untracked.strip())
    if commit is None:
        dirty = True
    return GitState(root=root, commit=commit, dirty=dirty, branch=branch)


def read_at_ref(path: Path, ref: str, *, max_bytes: int = MAX_EVALSET_BYTES) -> tuple[bytes, str]:
    """The bytes of `path` as committed at `ref`, and that ref's commit sha.

    Reads from the object store: neither the work tree nor the index is touched.
    Only a regular file inside the repository is read: a path that leaves it
    (`..`), a symbolic link or a submodule committed there, or a file over
    `max_bytes` is an error.
    """
    import git

    repo = _repo(path.parent if not path.is_dir() else path)
    if repo is None:
        raise InputError("not inside a git repository", file=path,
                         fix="--ref needs the prompt to live in a git work tree")
    root = Path(repo.working_tree_dir).resolve()
    rel = _repo_relative(path, Path(repo.working_tree_dir), root)
    if rel is None:
        raise InputError("file is outside the git work tree", file=path,
                         fix="use a path inside the repository")
    try:
        commit = repo.commit(ref)
    except (git.BadName, ValueError, git.GitCommandError):
        raise InputError(f"unknown git ref {ref!r}", file=path,
                         fix="name a branch, tag or commit (see `git log --oneline`)") from None
    try:
        blob = commit.tree / rel
    except KeyError:
        raise InputError(f"file did not exist at {ref} ({commit.hexsha[:12]})", file=path,
                         fix="choose a ref where the file exists") from None
    at = f"at {ref} ({commit.hexsha[:12]})"
    if blob.type != "blob" or not stat.S_ISREG(blob.mode):
        kind = ("a symbolic link" if blob.type == "blob" and stat.S_ISLNK(blob.mode) else
                "a directory" if blob.type == "tree" else "a submodule")
        raise InputError(f"is {kind} {at}, not a regular file", file=path,
                         fix="commit the file itself: promptctl does not follow links in git")
    if blob.size > max_bytes:
        raise InputError(f"is larger than {max_bytes // 2**20} MiB {at}", file=path,
                         fix="split it into smaller files")
    data: bytes = blob.data_stream.read()
    return data, str(commit.hexsha)


def _repo_relative(path: Path, tree: Path, root: Path) -> str | None:
    """`path` relative to the work tree, `..` resolved by name, not through symbolic links."""
    named = Path(os.path.normpath(os.path.abspath(path)))
    for base in (Path(os.path.abspath(tree)), root):
        if named.is_relative_to(base):
            return named.relative_to(base).as_posix()
    # The work tree reached through a symbolic link (/tmp -> /private/tmp): resolve, which
    # still must land inside it.
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return None
