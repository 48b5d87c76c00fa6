"""Every read of git: commit, dirty flag, branch; refs; files as they were at a commit;
commit facts for history; merge bases for `check`.

No other module talks to git. Everything goes through git's own plumbing commands (rev-parse,
ls-tree, cat-file, status): git parses every ref form itself, and a command costs a few
milliseconds where loading a git library costs a tenth of a second on every promptctl command.
"""

from __future__ import annotations

import os
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
_SYMLINK_MODE = "120000"
_SUBMODULE_MODE = "160000"


@dataclass(frozen=True)
class GitState:
    """Where the work tree stood when a run started (all None outside git)."""

    root: Path | None = None
    commit: str | None = None
    dirty: bool | None = None
    branch: str | None = None


def _run(cwd: Path, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    # No pager, no prompts, no replacement objects rewriting history behind our back; the
    # environment's GIT_DIR must not redirect a command run inside a project.
    env = {k: v for k, v in os.environ.items()
           if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_NO_REPLACE_OBJECTS="1", GIT_OPTIONAL_LOCKS="0")
    try:
        return subprocess.run(["git", *args], cwd=cwd, input=data, capture_output=True,
                              timeout=60, check=False, env=env)
    except FileNotFoundError:
        raise InputError("git is not installed", fix="install git (promptctl keys runs by commit)") \
            from None


@dataclass(frozen=True)
class _Found:
    """What `git rev-parse` says of a directory."""

    work_tree: Path | None
    git_dir: Path
    bare: bool


def _discover(start: Path) -> _Found | None:
    """The repository containing `start` (a file or directory), or None outside git."""
    here = start if start.is_dir() else start.parent
    if not here.exists():
        return None
    done = _run(here, "rev-parse", "--is-bare-repository", "--absolute-git-dir",
                "--show-toplevel")
    lines = done.stdout.decode("utf-8", "surrogateescape").splitlines()
    if done.returncode != 0 and len(lines) >= 2 and lines[0] == "true":
        return _Found(None, Path(lines[1]), True)  # bare: --show-toplevel fails
    if done.returncode != 0 or len(lines) < 2:
        return None
    bare = lines[0] == "true"
    top = Path(lines[2]).resolve() if len(lines) > 2 and not bare else None
    return _Found(top, Path(lines[1]), bare or top is None)


def work_tree(start: Path) -> Path | None:
    """The root of the git work tree containing `start` (a file or directory), or None.

    A bare repository has no work tree: None, so promptctl treats it as "outside git"
    only after saying so (see `open_repo`).
    """
    found = _discover(start)
    return None if found is None or found.bare else found.work_tree


def is_bare(start: Path) -> bool:
    """Whether `start` lies in a bare repository (a git directory with no checkout)."""
    found = _discover(start)
    return bool(found is not None and found.bare)


class Repo:
    """A git work tree: refs, files at a commit, facts about commits."""

    def __init__(self, root: Path, git_dir: Path) -> None:
        self.root = root
        self.git_dir = git_dir

    @property
    def shallow(self) -> bool:
        return (self.git_dir / "shallow").exists()

    def _git(self, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return _run(self.root, *args, data=data)

    def _out(self, *args: str) -> str | None:
        done = self._git(*args)
        return done.stdout.decode("utf-8", "surrogateescape").strip() if done.returncode == 0 else None

    def head(self) -> str | None:
        """HEAD's commit, or None in a repository with no commit yet."""
        return self._out("rev-parse", "--verify", "--quiet", "HEAD^{commit}")

    def resolve(self, ref: str, *, what: str = "git ref", context: str = "",
                fix: str | None = None) -> str:
        """The commit sha `ref` names; an error that says why when it names none."""
        check_ref_syntax(ref, what)
        found = self._out("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
        if found:
            return found
        if self.shallow:
            raise InputError(f"{what} {ref!r}{context} is not in this clone", fix=SHALLOW_FIX)
        raise InputError(f"unknown {what} {ref!r}{context}",
                         fix=fix or "name a branch, tag or commit (see `git log --oneline`)")

    def has_commit(self, sha: str) -> bool:
        return self._git("cat-file", "-e", f"{sha}^{{commit}}").returncode == 0

    def _entry(self, sha: str, rel: str) -> tuple[str, str, str, int] | None:
        """(mode, type, object id, size) of `rel` in commit `sha`, or None."""
        rel = rel.strip("/")
        if not rel:
            return None
        done = self._git("ls-tree", "-l", "--full-tree", "-z", sha, "--", rel)
        for entry in done.stdout.split(b"\0"):
            head, _, name = entry.partition(b"\t")
            if name.decode("utf-8", "surrogateescape") != rel:
                continue
            mode, kind, oid, size = head.decode("ascii").split()
            return mode, kind, oid, int(size) if size.isdigit() else 0
        return None

    def read(self, sha: str, rel: str, max_bytes: int = MAX_BLOB_BYTES) -> bytes | None:
        """The bytes of file `rel` (a path from the root) in commit `sha`, or None when the
        commit has no such file. A symlink, a submodule, a directory or a file too large is
        an error: git stores a symlink as the text of its target, which is not the file's
        content."""
        entry = self._entry(sha, rel)
        if entry is None:
            return None
        mode, kind, oid, size = entry
        if kind == "commit" or mode == _SUBMODULE_MODE:
            raise InputError(f"{rel} is a git submodule at {sha[:12]}, not a file",
                             fix="run promptctl inside the submodule's own work tree")
        if kind == "tree":
            raise InputError(f"{rel} is a directory at {sha[:12]}, not a file", file=rel,
                             fix="name a file")
        if mode == _SYMLINK_MODE:
            raise InputError(f"{rel} is a symbolic link at {sha[:12]}", file=rel,
                             fix="commit the file itself: files a prompt references must be "
                             "regular files inside the repository")
        if size > max_bytes:
            raise InputError(f"{rel} is larger than {max_bytes // 2**20} MiB at {sha[:12]} "
                             f"({size} bytes)", file=rel,
                             fix="split the eval set into smaller files")
        done = self._git("cat-file", "blob", oid)
        if done.returncode != 0:
            return None
        return done.stdout

    def list_files(self, sha: str, directory: str, suffixes: Sequence[str]) -> list[str]:
        """Paths (from the root) of the files directly in `directory` at commit `sha`."""
        done = self._git("ls-tree", "--full-tree", "-z", sha, "--", directory.strip("/") + "/")
        out = []
        for entry in done.stdout.split(b"\0"):
            head, _, name = entry.partition(b"\t")
            if not name:
                continue
            mode, kind, _oid = head.decode("ascii").split()
            path = name.decode("utf-8", "surrogateescape")
            if kind == "blob" and path.lower().endswith(tuple(suffixes)):
                out.append(path)
        return sorted(out)

    def merge_base(self, a: str, b: str) -> str | None:
        return self._out("merge-base", a, b) or None

    def state(self, files: Sequence[Path] = ()) -> GitState:
        """Commit, dirty flag and branch of the work tree.

        Dirty means tracked changes anywhere, or any of `files` (the prompt and its eval
        set) not yet tracked: either way HEAD alone does not reproduce the run.
        """
        commit = self.head()
        branch = self._out("symbolic-ref", "--quiet", "--short", "HEAD") or None
        status = self._git("status", "--porcelain", "--untracked-files=no", "-z")
        dirty = status.returncode != 0 or bool(status.stdout.strip(b"\0"))
        if not dirty and files:
            rels = []
            for f in files:
                try:
                    rels.append(str(f.resolve().relative_to(self.root)))
                except ValueError:
                    continue
            if rels:
                untracked = self._git("ls-files", "--others", "--exclude-standard", "-z", "--", *rels)
                dirty = bool(untracked.stdout.strip(b"\0"))
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
