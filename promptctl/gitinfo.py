"""Every read of git: commit, dirty flag, branch; refs; files as they were at a commit;
commit facts for history; merge bases for `check`.

No other module talks to git. Git is read through GitPython: commits, trees and blobs through
its object model, whose object database keeps one `git cat-file` process per repository, so
reading many files at one commit costs one process, not one per file. Refs are resolved by
`git rev-parse` itself (GitPython's own parser walks `~N` in Python and does not know every
ref form), and the repository is found by git's own discovery (which refuses a repository
owned by another user, as git does). GitPython is imported on the first read of git, never
by `promptctl --help`.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from promptctl.errors import InputError
from promptctl.files import MAX_EVALSET_BYTES

# A file read from git at a ref is held in memory whole: no file promptctl reads is larger.
MAX_BLOB_BYTES = MAX_EVALSET_BYTES
MAX_REF_LENGTH = 256
SHALLOW_FIX = "this is a shallow clone: fetch more history (in GitHub Actions, actions/checkout " \
              "with fetch-depth: 0; locally, git fetch --unshallow)"
_SYMLINK_MODE = 0o120000
_SUBMODULE_MODE = 0o160000
# No prompts, no replacement objects rewriting history behind our back, no index writes.
_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_NO_REPLACE_OBJECTS": "1", "GIT_OPTIONAL_LOCKS": "0"}
# Set by the caller's environment (a git hook, say), these would redirect a command run inside a
# project to another repository or index: they are pinned to the repository found instead.
_REDIRECTS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")
_OBJECT_ID = re.compile(r"[0-9a-f]{40}")
_NOT_INSTALLED = "git is not installed"
_INSTALL_FIX = "install git (promptctl keys runs by commit)"


@dataclass(frozen=True)
class GitState:
    """Where the work tree stood when a run started (all None outside git)."""

    root: Path | None = None
    commit: str | None = None
    dirty: bool | None = None
    branch: str | None = None


@functools.cache
def _gitpython() -> ModuleType:
    """The `git` package (GitPython), imported on first use: every command that never reads
    git (--help above all) is spared its import time (see bench/git_import.py)."""
    try:
        import git
    except ModuleNotFoundError:  # GitPython itself missing: an installation bug, not the user's
        raise
    except ImportError:  # GitPython refuses to load without a git executable
        raise InputError(_NOT_INSTALLED, fix=_INSTALL_FIX) from None
    return git


@dataclass(frozen=True)
class _Found:
    """What git says of a directory."""

    work_tree: Path | None
    git_dir: Path
    bare: bool


def _may_be_in_repo(here: Path) -> bool:
    """Whether `here` or a folder above it holds `.git` or looks like a bare repository: where
    none does (and GIT_DIR is not set), git finds no repository either."""
    for folder in (here.resolve(), *here.resolve().parents):
        if os.path.lexists(folder / ".git"):
            return True
        if (folder / "HEAD").is_file() and (folder / "objects").is_dir() \
                and (folder / "refs").is_dir():
            return True
    return False


def _discover(start: Path) -> _Found | None:
    """The repository containing `start` (a file or directory), or None outside git."""
    here = start if start.is_dir() else start.parent
    if not here.exists() or not os.access(here, os.X_OK):
        return None  # (GitPython would run git in the current directory instead)
    if any(name in os.environ for name in ("GIT_DIR", "GIT_WORK_TREE")):
        return _discover_from(here)
    if not _may_be_in_repo(here):
        return None  # outside git: not worth GitPython's import and a git process
    git = _gitpython()
    command = git.Git(str(here))
    try:
        code, out, _err = command.rev_parse(
            "--is-bare-repository", "--absolute-git-dir", "--show-toplevel", env=_ENV,
            with_extended_output=True, with_exceptions=False, stdout_as_string=False)
    except git.GitCommandNotFound:
        raise InputError(_NOT_INSTALLED, fix=_INSTALL_FIX) from None
    lines = out.decode("utf-8", "surrogateescape").splitlines()
    if code != 0 and len(lines) >= 2 and lines[0] == "true":
        return _Found(None, Path(lines[1]), True)  # bare: --show-toplevel fails
    if code != 0 or len(lines) < 2:
        return None
    bare = lines[0] == "true"
    top = Path(lines[2]).resolve() if len(lines) > 2 and not bare else None
    return _Found(top, Path(lines[1]), bare or top is None)


def _discover_from(here: Path) -> _Found | None:
    """`_discover` when the environment names a repository (GIT_DIR, GIT_WORK_TREE): git
    would answer with that one wherever it runs, so GitPython walks up from `here` the way git
    discovers. Unlike git's own discovery it takes GIT_WORK_TREE as the work tree, and it
    does not check who owns the repository (safe.directory); the commands that follow name
    the repository found explicitly (see `Repo._repo`)."""
    git = _gitpython()
    try:
        found = git.Repo(os.path.abspath(here), search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    git_dir = Path(found.git_dir).absolute()
    if found.bare or found.working_tree_dir is None:
        return _Found(None, git_dir, True)
    return _Found(Path(found.working_tree_dir).resolve(), git_dir, False)


def work_tree(start: Path) -> Path | None:
    """The root of the git work tree containing `start` (a file or directory), or None.

    A bare repository has no work tree: None, so promptctl treats it as "outside git"
    only after saying so (see `open_repo`).
    """
    found = _discover(start)
    return None if found is None or found.bare else found.work_tree


class Repo:
    """A git work tree: refs, files at a commit, facts about commits."""

    def __init__(self, root: Path, git_dir: Path) -> None:
        self.root = root
        self.git_dir = git_dir

    @functools.cached_property
    def _repo(self) -> Any:
        """The GitPython repository, opened on first use."""
        git = _gitpython()
        repo = git.Repo(str(self.root))
        repo.git.update_environment(**_ENV)
        if any(name in os.environ for name in _REDIRECTS):
            repo.git.update_environment(GIT_DIR=str(self.git_dir), GIT_WORK_TREE=str(self.root),
                                        GIT_INDEX_FILE=str(self.git_dir / "index"))
        return repo

    def _out(self, command: str, *args: str) -> str | None:
        """The stripped output of `git COMMAND ARGS`, or None when git fails."""
        git = _gitpython()
        try:
            out: bytes = getattr(self._repo.git, command)(*args, stdout_as_string=False)
        except git.GitCommandNotFound:
            raise InputError(_NOT_INSTALLED, fix=_INSTALL_FIX) from None
        except git.GitCommandError:
            return None
        return out.decode("utf-8", "surrogateescape").strip()

    @property
    def shallow(self) -> bool:
        return self._out("rev_parse", "--is-shallow-repository") == "true"

    def head(self) -> str | None:
        """HEAD's commit, or None in a repository with no commit yet."""
        try:
            return str(self._repo.head.commit.hexsha)
        except ValueError:  # HEAD names a branch with no commit yet
            return None

    def _rev_parse(self, ref: str) -> str | None:
        """The commit `ref` names, by git's own parser (every ref form git knows)."""
        return self._out("rev_parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")

    def resolve(self, ref: str, *, what: str = "git ref", context: str = "",
                fix: str | None = None) -> str:
        """The commit sha `ref` names; an error that says why when it names none."""
        check_ref_syntax(ref, what)
        found = self._rev_parse(ref)
        if found:
            return found
        if self.shallow:
            raise InputError(f"{what} {ref!r}{context} is not in this clone", fix=SHALLOW_FIX)
        raise InputError(f"unknown {what} {ref!r}{context}",
                         fix=fix or "name a branch, tag or commit (see `git log --oneline`)")

    def _commit(self, sha: str) -> Any:
        """The GitPython commit `sha` names, or None when this clone has no such commit."""
        git = _gitpython()
        if not _OBJECT_ID.fullmatch(sha):
            if not sha or any(c in sha for c in "\0\n\r"):
                return None
            found = self._rev_parse(sha)
            if not found:
                return None
            sha = found
        binsha = bytes.fromhex(sha)
        if binsha == git.Object.NULL_BIN_SHA:  # GitPython's stand-in for "no commit"
            return None
        try:
            # Typed from the object's header: a missing object is an error here, where
            # `repo.commit(sha)` would hand back a commit that fails only when read.
            found = git.Object.new_from_sha(self._repo, binsha)
            while found.type == "tag":
                found = found.object
        except (ValueError, git.BadName, git.BadObject):
            return None
        return found if found.type == "commit" else None

    def has_commit(self, sha: str) -> bool:
        return self._commit(sha) is not None

    def _entry(self, sha: str, rel: str) -> Any:
        """The tree entry (blob, tree or submodule) at path `rel` in commit `sha`, or None."""
        rel = rel.strip("/")
        commit = self._commit(sha) if rel else None
        if commit is None:
            return None
        try:
            return commit.tree / rel
        except KeyError:
            return None

    def read(self, sha: str, rel: str, max_bytes: int = MAX_BLOB_BYTES) -> bytes | None:
        """The bytes of file `rel` (a path from the root) in commit `sha`, or None when the
        commit has no such file. A symlink, a submodule, a directory or a file too large is
        an error: git stores a symlink as the text of its target, which is not the file's
        content."""
        entry = self._entry(sha, rel)
        if entry is None:
            return None
        if entry.type == "submodule" or entry.mode == _SUBMODULE_MODE:
            raise InputError(f"{rel} is a git submodule at {sha[:12]}, not a file",
                             fix="run promptctl inside the submodule's own work tree")
        if entry.type == "tree":
            raise InputError(f"{rel} is a directory at {sha[:12]}, not a file", file=rel,
                             fix="name a file")
        if entry.type != "blob":
            return None
        if entry.mode == _SYMLINK_MODE:
            raise InputError(f"{rel} is a symbolic link at {sha[:12]}", file=rel,
                             fix="commit the file itself: files a prompt references must be "
                             "regular files inside the repository")
        # The size comes from the object's header: a blob over the limit is never read.
        size = int(entry.size)
        if size > max_bytes:
            raise InputError(f"{rel} is larger than {max_bytes // 2**20} MiB at {sha[:12]} "
                             f"({size} bytes)", file=rel,
                             fix="split the eval set into smaller files")
        data: bytes = entry.data_stream.read()
        return data

    def list_files(self, sha: str, directory: str, suffixes: Sequence[str]) -> list[str]:
        """Paths (from the root) of the files directly in `directory` at commit `sha`."""
        tree = self._entry(sha, directory)
        if tree is None or tree.type != "tree":
            return []
        return sorted(str(blob.path) for blob in tree.blobs
                      if str(blob.path).lower().endswith(tuple(suffixes)))

    def merge_base(self, a: str, b: str) -> str | None:
        git = _gitpython()
        try:
            found = self._repo.merge_base(a, b)
        except git.GitCommandNotFound:
            raise InputError(_NOT_INSTALLED, fix=_INSTALL_FIX) from None
        except (git.GitCommandError, ValueError, git.BadName, git.BadObject):
            return None
        return str(found[0].hexsha) if found else None

    def branch_exists(self, name: str) -> bool:
        return self._rev_parse(f"refs/heads/{name}") is not None

    def free_branch(self, name: str) -> str:
        """`name`, or `name-2`, `name-3`... : the first that is not a branch yet."""
        check_ref_syntax(name, "branch name")
        candidate, n = name, 1
        while self.branch_exists(candidate):
            n += 1
            candidate = f"{name}-{n}"
        return candidate

    def commit_to_new_branch(self, branch: str, base: str, files: dict[str, bytes],
                             message: str) -> str:
        """Create branch `branch` at a new commit on `base` whose tree is base's with `files`
        (paths from the root) replaced; returns its sha. The work tree, the index and HEAD
        are left as they are: the tree is built in a temporary index (GitPython's
        `IndexFile.from_tree`), written as objects, and only the branch ref is created."""
        git = _gitpython()
        from io import BytesIO

        repo = self._repo
        parent = self._commit(self.resolve(base))
        if self.branch_exists(branch):
            raise InputError(f"branch {branch} already exists", fix="choose another name")
        index = git.IndexFile.from_tree(repo, parent.tree)
        entries = []
        for rel, data in files.items():
            stream = repo.odb.store(git.db.IStream("blob", len(data), BytesIO(data)))
            entries.append(git.BaseIndexEntry((0o100644, stream.binsha, 0, rel)))
        index.add(entries, write=False)
        tree = index.write_tree()
        commit = git.Commit.create_from_tree(repo, tree, message, parent_commits=[parent],
                                             head=False)
        repo.create_head(branch, commit)
        return str(commit.hexsha)

    def state(self, files: Sequence[Path] = ()) -> GitState:
        """Commit, dirty flag and branch of the work tree.

        Dirty means tracked changes anywhere, or any of `files` (the prompt and its eval
        set) not yet tracked: either way HEAD alone does not reproduce the run.
        """
        git = _gitpython()
        repo = self._repo
        commit = self.head()
        try:
            branch = None if repo.head.is_detached else str(repo.active_branch.name)
        except (TypeError, ValueError):
            branch = None
        try:
            dirty = bool(repo.is_dirty(index=True, working_tree=True, untracked_files=False))
        except git.GitCommandNotFound:
            raise InputError(_NOT_INSTALLED, fix=_INSTALL_FIX) from None
        except git.GitCommandError:
            dirty = True
        if not dirty and files:
            rels = []
            for f in files:
                try:
                    rels.append(str(f.resolve().relative_to(self.root)))
                except ValueError:
                    continue
            if rels:
                untracked = self._out("ls_files", "--others", "--exclude-standard", "-z", "--", *rels)
                dirty = bool((untracked or "").strip("\0"))
        if commit is None:
            dirty = True
        return GitState(root=self.root, commit=commit, dirty=dirty, branch=branch)

    def commit_facts(self, shas: set[str]) -> dict[str, dict[str, Any]]:
        """Date, author, subject and parents of each commit. Commits this clone lacks are
        left out."""
        commits = {}
        for sha in sorted(shas):
            found = self._commit(sha)
            if found is not None:
                commits[str(found.hexsha)] = found
        if not commits:
            return {}
        subjects = self._subjects(list(commits))
        return {sha: _facts(commit, subjects.get(sha, "")) for sha, commit in commits.items()}

    def _subjects(self, shas: list[str]) -> dict[str, str]:
        """git's own subject (%s: the first paragraph of the message, its lines joined, in
        UTF-8) of each commit, read with one `git log`: GitPython's `summary` is only the
        first line."""
        out = self._out("log", "--no-walk=unsorted", "-z", "--format=%H %s", *shas, "--")
        subjects = {}
        for record in (out or "").split("\0"):
            sha, _, subject = record.partition(" ")
            if sha:
                subjects[sha.strip()] = subject
        return subjects


def _facts(commit: Any, subject: str) -> dict[str, Any]:
    """Author, subject, parents, and the commit's time and date (in its committer's zone)."""
    fact: dict[str, Any] = {"author": None, "subject": subject, "parents": []}
    try:
        fact["parents"] = [str(p.hexsha) for p in commit.parents]
        fact["author"] = str(commit.author.name) if commit.author is not None else None
        seconds, west = int(commit.committed_date), int(commit.committer_tz_offset)
    except (ValueError, TypeError, IndexError, UnicodeError):
        return fact  # a hand-made commit GitPython cannot parse: fewer facts rather than a crash
    try:
        zone = timezone(timedelta(seconds=-west))
        fact["date"] = datetime.fromtimestamp(seconds, UTC).astimezone(zone).isoformat()
        fact["time"] = seconds
    except (ValueError, OverflowError, OSError):
        pass  # a hand-made commit with a nonsense date: no date rather than a crash
    return fact


def check_ref_syntax(ref: str, what: str = "git ref") -> None:
    """Refuse what cannot name a commit of the shared history before asking git."""
    if not ref or not ref.strip():
        raise InputError(f"empty {what}", fix="name a branch, tag or commit")
    if len(ref) > MAX_REF_LENGTH:
        raise InputError(f"{what} is {len(ref)} characters long", fix="name a branch, tag or commit")
    if ref.startswith("-") or any(c in ref for c in "\0\n\r"):
        raise InputError(f"{what} {ref[:40]!r} is not a ref", fix="name a branch, tag or commit")
    if "@{" in ref:
        # Reflog entries are this clone's own local history: runs are keyed by commits
        # anyone can fetch.
        raise InputError(f"{what} {ref[:40]!r} names a reflog entry",
                         fix=f"name the commit itself (git rev-parse '{ref[:40]}' prints it)")


def open_repo(start: Path, *, purpose: str) -> Repo:
    """The work tree containing `start`; an error naming `purpose` outside one."""
    here = start if start.is_dir() else start.parent
    found = _discover(here)
    if found is not None and (found.bare or found.work_tree is None):
        raise InputError("this is a bare git repository (no work tree)", file=here,
                         fix=f"{purpose}: run promptctl in a clone with a checkout")
    if found is None or found.work_tree is None:
        raise InputError("not inside a git repository", file=here, fix=purpose)
    return Repo(found.work_tree, found.git_dir)


def find_repo(start: Path) -> Repo | None:
    """The work tree containing `start`, or None (outside git, or a bare repository)."""
    found = _discover(start)
    if found is None or found.bare or found.work_tree is None:
        return None
    return Repo(found.work_tree, found.git_dir)


def git_state(path: Path, files: Sequence[Path] = ()) -> GitState:
    """State of the repository containing `path` (all None outside git)."""
    repo = find_repo(path)
    return GitState() if repo is None else repo.state(files)


def read_at_ref(path: Path, ref: str, *, max_bytes: int = MAX_BLOB_BYTES) -> tuple[bytes, str]:
    """The bytes of `path` as committed at `ref`, and that ref's commit sha.

    Reads from the object store: neither the work tree nor the index is touched.
    """
    repo = open_repo(path, purpose="--ref needs the prompt to live in a git work tree")
    # Normalised, not resolved: a symbolic link in the work tree must not lead the read
    # to another path of the repository than the one named.
    try:
        rel = Path(os.path.normpath(os.path.abspath(path))).relative_to(repo.root).as_posix()
    except ValueError:
        raise InputError("file is outside the git work tree", file=path,
                         fix="use a path inside the repository") from None
    commit = repo.resolve(ref)
    data = repo.read(commit, rel, max_bytes)
    if data is None:
        raise InputError(f"file did not exist at {ref} ({commit[:12]})", file=path,
                         fix="choose a ref where the file exists")
    return data, commit
