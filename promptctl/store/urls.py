"""Store URLs as they may be shown: never with a password in them."""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from promptctl import redact

_SECRET_PARAMS = {"password", "sslpassword"}


def public_url(url: str) -> str:
    """`url` without any password: not in its userinfo, not in its query.

    `sqlite:///PATH` gives PATH, as the store is named in messages.
    """
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):]
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a store URL that cannot be parsed>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hosts}" if user else hosts
    query = parts.query
    if query:
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True)
                if k.lower() not in _SECRET_PARAMS]
        query = urlencode(kept)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The passwords a store URL carries (userinfo and query), decoded."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = []
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        found.append(unquote(userinfo.split(":", 1)[1]))
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True)
              if k.lower() in _SECRET_PARAMS]
    return [s for s in found if s]


def register_url_secrets(url: str) -> None:
    """Mask every password this store URL (or libpq's environment) may use from now on."""
    # `redact` masks the percent-encoded form (as written in the URL) along with the secret.
    for secret in url_secrets(url):
        redact.register(secret)
    redact.register(os.environ.get("PGPASSWORD"))
