"""Project configuration: promptctl.yaml, environment variables and defaults.

Precedence is flag > environment > promptctl.yaml > built-in default.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptctl._yaml import load_yaml_file
from promptctl.errors import InputError

CONFIG_FILE = "promptctl.yaml"
ENV_STORE = "PROMPTCTL_STORE"
ENV_CONFIG = "PROMPTCTL_CONFIG"
DEFAULT_STORE = "sqlite:///.promptctl/results.db"
DEFAULT_CONCURRENCY = 8

# Settings every endpoint takes, whatever its backend.
_COMMON_ENDPOINT_KEYS = {"type": str, "concurrency": int, "rpm": int, "tpm": int, "timeout": float}
MAX_TIMEOUT = 3600.0
_CONFIG_KEYS = {"endpoints", "pricing", "store", "concurrency"}


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float


@dataclass(frozen=True)
class Endpoint:
    """A model server named in promptctl.yaml: its backend `type` and that backend's settings.

    The common settings are fields; backend-specific ones (base_url, gguf, ...) live in
    `settings`, checked against what the backend declares (see `providers.Backend`).
    """

    name: str
    type: str = "openai"
    settings: dict[str, Any] = field(default_factory=dict)
    concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    timeout: float | None = None

    def setting(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)

    @property
    def base_url(self) -> str | None:
        value = self.settings.get("base_url")
        return str(value) if value is not None else None

    @property
    def api_key_env(self) -> str | None:
        value = self.settings.get("api_key_env")
        return str(value) if value is not None else None


@dataclass(frozen=True)
class Config:
    """Everything read from promptctl.yaml, resolved against the project root."""

    root: Path
    path: Path | None = None
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    pricing: dict[str, Price] = field(default_factory=dict)
    store: str | None = None
    concurrency: int | None = None

    def store_url(self, flag: str | None = None) -> str:
        """The results store URL: flag > $PROMPTCTL_STORE > promptctl.yaml > default."""
        url = flag or os.environ.get(ENV_STORE) or self.store or DEFAULT_STORE
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            rel = url[len("sqlite:///") :]
            if rel != ":memory:":
                url = "sqlite:///" + str((self.root / rel).resolve())
        elif "://" not in url:
            url = "sqlite:///" + str((self.root / url).resolve())
        return url

    def price(self, model: str, endpoint: Endpoint | None = None) -> Price | None:
        """Price of a model (per million tokens), or None when unknown.

        promptctl.yaml `pricing:` first (as ENDPOINT/MODEL for an endpoint); then a server
        promptctl runs itself is free, another endpoint unknown, and the default endpoint
        (the OpenAI API) its backend's built-in price list. A dated snapshot
        (gpt-4o-mini-2024-07-18) takes its family's price when it has none of its own.
        """
        from promptctl.providers import backend

        names = [model]
        snapshot = _SNAPSHOT.fullmatch(model)
        if snapshot is not None:
            names.append(snapshot.group(1))
        prefix = f"{endpoint.name}/" if endpoint is not None else ""
        for name in names:
            if prefix + name in self.pricing:
                return self.pricing[prefix + name]
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


def _number(value: Any, where: str, path: Path, line: int | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 \
            or value == float("inf"):
        raise InputError(f"{where} must be a number of 0 or more, not {value!r}", file=path,
                         line=line, fix="write a number of USD per million tokens, e.g. 0.15")
    return float(value)


# Larger values are typos or attacks, never settings: a concurrency of a billion would try to
# open a billion connections.
MAX_SETTING = 1_000_000


def _positive_int(value: Any, where: str, path: Path, line: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SETTING:
        shown = repr(value) if not isinstance(value, int) or value < 10**12 else "a huge number"
        raise InputError(f"{where} must be a whole number from 1 to {MAX_SETTING:,}, not {shown}",
                         file=path, line=line, fix="write a whole number such as 8")
    return value


def _endpoint(name: Any, spec: Any, path: Path, lines: Any) -> Endpoint:
    """One `endpoints:` entry, checked against its backend's settings."""
    from promptctl.providers import BACKENDS, backend

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
            raise InputError(f"endpoint {name!r} needs exactly one of base_url or gguf (or a type)",
                             file=path, line=line,
                             fix="base_url for a running server, gguf for a model file promptctl serves")
        kind = "openai" if "base_url" in spec else "llamacpp"
    if not isinstance(kind, str) or kind not in BACKENDS:
        raise InputError(f"unknown endpoint type {kind!r} in endpoint {name!r}", file=path,
                         line=lines.line("endpoints", name, "type"),
                         fix=f"use one of: {', '.join(sorted(BACKENDS))}")
    chosen = backend(kind)
    allowed = {**_COMMON_ENDPOINT_KEYS, **chosen.settings}
    for key in spec:
        if key not in allowed:
            raise InputError(f"unknown key {key!r} in endpoint {name!r} (type {kind})", file=path,
                             line=lines.line("endpoints", name, key),
                             fix=f"use one of: {', '.join(sorted(allowed))}")
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
            value = _positive_int(value, key, path, where)
        elif want is float:
            value = _seconds(value, key, path, where)
        values[key] = value
    common = {k: values.pop(k) for k in list(values) if k in _COMMON_ENDPOINT_KEYS}
    common.pop("type", None)
    return Endpoint(name=str(name), type=kind, settings=values, **common)


def _seconds(value: Any, where: str, path: Path, line: int | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT:
        raise InputError(f"{where} must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}, "
                         f"not {value!r}", file=path, line=line, fix="e.g. 60")
    return float(value)


def load_config(root: Path | None = None) -> Config:
    """Load promptctl.yaml from the project root ($PROMPTCTL_CONFIG names another file)."""
    if root is None:
        from promptctl.project import find_root

        root = find_root()
    root = root.resolve()
    env_path = os.environ.get(ENV_CONFIG)
    path = Path(env_path) if env_path else root / CONFIG_FILE
    if not path.exists():
        if env_path:
            raise InputError("config file not found", file=path,
                             fix=f"fix ${ENV_CONFIG} or create the file")
        return Config(root=root)
    data, lines = load_yaml_file(path)
    if data is None:
        return Config(root=root, path=path)
    if not isinstance(data, dict):
        raise InputError("promptctl.yaml must be a mapping", file=path, line=lines.line(),
                         fix="use keys endpoints, pricing, store, concurrency")
    for key in data:
        if key not in _CONFIG_KEYS:
            raise InputError(f"unknown key {key!r}", file=path, line=lines.line(key),
                             fix=f"use one of: {', '.join(sorted(_CONFIG_KEYS))}")
    endpoints: dict[str, Endpoint] = {}
    raw_endpoints = data.get("endpoints") or {}
    if not isinstance(raw_endpoints, dict):
        raise InputError("endpoints must be a mapping of name to settings", file=path,
                         line=lines.line("endpoints"),
                         fix='e.g. endpoints: {ollama: {base_url: "http://127.0.0.1:11434/v1"}}')
    for name, spec in raw_endpoints.items():
        endpoints[str(name)] = _endpoint(name, spec, path, lines)
    pricing: dict[str, Price] = {}
    raw_pricing = data.get("pricing") or {}
    if not isinstance(raw_pricing, dict):
        raise InputError("pricing must be a mapping of model to {input, output}", file=path,
                         line=lines.line("pricing"),
                         fix="e.g. pricing: {local/llama3.2: {input: 0, output: 0}}")
    for model, spec in raw_pricing.items():
        line = lines.line("pricing", model)
        if not isinstance(spec, dict) or set(spec) != {"input", "output"}:
            raise InputError(f"pricing for {model!r} must be {{input: N, output: N}}", file=path,
                             line=line, fix="give USD per million input and output tokens")
        pricing[str(model)] = Price(
            _number(spec["input"], f"pricing {model} input", path, line),
            _number(spec["output"], f"pricing {model} output", path, line),
        )
    store = data.get("store")
    if store is not None and not isinstance(store, str):
        raise InputError("store must be a URL string", file=path, line=lines.line("store"),
                         fix="e.g. store: sqlite:///.promptctl/results.db")
    concurrency = data.get("concurrency")
    if concurrency is not None:
        concurrency = _positive_int(concurrency, "concurrency", path, lines.line("concurrency"))
    return Config(root=root, path=path, endpoints=endpoints, pricing=pricing, store=store,
                  concurrency=concurrency)
