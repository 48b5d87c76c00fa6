"""Report files written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str, *, append: bool = False) -> None:
    """Write `text` to `path` (after what it holds, with `append`) so that a reader, or a
    crash at any moment, sees the old content or the new, never an empty or half-written
    file: the full new content goes to a temporary file in the same directory, which then
    replaces `path` in one rename. Raises OSError as `open` would.

    A symbolic link is followed (the file it points to is replaced); the file keeps its
    permissions, and a new one gets the usual ones (0666 less the umask).
    """
    data = text.encode("utf-8")  # before anything is touched: a text that cannot be written
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
        if append:
            data = target.read_bytes() + data
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
