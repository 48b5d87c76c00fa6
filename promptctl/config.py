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
LOCAL_CONCURRENCY = 1

_ENDPOINT_KEYS = {"base_url", "api_key_env", "gguf", "ctx", "concurrency", "threads", "rpm", "tpm"}
_CONFIG_KEYS = {"endpoints", "pricing", "store", "concurrency"}


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float


# USD per million tokens for OpenAI chat models (list prices, standard tier).
# A dated snapshot such as gpt-4o-mini-2024-07-18 takes its family's price;
# promptctl.yaml `pricing:` overrides any of these.
BUILTIN_PRICES: dict[str, Price] = {
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-4": Price(30.00, 60.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "o1": Price(15.00, 60.00),
    "o1-mini": Price(1.10, 4.40),
    "o3": Price(2.00, 8.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
}


# gpt-4o-mini-2024-07-18, gpt-4-0613: a family name and a release date.
_SNAPSHOT = re.compile(r"(.+?)-(?:\d{4}-\d{2}-\d{2}|\d{4})")


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible server: a URL, or a GGUF file promptctl serves itself."""

    name: str
    base_url: str | None = None
    api_key_env: str | None = None
    gguf: str | None = None
    ctx: int = 4096
    threads: int | None = None
    concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None

    @property
    def managed(self) -> bool:
        """True when promptctl starts and stops the server (a llama.cpp GGUF endpoint)."""
        return self.gguf is not None


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

        promptctl.yaml `pricing:` first (as ENDPOINT/MODEL for an endpoint),
        then: a managed endpoint is free, another endpoint unknown, an OpenAI
        model its built-in price. A dated snapshot (gpt-4o-mini-2024-07-18)
        takes its family's price when it has none of its own.
        """
        names = [model]
        snapshot = _SNAPSHOT.fullmatch(model)
        if snapshot is not None:
            names.append(snapshot.group(1))
        prefix = f"{endpoint.name}/" if endpoint is not None else ""
        for name in names:
            if prefix + name in self.pricing:
                return self.pricing[prefix + name]
        if endpoint is not None:
            return Price(0.0, 0.0) if endpoint.managed else None
        # Only a dated snapshot takes its family's price: a longest-prefix match
        # would price o1-pro as o1 or gpt-5-pro as gpt-5, ten times too low.
        for name in names:
            if name in BUILTIN_PRICES:
                return BUILTIN_PRICES[name]
        return None


def _number(value: Any, where: str, path: Path, line: int | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 \
            or value == float("inf"):
        raise InputError(f"{where} must be a number of 0 or more, not {value!r}", file=path,
                         line=line, fix="write a number of USD per million tokens, e.g. 0.15")
    return float(value)


def _positive_int(value: Any, where: str, path: Path, line: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{where} must be a positive integer, not {value!r}", file=path,
                         line=line, fix="write a whole number such as 8")
    return value


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
        line = lines.line("endpoints", name)
        if not isinstance(spec, dict):
            raise InputError(f"endpoint {name!r} must be a mapping", file=path, line=line,
                             fix="give it base_url (and api_key_env) or gguf")
        for key in spec:
            if key not in _ENDPOINT_KEYS:
                raise InputError(f"unknown key {key!r} in endpoint {name!r}", file=path,
                                 line=lines.line("endpoints", name, key),
                                 fix=f"use one of: {', '.join(sorted(_ENDPOINT_KEYS))}")
        if "/" in str(name):
            raise InputError(f"endpoint name {name!r} must not contain '/'", file=path,
                             line=line, fix="rename it; models are addressed as ENDPOINT/MODEL")
        if ("base_url" in spec) == ("gguf" in spec):
            raise InputError(f"endpoint {name!r} needs exactly one of base_url or gguf",
                             file=path, line=line,
                             fix="base_url for a running server, gguf for a model file promptctl serves")
        for key in ("base_url", "api_key_env", "gguf"):
            if key in spec and not isinstance(spec[key], str):
                raise InputError(f"{key} of endpoint {name!r} must be a string", file=path,
                                 line=lines.line("endpoints", name, key), fix="quote the value")
        gguf = spec.get("gguf")
        if gguf is not None:
            gpath = Path(os.path.expanduser(gguf))
            gguf = str(gpath if gpath.is_absolute() else (path.parent / gpath))
        endpoints[str(name)] = Endpoint(
            name=str(name),
            base_url=spec.get("base_url"),
            api_key_env=spec.get("api_key_env"),
            gguf=gguf,
            ctx=_positive_int(spec.get("ctx", 4096), "ctx", path, lines.line("endpoints", name, "ctx")),
            threads=None if spec.get("threads") is None else _positive_int(
                spec["threads"], "threads", path, lines.line("endpoints", name, "threads")),
            concurrency=None if spec.get("concurrency") is None else _positive_int(
                spec["concurrency"], "concurrency", path, lines.line("endpoints", name, "concurrency")),
            rpm=None if spec.get("rpm") is None else _positive_int(
                spec["rpm"], "rpm", path, lines.line("endpoints", name, "rpm")),
            tpm=None if spec.get("tpm") is None else _positive_int(
                spec["tpm"], "tpm", path, lines.line("endpoints", name, "tpm")),
        )
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
