"""Reading the files a project names, safely: what a pull request commits may point anywhere.

A prompt names its eval set (and pipelines their prompts, judges, scorers) by a
path that a pull request controls: `../../.env`, an absolute path, or a committed
symbolic link to /dev/zero, a FIFO or a file elsewhere on the CI runner. Such a
file is read only if, with every symbolic link resolved, it lies inside the
project root, is a regular file and is not too large. A path the user types on
the command line may point anywhere, but is still read only as a regular file of
a sane size: a FIFO would hang, /dev/zero would never end.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from promptctl.errors import InputError, display_path

MiB = 1024 * 1024
# Eval sets are streamed line by line (JSONL, CSV), so they may be large.
MAX_EVALSET_BYTES = 512 * MiB
# A YAML eval set is parsed whole: about a second and 50 MiB of memory per MiB of text.
MAX_YAML_EVALSET_BYTES = 8 * MiB
# Prompt, pipeline and judge files: templates and few-shot examples, parsed whole.
MAX_PROMPT_BYTES = 1 * MiB
# promptctl.yaml.
MAX_CONFIG_BYTES = 1 * MiB


@dataclass(frozen=True)
class Reference:
    """Where a path was named: the file that names it, the line and the key (e.g. evalset)."""

    file: Path | str
    line: int | None
    key: str


def quote(text: object, limit: int = 40) -> str:
    """A name from a file, quoted and cut, so that an error message never echoes much of a
    file (a line of a .env read by mistake, say)."""
    s = str(text)
    return repr(s) if len(s) <= limit else repr(s[:limit]) + "…"


def _size(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n:,} bytes"


def project_path(path: str | Path, base: Path) -> Path:
    """`path` as a file names it, relative to `base` (the naming file's folder)."""
    return base / Path(path).expanduser() if not Path(path).is_absolute() else Path(path)


class ProjectFiles(Protocol):
    """The project's files as some commit has them (see `reading_from`)."""

    root: Path
    where: str  # e.g. "at main (0a1b2c3d4e5f)", for messages

    def read(self, path: Path, max_bytes: int) -> bytes | None:
        """The file's bytes at that commit, None when it has none there; InputError for a
        link, a folder or a file over `max_bytes`."""
        ...


_FILES_FROM: contextvars.ContextVar[ProjectFiles | None] = contextvars.ContextVar(
    "promptctl_files_from", default=None)


@contextlib.contextmanager
def reading_from(files: ProjectFiles) -> Iterator[None]:
    """Inside this block, every file the project names (`read_file` with a root) is read
    from `files` instead of the work tree: a version at a commit is loaded whole from that
    commit, its judges' and scorers' files included, never half from the work tree."""
    token = _FILES_FROM.set(files)
    try:
        yield
    finally:
        _FILES_FROM.reset(token)


def committed_files() -> ProjectFiles | None:
    """The commit project files are being read from (inside `reading_from`), else None."""
    return _FILES_FROM.get()


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path`, with every symbolic link resolved, lies inside `root`."""
    real = Path(os.path.realpath(path))
    base = Path(os.path.realpath(root))
    return real == base or real.is_relative_to(base)


class _Failure:
    """Builds the errors of one read: about reaching the file, they name the naming file."""

    def __init__(self, path: Path, what: str, ref: Reference | None) -> None:
        self.path, self.what, self.ref = path, what, ref

    def __call__(self, problem: str, fix: str) -> InputError:
        if self.ref is not None:
            shown = quote(display_path(self.path), 80)
            return InputError(f"the {self.what} named by {self.ref.key}: {shown} {problem}",
                              file=self.ref.file, line=self.ref.line, fix=fix)
        return InputError(f"{self.what} {problem}", file=self.path, fix=fix)


def read_target_file(path: Path, root: Path, *, what: str,
                     ref: Reference | None = None) -> bytes:
    """The bytes of a prompt, pipeline or agent file. Named from outside the project (on the
    command line) it may be anywhere; a path inside the project may not lead out of it by a
    symbolic link; with `ref` (a file another project file names) it must lie inside."""
    inside_as_named = Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root)) or \
        is_inside(path.parent, root)
    return read_file(path, what=what, max_bytes=MAX_PROMPT_BYTES,
                     root=root if ref is not None or inside_as_named else None, ref=ref,
                     missing_fix="check the path")


def read_file(path: Path, *, what: str, max_bytes: int, root: Path | None = None,
              ref: Reference | None = None, missing_fix: str | None = None) -> bytes:
    """The bytes of `path`, a regular file of at most `max_bytes`.

    With `root`, the file must lie inside it once symbolic links are resolved (a
    file a project names); without, it may be anywhere (a path given on the
    command line). With `ref`, errors about reaching the file name the file and
    line that named it; errors about its content are the parser's, naming the
    file itself.
    """
    fail = _Failure(path, what, ref)
    committed = _FILES_FROM.get()
    if root is not None and committed is not None:
        return _read_committed(committed, path, root, fail, what, max_bytes)
    if root is not None and not is_inside(path, root):
        inside_as_named = Path(os.path.abspath(path)).is_relative_to(os.path.realpath(root)) or \
            Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root))
        problem = ("is a symbolic link to a place outside the project" if inside_as_named
                   else "lies outside the project")
        raise fail(f"{problem} (the project root is {root})",
                   f"keep the {what} inside the project and name it by a path relative to the "
                   "naming file; promptctl does not follow links out of the project")
    real = os.path.realpath(path) if root is not None else os.fspath(path)
    if missing_fix is None:
        missing_fix = ("check the path (it is relative to the naming file's folder)" if ref is not None
                       else "check the path (relative paths are from the current directory)")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise fail("was not found", missing_fix) from None
    except NotADirectoryError:
        raise fail("was not found (a folder on its path is a file)", missing_fix) from None
    except OSError as exc:
        raise fail(f"cannot be read: {exc.strerror}", "check its permissions") from None
    _check_stat(st, fail, max_bytes)
    try:
        # O_NONBLOCK: a FIFO swapped in after the stat above cannot hang the open.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) |
                     getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise fail(f"cannot be read: {exc.strerror}", "check its permissions") from None
    try:
        opened = os.fstat(fd)
        _check_stat(opened, fail, max_bytes)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            raise fail("was replaced while it was being opened", "run again")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(MiB, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # it grew since the stat
                raise fail(f"is larger than {_size(max_bytes)}", f"split the {what} into smaller files")
    except OSError as exc:
        raise fail(f"cannot be read: {exc.strerror}", "check its permissions") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _read_committed(files: ProjectFiles, path: Path, root: Path, fail: _Failure, what: str,
                    max_bytes: int) -> bytes:
    # A commit's tree has no links to follow (reading one is refused), so inside is by name.
    lexical = Path(os.path.normpath(os.path.abspath(path)))
    if not lexical.is_relative_to(Path(os.path.abspath(files.root))) \
            or not Path(os.path.abspath(root)).is_relative_to(Path(os.path.abspath(files.root))):
        raise fail(f"lies outside the project (the project root is {files.root})",
                   f"keep the {what} inside the project and name it by a path relative to the "
                   "naming file")
    data = files.read(lexical, max_bytes)
    if data is None:
        raise fail(f"did not exist {files.where}", "choose a ref where it exists")
    return data


def _check_stat(st: os.stat_result, fail: _Failure, max_bytes: int) -> None:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise fail("is a directory", f"name a file: the {fail.what} itself")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "a special file")
        raise fail(f"is {kind}, not a regular file", f"name a regular {fail.what} file")
    if st.st_size > max_bytes:
        raise fail(f"is larger than {_size(max_bytes)} ({_size(st.st_size)})",
                   f"split the {fail.what} into smaller files")


def project_root(path: Path) -> Path:
    """The root that the files a project file names must lie in.

    The git work tree containing the file, else the current directory.
    Symbolic links are not followed to find it: a link inside the project belongs
    to the project whatever it points at. A file outside git and outside the
    current directory belongs to no project that promptctl can tell (and no pull
    request can put it there): its filesystem root is returned, so what it names
    is read wherever it lies, still only as a regular file of a sane size.
    """
    here = Path(os.path.abspath(path)).parent
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    cwd = Path.cwd()
    return cwd if here == cwd or here.is_relative_to(cwd) else Path(here.anchor)
