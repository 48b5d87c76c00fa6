"""The secrets this process uses, and masking every form of them out of text that leaves it.

A key reaches output in more shapes than itself: a gateway echoes the Basic auth
header (the key in base64), an error message quotes the first characters of a
refused key, a URL carries it percent-encoded. Every secret is registered where it
is read (an API key, URL credentials, a database password), and every sink (stored
rows and runs, terminal, reports, messages) passes its text through `redact`.

A secret is masked as text, and text can be a word: a database password `postgres` must
not turn "PostgreSQL" into "P***SQL". So a secret made of letters only is masked where it
stands as a word of its own, never inside a longer word, and an echoed piece of a secret
is masked only when it holds a digit or a symbol. Passwords too short or too common to be
masked as text (`a`) are removed by their place instead: the user information of every
database URL in a text (`postgresql://USER:PASSWORD@HOST`) is cut out, whatever is
registered (`strip_dsn_userinfo`).
"""

from __future__ import annotations

import base64
import re
import threading
from typing import Any
from urllib.parse import quote

MASK = "***"
# Shorter values ("none", "test") are placeholders, not secrets, and would mask ordinary words.
MIN_SECRET = 8
# An echoed piece of a key this long is masked too ("sk-proj-abcd****" in an error message).
MIN_FRAGMENT = 6

_lock = threading.Lock()
_secrets: list[str] = []
_pattern: re.Pattern[str] | None = None


def _base64_cores(secret: bytes) -> list[str]:
    """The base64 text that encodes `secret` wherever it sits in a longer value.

    Base64 turns 3 bytes into 4 characters, so the characters that depend on the
    secret alone are the groups that lie wholly inside it: one string for each of
    the three offsets the secret can have inside the encoded value.
    """
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret).decode("ascii")
        first = -(-offset // 3)  # the first group that starts inside the secret
        last = (offset + len(secret)) // 3  # groups before this one end inside it
        if last - first >= 2:
            cores.append(encoded[4 * first:4 * last])
    return cores


def _forms(secret: str) -> set[str]:
    raw = secret.encode("utf-8")
    forms = {secret, quote(secret, safe=""), *_base64_cores(raw)}
    forms |= {base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")}
    return {f for f in forms if len(f) >= MIN_FRAGMENT}


def _fragments(secret: str) -> set[str]:
    """Every window of MIN_FRAGMENT characters of `secret` that holds a digit or a symbol:
    a run of letters may be part of an ordinary word."""
    windows = {secret[i:i + MIN_FRAGMENT] for i in range(len(secret) - MIN_FRAGMENT + 1)}
    return {w for w in windows if not w.isalpha()}


def _alternative(text: str) -> str:
    """The regular expression that finds `text`: a run of letters only where it is a word of
    its own (not inside a longer word), anything else wherever it is."""
    if text.isalpha():
        return rf"(?<!\w){re.escape(text)}(?!\w)"
    return re.escape(text)


def register(secret: str | None, *, user: str | None = None) -> None:
    """Mask `secret` (and its encodings) from now on; with `user`, also the Basic auth
    header value base64("user:secret")."""
    global _pattern
    if not secret or len(secret) < MIN_SECRET:
        return
    with _lock:
        new = [secret]
        if user is not None:
            new.append(base64.b64encode(f"{user}:{secret}".encode()).decode("ascii"))
        added = [s for s in new if s not in _secrets]
        if not added:
            return
        _secrets.extend(added)
        whole: set[str] = set()
        pieces: set[str] = set()
        for s in _secrets:
            whole |= _forms(s)
            pieces |= _fragments(s)
        # Whole forms, and every window of MIN_FRAGMENT characters of a secret, found at
        # every position (a lookahead, so overlapping windows are all seen): the union of
        # what they cover is masked.
        alternatives = sorted(whole | pieces, key=len, reverse=True)
        _pattern = re.compile("(?=(" + "|".join(_alternative(a) for a in alternatives) + "))")


def forget_all() -> None:
    """Drop every registered secret (tests, and long-lived library use between projects)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def active() -> bool:
    """Whether any secret is registered (callers may skip work when none is)."""
    return _pattern is not None


def redact(text: str) -> str:
    """`text` with every registered secret, its encodings and echoed pieces of it masked, and
    the user information of every database URL in it removed."""
    if not text:
        return text
    if "://" in text and "@" in text:
        text = strip_dsn_userinfo(text)
    pattern = _pattern
    if pattern is None:
        return text
    return _expand(pattern, text)


# --- database URLs -------------------------------------------------------------------------

# A database URL in running text, up to the first space or quote (libpq quotes URLs in "").
_DSN = re.compile(r"(?i)\b(?:postgres(?:ql)?|mysql|mariadb|redis|mongodb(?:\+srv)?)://"
                  r"[^\s\"'<>]*")


def userinfo_end(rest: str) -> int:
    """Where the user information of a URL ends (the index of its "@" in `rest`, the URL
    after "://"), or -1 when it has none.

    As libpq reads it: the first "@" before any "/". A password with an unencoded "/"
    (which libpq then does not read as a password, and may quote with the whole URL in its
    message) ends at the last "@" when a ":" comes before the first "/": more may be cut
    than the user information of an odd URL, never less.
    """
    for i, c in enumerate(rest):
        if c == "@":
            return i
        if c == "/":
            break
    at = rest.rfind("@")
    slash = rest.find("/")
    if at > 0 and 0 <= rest.find(":") < slash:
        return at
    return -1


def strip_dsn_userinfo(text: str) -> str:
    """`text` with the password of every database URL in it removed (the user is kept:
    `postgresql://USER@HOST/DB`)."""

    def strip(found: re.Match[str]) -> str:
        url = found.group(0)
        head, _, rest = url.partition("://")
        end = userinfo_end(rest)
        if end < 0:
            return url
        user = rest[:end].split(":", 1)[0]
        return f"{head}://{user + '@' if user else ''}{rest[end + 1:]}"

    return _DSN.sub(strip, text)


def _expand(pattern: re.Pattern[str], text: str) -> str:
    spans: list[list[int]] = []
    for match in pattern.finditer(text):
        start, end = match.start(), match.start() + len(match.group(1))
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    if not spans:
        return text
    parts, last = [], 0
    for start, end in spans:
        parts += [text[last:start], MASK]
        last = end
    parts.append(text[last:])
    return "".join(parts)


def redact_value(value: Any) -> Any:
    """`redact` applied to every string inside plain data (dicts, lists, tuples)."""
    if _pattern is None:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value
