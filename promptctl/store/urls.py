"""Store URLs as they may be shown: never with a password in them.

A URL is split as libpq splits it, not as a web URL: the user information ends
at the first "@" before any "/", so a password with "#" or "?" in it (which
libpq accepts unencoded) is still found and removed whole.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, unquote

from promptctl import redact

_SECRET_PARAMS = {"password", "sslpassword"}


def _split(url: str) -> tuple[str, str | None, str, str | None]:
    """(scheme://, userinfo or None, the rest up to the query, query or None)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", None, url, None
    end = 0
    while end < len(rest) and rest[end] not in "@/":
        end += 1
    userinfo = None
    if end < len(rest) and rest[end] == "@":
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


def url_secrets(url: str) -> list[str]:
    """The passwords a store URL carries (user information and query), decoded."""
    _, userinfo, _, query = _split(url)
    found = []
    if userinfo is not None and ":" in userinfo:
        found.append(unquote(userinfo.split(":", 1)[1]))
    if query is not None:
        found += [v for k, v in parse_qsl(query, keep_blank_values=True)
                  if k.lower() in _SECRET_PARAMS]
    return [s for s in found if s]


def register_url_secrets(url: str) -> None:
    """Mask every password this store URL (or libpq's environment) may use from now on."""
    # `redact` masks the percent-encoded form (as written in the URL) along with the secret.
    for secret in url_secrets(url):
        redact.register(secret)
    redact.register(os.environ.get("PGPASSWORD"))
