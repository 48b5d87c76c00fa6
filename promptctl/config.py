"""Project configuration: promptctl.yaml, environment variables and defaults.

Precedence is flag > environment > promptctl.yaml > built-in default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptctl._yaml import LineMap, load_yaml_file, load_yaml_text
from promptctl.errors import InputError, did_you_mean
from promptctl.providers import Endpoint, Price, check_endpoint, positive_int, price_of

# Endpoint and Price are the providers'; many modules name them through the configuration.
__all__ = ["CONFIG_FILE", "DEFAULT_CONCURRENCY", "DEFAULT_STORE", "ENV_CONFIG", "ENV_STORE", "Config",
           "Endpoint", "Price", "load_config"]

CONFIG_FILE = "promptctl.yaml"
ENV_STORE = "PROMPTCTL_STORE"
ENV_CONFIG = "PROMPTCTL_CONFIG"
DEFAULT_STORE = "sqlite:///.promptctl/results.db"
DEFAULT_CONCURRENCY = 8

_CONFIG_KEYS = {"endpoints", "pricing", "store", "concurrency"}


@dataclass(frozen=True)
class Config:
    """Everything read from promptctl.yaml, resolved against the project root."""

    root: Path
    path: Path | None = None
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    pricing: dict[str, Price] = field(default_factory=dict)
    store: str | None = None
    concurrency: int | None = None
    # Endpoints only the work tree's file defines, left out of this configuration (see
    # `gate.trusted_config`): naming one says why it is missing.
    withheld: frozenset[str] = frozenset()

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
        """Price of a model (per million tokens), or None when unknown (see
        `providers.price_of`: this file's `pricing:` first, then the backend's)."""
        return price_of(model, endpoint, self.pricing)


def _number(value: Any, where: str, path: Path, line: int | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 \
            or value == float("inf"):
        raise InputError(f"{where} must be a number of 0 or more, not {value!r}", file=path,
                         line=line, fix="write a number of USD per million tokens, e.g. 0.15")
    return float(value)


def load_config(root: Path) -> Config:
    """Load promptctl.yaml from the project root ($PROMPTCTL_CONFIG names another file).
    `project.open_project` finds the root."""
    root = root.resolve()
    env_path = os.environ.get(ENV_CONFIG)
    path = Path(env_path) if env_path else root / CONFIG_FILE
    if not path.exists():
        if env_path:
            raise InputError("config file not found", file=path,
                             fix=f"fix ${ENV_CONFIG} or create the file")
        return Config(root=root)
    data, lines = load_yaml_file(path)
    return _parse(root, path, data, lines)


def config_from_text(root: Path, text: str, path: Path) -> Config:
    """A promptctl.yaml read from elsewhere than the work tree (a commit's), named `path`."""
    data, lines = load_yaml_text(text, path)
    return _parse(root.resolve(), path, data, lines)


def _parse(root: Path, path: Path, data: Any, lines: LineMap) -> Config:
    if data is None:
        return Config(root=root, path=path)
    if not isinstance(data, dict):
        raise InputError("promptctl.yaml must be a mapping", file=path, line=lines.line(),
                         fix="use keys endpoints, pricing, store, concurrency")
    for key in data:
        if key not in _CONFIG_KEYS:
            raise InputError(f"unknown key {key!r}", file=path, line=lines.line(key),
                             fix=f"{did_you_mean(key, sorted(_CONFIG_KEYS))}use one of: "
                             f"{', '.join(sorted(_CONFIG_KEYS))}")
    endpoints: dict[str, Endpoint] = {}
    raw_endpoints = data.get("endpoints") or {}
    if not isinstance(raw_endpoints, dict):
        raise InputError("endpoints must be a mapping of name to settings", file=path,
                         line=lines.line("endpoints"),
                         fix='e.g. endpoints: {ollama: {base_url: "http://127.0.0.1:11434/v1"}}')
    for name, spec in raw_endpoints.items():
        endpoints[str(name)] = check_endpoint(name, spec, path, lines)
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
        concurrency = positive_int(concurrency, "concurrency", path, lines.line("concurrency"))
    return Config(root=root, path=path, endpoints=endpoints, pricing=pricing, store=store,
                  concurrency=concurrency)
