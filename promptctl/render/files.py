"""Report files written whole or not at all, and never through a symbolic link.

A pull request can commit a symbolic link where `check` writes its reports
(`report.md -> ~/.bashrc`, `reports -> /etc`): a report written through it would
replace a file outside the repository. So the report's own name must not be a link
(anywhere), and no folder between the project root and the report may be one; the
folders are opened one at a time without following links (O_NOFOLLOW), the file is
created beside its final name and renamed over it, which never follows a link either.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from promptctl.errors import InputError

BLOCK = 1 << 16  # characters gathered before a write, when the text comes in pieces
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class LinkRefused(InputError):
    """A report path that is, or passes through, a symbolic link (exit 2)."""


def write_atomic(path: Path, text: str | Iterable[str], *, append: bool = False,
                 root: Path | None = None) -> None:
    """Write `text` to `path` (after what it holds, with `append`) so that a reader, or a
    crash at any moment, sees the old content or the new, never an empty or half-written
    file: the full new content goes to a temporary file in the same directory, which then
    replaces `path` in one rename. Raises OSError as `open` would.

    `text` may come in pieces (an HTML report of 100,000 rows), written as they come: the
    whole is never held. A piece that cannot be written, or an error while the pieces are
    made, leaves `path` as it was.

    A symbolic link is never followed: LinkRefused when `path` is one, or when a folder on
    the way to it inside the project (`root`; default: the git work tree the path lies in,
    else the current directory when it lies there) is one. Missing folders are created.
    The file keeps its permissions, and a new one gets the usual ones (0666 less the umask).
    """
    # A whole text is encoded before anything is touched: one that cannot be written fails here.
    data = text.encode("utf-8") if isinstance(text, str) else _encoded(text)
    target = Path(os.path.abspath(path))
    if root is None:
        root = _project_root(target)
    folder = _open_folder(target, Path(os.path.abspath(root)) if root is not None else None)
    try:
        _write_in(folder, target, data, append)
    finally:
        os.close(folder)


def _encoded(pieces: Iterable[str]) -> Iterator[bytes]:
    """`pieces` as UTF-8, joined into blocks of about `BLOCK` characters (a report comes in
    pieces of a few characters: one write each would be slow)."""
    block: list[str] = []
    size = 0
    for piece in pieces:
        block.append(piece)
        size += len(piece)
        if size >= BLOCK:
            yield "".join(block).encode("utf-8")
            block.clear()
            size = 0
    if block:
        yield "".join(block).encode("utf-8")


def _write_in(folder: int, target: Path, data: bytes | Iterator[bytes], append: bool) -> None:
    name = target.name
    try:
        st: os.stat_result | None = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise _refused(target, f"the report path {target.name} is a symbolic link")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise InputError("the report path is not a regular file", file=target,
                         fix="name a file (it is created, or replaced whole)")
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
    old: bytes = b""
    if append and st is not None:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW, dir_fd=folder)
        with os.fdopen(fd, "rb") as fh:
            old = fh.read()
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(old)
            for block in (data,) if isinstance(data, bytes) else data:
                fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode, dir_fd=folder)
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder)
        raise


def _open_folder(target: Path, root: Path | None) -> int:
    """A descriptor of the folder `target` goes in, created as needed; inside `root`, each
    folder below it is opened without following a link."""
    parent = target.parent
    if root is None or not (parent == root or parent.is_relative_to(root)):
        parent.mkdir(parents=True, exist_ok=True)
        return os.open(parent, _DIR_FLAGS)
    fd = os.open(root, _DIR_FLAGS)
    here = root
    try:
        for part in parent.relative_to(root).parts:
            here = here / part
            try:
                os.mkdir(part, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                child = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and stat.S_ISLNK(
                        os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise _refused(target, f"the folder {_shown(here, root)} on the way to the "
                                   "report is a symbolic link") from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refused(target: Path, why: str) -> LinkRefused:
    return LinkRefused(f"{why}; reports are never written through a symbolic link (a link "
                       "committed in a pull request could replace a file outside the "
                       "repository)", file=target,
                       fix="remove the link (git rm it), or write the report to another path "
                       "(for example outside the repository: --markdown $RUNNER_TEMP/report.md)")


def _shown(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _project_root(target: Path) -> Path | None:
    """The git work tree `target` lies in (found without following links), else the current
    directory when `target` lies in it, else None (no folder is checked)."""
    for candidate in target.parents:
        if os.path.lexists(candidate / ".git"):
            return candidate
    cwd = Path.cwd()
    return cwd if target.is_relative_to(cwd) else None


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
