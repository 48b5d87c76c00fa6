"""The registry of backends, keyed by an endpoint's `type`.

A backend is one module that defines `BACKEND` (a `Backend`) plus one line in `BACKENDS`.
Its module is imported only when an endpoint of that type is used.
"""

from __future__ import annotations

import importlib

from promptctl.errors import InputError
from promptctl.providers.base import Backend

# Endpoint type -> the module that defines its BACKEND.
BACKENDS: dict[str, str] = {
    "openai": "promptctl.providers.openai",
    "llamacpp": "promptctl.providers.local",
}
_loaded: dict[str, Backend] = {}



def register(backend_: Backend) -> None:
    """Make a backend available under its type (third-party and test backends)."""
    _loaded[backend_.type] = backend_
    BACKENDS.setdefault(backend_.type, "")


def backend(kind: str) -> Backend:
    """The backend of endpoint type `kind`, importing its module on first use."""
    found = _loaded.get(kind)
    if found is not None:
        return found
    module = BACKENDS.get(kind)
    if not module:
        raise InputError(f"unknown endpoint type {kind!r}",
                         fix=f"use one of: {', '.join(sorted(BACKENDS))}")
    found = importlib.import_module(module).BACKEND
    assert isinstance(found, Backend)
    _loaded[kind] = found
    return found
