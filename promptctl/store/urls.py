"""Store URLs as they may be shown: never with a password in them.

A URL is split as libpq splits it, not as a web URL: the user information ends
at the first "@" before any "/", so a password with "#" or "?" in it (which
libpq accepts unencoded) is still found and removed whole; a password with an
unencoded "/" or "@" ends at the last "@" (`redact.userinfo_end`).

Messages about a store pass through `scrub`: the URL as given is replaced by its
public form wherever libpq quotes it, the password in quotes wherever libpq quotes it
alone ("invalid percent-encoded token"), whatever its length, and `password=...` of
a key/value connection string is masked.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, unquote

from promptctl import redact

_SECRET_PARAMS = {"password", "sslpassword"}


def _split(url: str) -> tuple[str, str | None, str, str | None]:
    """(scheme://, userinfo or None, the rest up to the query, query or None)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", None, url, None
    end = redact.userinfo_end(rest)
    userinfo = None
    if end >= 0:
        userinfo, rest = rest[:end], rest[end + 1:]
    body, qmark, query = rest.partition("?")
    return scheme + sep, userinfo, body, query if qmark else None


def public_url(url: str) -> str:
    """`url` without any password: not in its user information, not in its query.

    `sqlite:///PATH` gives PATH, as the store is named in messages.
    """
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):]
    head, userinfo, body, query = _split(url)
    out = head
    if userinfo is not None:
        user = userinfo.split(":", 1)[0]
        out += f"{user}@" if user else ""
    out += body
    if query is not None:
        # The other parameters stay exactly as written.
        kept = [part for part in query.split("&")
                if unquote(part.partition("=")[0]).lower() not in _SECRET_PARAMS]
        if kept:
            out += "?" + "&".join(kept)
    return redact.redact(out)


def url_secrets(url: str, *, as_written: bool = False) -> list[str]:
    """The passwords a store URL carries (user information and query), decoded; with
    `as_written`, also as written in the URL (percent-encoded)."""
    _, userinfo, _, query = _split(url)
    found = []
    if userinfo is not None and ":" in userinfo:
        raw = userinfo.split(":", 1)[1]
        found += [unquote(raw), raw] if as_written else [unquote(raw)]
    if query is not None:
        found += [v for k, v in parse_qsl(query, keep_blank_values=True)
                  if k.lower() in _SECRET_PARAMS]
        if as_written:
            found += [part.partition("=")[2] for part in query.split("&")
                      if unquote(part.partition("=")[0]).lower() in _SECRET_PARAMS]
    return list(dict.fromkeys(s for s in found if s))


_KEY_VALUE_PASSWORD = re.compile(r"(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"]+)")


def scrub(text: str, url: str | None = None) -> str:
    """A message about the store at `url` with no password in it: the URL as written
    replaced by its public form, every password of it quoted alone masked ("***"), however
    short; `password=...` masked; then `redact` (the user information of any database URL,
    and every registered secret)."""
    if url and "://" in url:
        if url in text:
            text = text.replace(url, public_url(url))
        for secret in sorted(url_secrets(url, as_written=True), key=len, reverse=True):
            for mark in ('"', "'"):
                text = text.replace(f"{mark}{secret}{mark}", f"{mark}{redact.MASK}{mark}")
    text = _KEY_VALUE_PASSWORD.sub(lambda m: m.group(1) + redact.MASK, text)
    return redact.redact(text)


def register_url_secrets(url: str) -> None:
    """Mask every password this store URL (or libpq's environment) may use from now on."""
    # `redact` masks the percent-encoded form (as written in the URL) along with the secret.
    for secret in url_secrets(url):
        redact.register(secret)
    redact.register(os.environ.get("PGPASSWORD"))
