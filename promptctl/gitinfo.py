"""Every read of git: commit, dirty flag, branch; refs; files as they were at a commit;
commit facts for history; merge bases for `check`.

No other module talks to git. GitPython is imported only when a repository is used;
refs are resolved by `git rev-parse` itself (GitPython's own parser walks `~N` in Python
and does not know every ref form).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from promptctl.errors import InputError
from promptctl.files import MAX_EVALSET_BYTES

# A file read from git at a ref is held in memory whole: no file promptctl reads is larger.
MAX_BLOB_BYTES = MAX_EVALSET_BYTES
MAX_REF_LENGTH = 256
SHALLOW_FIX = "this is a shallow clone: fetch more history (in GitHub Actions, actions/checkout " \
              "with fetch-depth: 0; locally, git fetch --unshallow)"


@dataclass(frozen=True)
class GitState:
    """Where the work tree stood when a run started (all None outside git)."""

    root: Path | None = None
    commit: str | None = None
    dirty: bool | None = None
    branch: str | None = None


def _open(start: Path) -> Any:
    """The GitPython repository containing `start`, or None outside git."""
    import git

    try:
        return git.Repo(start, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None


def work_tree(start: Path) -> Path | None:
    """The root of the git work tree containing `start` (a file or directory), or None.

    A bare repository has no work tree: None, so promptctl treats it as "outside git"
    only after saying so (see `open_repo`).
    """
    here = start if start.is_dir() else start.parent
    repo = _open(here)
    if repo is None or repo.bare or repo.working_tree_dir is None:
        return None
    return Path(repo.working_tree_dir).resolve()


def is_bare(start: Path) -> bool:
    """Whether `start` lies in a bare repository (a git directory with no checkout)."""
    repo = _open(start if start.is_dir() else start.parent)
    return bool(repo is not None and repo.bare)


class Repo:
    """A git work tree: refs, files at a commit, facts about commits."""

    def __init__(self, repo: Any) -> None:
        self._repo = repo
        self.root = Path(repo.working_tree_dir).resolve()

    @property
    def shallow(self) -> bool:
        return (Path(self._repo.git_dir) / "shallow").exists()

    def _git(self, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["git", *args], cwd=self.root, input=data, capture_output=True,
                              timeout=60, check=False)

    def head(self) -> str | None:
        """HEAD's commit, or None in a repository with no commit yet."""
        try:
            return str(self._repo.head.commit.hexsha)
        except ValueError:
            return None

    def resolve(self, ref: str, *, what: str = "git ref", context: str = "",
                fix: str | None = None) -> str:
        """The commit sha `ref` names; an error that says why when it names none."""
        check_ref_syntax(ref, what)
        done = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
        if done.returncode == 0:
            return done.stdout.decode("ascii").strip()
        if self.shallow:
            raise InputError(f"{what} {ref!r}{context} is not in this clone", fix=SHALLOW_FIX)
        raise InputError(f"unknown {what} {ref!r}{context}",
                         fix=fix or "name a branch, tag or commit (see `git log --oneline`)")

    def has_commit(self, sha: str) -> bool:
        return self._git("cat-file", "-e", f"{sha}^{{commit}}").returncode == 0

    def read(self, sha: str, rel: str, max_bytes: int = MAX_BLOB_BYTES) -> bytes | None:
        """The bytes of file `rel` (a path from the root) in commit `sha`, or None when the
        commit has no such file. A symlink, a submodule or a file too large is an error:
        git stores a symlink as the text of its target, which is not the file's content."""
        obj = self._entry(sha, rel)
        if obj is None:
            return None
        if obj.type == "commit":
            raise InputError(f"{rel} is a git submodule at {sha[:12]}, not a file",
                             fix="run promptctl inside the submodule's own work tree")
        if obj.type == "tree":
            raise InputError(f"{rel} is a directory at {sha[:12]}, not a file", file=rel,
                             fix="name a file")
        if obj.type != "blob":
            return None
        if obj.mode == 0o120000:
            raise InputError(f"{rel} is a symbolic link at {sha[:12]}", file=rel,
                             fix="commit the file itself: files a prompt references must be "
                             "regular files inside the repository")
        if obj.size > max_bytes:
            raise InputError(f"{rel} is larger than {max_bytes // 2**20} MiB at {sha[:12]} "
                             f"({obj.size} bytes)", file=rel,
                             fix="split the eval set into smaller files")
        data: bytes = obj.data_stream.read()
        return data

    def _entry(self, sha: str, rel: str) -> Any:
        try:
            return self._repo.commit(sha).tree / rel
        except KeyError:
            return None

    def list_files(self, sha: str, directory: str, suffixes: Sequence[str]) -> list[str]:
        """Paths (from the root) of the files directly in `directory` at commit `sha`."""
        tree = self._entry(sha, directory)
        if tree is None or tree.type != "tree":
            return []
        return sorted(str(b.path) for b in tree.blobs if b.path.lower().endswith(tuple(suffixes)))

    def merge_base(self, a: str, b: str) -> str | None:
        found = self._repo.merge_base(a, b)
        return str(found[0].hexsha) if found else None

    def state(self, files: Sequence[Path] = ()) -> GitState:
        """Commit, dirty flag and branch of the work tree.

        Dirty means tracked changes anywhere, or any of `files` (the prompt and its eval
        set) not yet tracked: either way HEAD alone does not reproduce the run.
        """
        repo = self._repo
        commit = self.head()
        try:
            branch = None if repo.head.is_detached else repo.active_branch.name
        except TypeError:
            branch = None
        dirty = bool(repo.is_dirty(untracked_files=False))
        if not dirty and files:
            rels = []
            for f in files:
                try:
                    rels.append(str(f.resolve().relative_to(self.root)))
                except ValueError:
                    continue
            if rels:
                untracked = repo.git.ls_files("--others", "--exclude-standard", "--", *rels)
                dirty = bool(untracked.strip())
        if commit is None:
            dirty = True
        return GitState(root=self.root, commit=commit, dirty=dirty, branch=branch)

    def commit_facts(self, shas: set[str]) -> dict[str, dict[str, Any]]:
        """Date, author, subject and parents of each commit, read with one
        `git cat-file --batch`. Commits this clone lacks are left out."""
        if not shas:
            return {}
        try:
            done = self._git("cat-file", "--batch",
                             data="".join(f"{s}\n" for s in sorted(shas)).encode("ascii"))
        except (OSError, subprocess.SubprocessError):
            return {}
        if done.returncode != 0:
            return {}
        out: dict[str, dict[str, Any]] = {}
        data, pos = done.stdout, 0
        while pos < len(data):
            end = data.index(b"\n", pos)
            header = data[pos:end].split()
            pos = end + 1
            if len(header) != 3:  # "<sha> missing"
                continue
            sha, kind, size = header[0].decode(), header[1], int(header[2])
            body = data[pos:pos + size]
            pos += size + 1
            if kind == b"commit":
                out[sha] = _parse_commit(body)
        return out


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
    repo = _open(here)
    if repo is not None and (repo.bare or repo.working_tree_dir is None):
        raise InputError("this is a bare git repository (no work tree)", file=here,
                         fix=f"{purpose}: run promptctl in a clone with a checkout")
    if repo is None:
        raise InputError("not inside a git repository", file=here, fix=purpose)
    return Repo(repo)


def find_repo(start: Path) -> Repo | None:
    """The work tree containing `start`, or None (outside git, or a bare repository)."""
    repo = _open(start if start.is_dir() else start.parent)
    if repo is None or repo.bare or repo.working_tree_dir is None:
        return None
    return Repo(repo)


def git_state(path: Path, files: Sequence[Path] = ()) -> GitState:
    """State of the repository containing `path` (all None outside git)."""
    repo = find_repo(path)
    return GitState() if repo is None else repo.state(files)


def read_at_ref(path: Path, ref: str, *, max_bytes: int = MAX_BLOB_BYTES) -> tuple[bytes, str]:
    """The bytes of `path` as committed at `ref`, and that ref's commit sha.

    Reads from the object store: neither the work tree nor the index is touched.
    """
    repo = open_repo(path, purpose="--ref needs the prompt to live in a git work tree")
    import os

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


def _parse_commit(body: bytes) -> dict[str, Any]:
    head, _, message = body.partition(b"\n\n")
    encoding = "utf-8"
    parents: list[str] = []
    author = committer = b""
    for line in head.split(b"\n"):
        field, _, value = line.partition(b" ")
        if field == b"parent":
            parents.append(value.decode("ascii"))
        elif field == b"author":
            author = value
        elif field == b"committer":
            committer = value
        elif field == b"encoding":
            encoding = value.decode("ascii", "replace")
    try:
        text = message.decode(encoding, "replace")
    except LookupError:
        text = message.decode("utf-8", "replace")
    # git's %s: the first paragraph, lines joined by spaces.
    subject = " ".join(text.strip().split("\n\n")[0].split())
    name = author.rsplit(b" <", 1)[0].decode("utf-8", "replace") if author else None
    when = committer.rsplit(b"> ", 1)[-1].split()
    fact: dict[str, Any] = {"author": name, "subject": subject, "parents": parents}
    if len(when) == 2:
        try:
            seconds, tz = int(when[0]), when[1].decode("ascii")
            sign = -1 if tz.startswith("-") else 1
            offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5])) * sign
            fact["time"] = seconds
            fact["date"] = datetime.fromtimestamp(seconds, UTC).astimezone(timezone(offset)).isoformat()
        except (ValueError, OverflowError, OSError):
            pass  # a hand-made commit with a nonsense date: no date rather than a crash
    return fact
