"""promptctl: versioned prompts, scored evals, stored runs and a CI gate for LLM prompts.

The public API is loaded lazily so that importing the package (and `promptctl --help`)
does not pay for numpy, openai or git.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"
# The name on the package index: `promptctl` there is an unrelated project, so every install
# instruction names this distribution, pinned to this version.
DISTRIBUTION = "promptctl-eval"


def install_command(extra: str | None = None) -> str:
    """The pip command that installs this very version (with an extra, e.g. "report")."""
    name = f"{DISTRIBUTION}[{extra}]" if extra else DISTRIBUTION
    return f"pip install '{name}=={__version__}'"

__all__ = ["compare_runs", "history", "load_evalset", "load_pipeline", "load_prompt", "load_target",
           "open_store", "run_eval", "run_pipeline"]

_LAZY = {
    "load_prompt": ("promptctl.prompts", "load_prompt"),
    "load_evalset": ("promptctl.evalsets", "load_evalset"),
    "load_pipeline": ("promptctl.pipelines", "load_pipeline"),
    "load_target": ("promptctl.target", "load_target"),
    # One engine runs every target: run_pipeline is run_eval, kept under its earlier name.
    "run_pipeline": ("promptctl.engine", "run_eval"),
    "run_eval": ("promptctl.engine", "run_eval"),
    "open_store": ("promptctl.store", "open_store"),
    "compare_runs": ("promptctl.compare", "compare_runs"),
    "history": ("promptctl.compare", "history"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'promptctl' has no attribute {name!r}")
