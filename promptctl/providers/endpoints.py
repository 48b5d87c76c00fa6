"""Endpoints as promptctl.yaml names them: each checked against its backend's settings,
and what a model costs on one (the pricing table first, then the backend's own prices).

The providers own what an endpoint may say; `config` reads promptctl.yaml and hands each
`endpoints:` entry here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from promptctl.errors import InputError, did_you_mean
from promptctl.providers.base import Endpoint, Price
from promptctl.providers.registry import BACKENDS, backend

# Settings every endpoint takes, whatever its backend.
COMMON_ENDPOINT_KEYS = {"type": str, "concurrency": int, "rpm": int, "tpm": int, "timeout": float,
                       "max_response_mb": float}
MAX_TIMEOUT = 3600.0
# A gibibyte per response is beyond any answer; a larger cap no longer protects memory.
MAX_RESPONSE_MB = 1024.0

# Larger values are typos or attacks, never settings: a concurrency of a billion would try to
# open a billion connections.
MAX_SETTING = 1_000_000


def positive_int(value: Any, where: str, path: Path, line: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SETTING:
        shown = repr(value) if not isinstance(value, int) or value < 10**12 else "a huge number"
        raise InputError(f"{where} must be a whole number from 1 to {MAX_SETTING:,}, not {shown}",
                         file=path, line=line, fix="write a whole number such as 8")
    return value


def check_endpoint(name: Any, spec: Any, path: Path, lines: Any) -> Endpoint:
    """One `endpoints:` entry, checked against its backend's settings."""
    line = lines.line("endpoints", name)
    if not isinstance(spec, dict):
        raise InputError(f"endpoint {name!r} must be a mapping", file=path, line=line,
                         fix="give it base_url (and api_key_env) or gguf")
    if "/" in str(name):
        raise InputError(f"endpoint name {name!r} must not contain '/'", file=path,
                         line=line, fix="rename it; models are addressed as ENDPOINT/MODEL")
    kind = spec.get("type")
    if kind is None:
        # A URL is a server to talk to; a model file is one promptctl serves itself.
        if ("base_url" in spec) == ("gguf" in spec):
            # `baseurl:` is a typo of one of them, named as such, not an endpoint lacking both.
            _known_keys(name, spec, path, lines, _every_key(), None)
            raise InputError(f"endpoint {name!r} needs exactly one of base_url or gguf (or a type)",
                             file=path, line=line,
                             fix="base_url for a running server, gguf for a model file promptctl serves")
        kind = "openai" if "base_url" in spec else "llamacpp"
    if not isinstance(kind, str) or kind not in BACKENDS:
        raise InputError(f"unknown endpoint type {kind!r} in endpoint {name!r}", file=path,
                         line=lines.line("endpoints", name, "type"),
                         fix=f"{did_you_mean(kind, sorted(BACKENDS))}use one of: "
                         f"{', '.join(sorted(BACKENDS))}")
    chosen = backend(kind)
    allowed = {**COMMON_ENDPOINT_KEYS, **chosen.settings}
    _known_keys(name, spec, path, lines, allowed, kind)
    for key in chosen.required:
        if key not in spec:
            raise InputError(f"endpoint {name!r} (type {kind}) needs {key}", file=path, line=line,
                             fix=f"add {key}: to the endpoint")
    values: dict[str, Any] = {}
    for key, value in spec.items():
        where = lines.line("endpoints", name, key)
        want = allowed[key]
        if want is str or want is Path:
            if not isinstance(value, str):
                raise InputError(f"{key} of endpoint {name!r} must be a string", file=path,
                                 line=where, fix="quote the value")
            if want is Path and not value.startswith("builtin:"):
                # (builtin:smollm2 names the file a package ships, wherever it is installed.)
                # Relative to promptctl.yaml, so the project works wherever it is cloned.
                p = Path(os.path.expanduser(value))
                value = str(p if p.is_absolute() else (path.parent / p))
        elif want is bool:
            if not isinstance(value, bool):
                raise InputError(f"{key} of endpoint {name!r} must be true or false, not {value!r}",
                                 file=path, line=where, fix=f"write {key}: true or {key}: false")
        elif want is int:
            value = positive_int(value, key, path, where)
        elif key == "max_response_mb":
            value = mebibytes(value, key, path, where)
        elif want is float:
            value = seconds(value, key, path, where)
        values[key] = value
    common = {k: values.pop(k) for k in list(values) if k in COMMON_ENDPOINT_KEYS}
    common.pop("type", None)
    return Endpoint(name=str(name), type=kind, settings=values, **common)


def _every_key() -> dict[str, Any]:
    """The settings of every endpoint type (for an endpoint whose type is not known yet)."""
    keys: dict[str, Any] = dict(COMMON_ENDPOINT_KEYS)
    for name in BACKENDS:
        keys.update(backend(name).settings)
    return keys


def _known_keys(name: Any, spec: dict[Any, Any], path: Path, lines: Any,
                allowed: Mapping[str, Any], kind: str | None) -> None:
    """An unknown setting is named, with the one it is close to."""
    for key in spec:
        if key not in allowed:
            of = f" (type {kind})" if kind is not None else ""
            raise InputError(f"unknown key {key!r} in endpoint {name!r}{of}", file=path,
                             line=lines.line("endpoints", name, key),
                             fix=f"{did_you_mean(key, sorted(allowed))}use one of: "
                             f"{', '.join(sorted(allowed))}")


def seconds(value: Any, where: str, path: Path, line: int | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT:
        raise InputError(f"{where} must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}, "
                         f"not {value!r}", file=path, line=line, fix="e.g. 60")
    return float(value)


def mebibytes(value: Any, where: str, path: Path, line: int | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not 0 < value <= MAX_RESPONSE_MB:
        raise InputError(f"{where} must be a number of MiB above 0 and at most {MAX_RESPONSE_MB:g}, "
                         f"not {value!r}", file=path, line=line, fix="e.g. 16")
    return float(value)


def price_of(model: str, endpoint: Endpoint | None, pricing: Mapping[str, Price]) -> Price | None:
    """Price of a model (per million tokens), or None when unknown.

    `pricing` (promptctl.yaml's) first (as ENDPOINT/MODEL for an endpoint); then a server
    promptctl runs itself is free, another endpoint unknown, and the default endpoint
    (the OpenAI API) its backend's built-in price list. A dated snapshot
    (gpt-4o-mini-2024-07-18) takes its family's price when it has none of its own.
    """
    names = [model]
    snapshot = _SNAPSHOT.fullmatch(model)
    if snapshot is not None:
        names.append(snapshot.group(1))
    prefix = f"{endpoint.name}/" if endpoint is not None else ""
    for name in names:
        if prefix + name in pricing:
            return pricing[prefix + name]
    if endpoint is not None:
        return Price(0.0, 0.0) if backend(endpoint.type).free else None
    # Only a dated snapshot takes its family's price: a longest-prefix match
    # would price o1-pro as o1 or gpt-5-pro as gpt-5, ten times too low.
    for name in names:
        found = backend("openai").builtin_price(name)
        if found is not None:
            return found
    return None


# gpt-4o-mini-2024-07-18, gpt-4-0613: a family name and a release date.
_SNAPSHOT = re.compile(r"(.+?)-(?:\d{4}-\d{2}-\d{2}|\d{4})")
