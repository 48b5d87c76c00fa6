"""promptctl: versioned prompts, scored evals, stored runs and a CI gate for LLM prompts.

The public API is loaded lazily so that importing the package (and `promptctl --help`)
does not pay for numpy, openai or git.
"""

from __future__ import annotations

import functools
import shlex
from pathlib import Path
from typing import Any

__version__ = "0.2.0"
# The name on the package index: `promptctl` there is an unrelated project, so an install from
# the index names this distribution, pinned to this version.
DISTRIBUTION = "promptctl-eval"
# Whether this version can be installed from the package index. Nothing offline can tell, so it
# is stated here: the first release's commit sets it True for good, and the release workflow
# refuses a tag while it is False (docs/releasing.md). Install hints and the workflow
# `init --github` writes print a pinned install from the index only when it is True.
RELEASED = False


def index_install_command(extra: str | None = None) -> str:
    """The pip command that installs this version from the package index, once RELEASED."""
    name = f"{DISTRIBUTION}[{extra}]" if extra else DISTRIBUTION
    return f"pip install '{name}=={__version__}'"


@functools.cache
def source_tree() -> Path | None:
    """The checkout this copy runs from (an editable install or the source itself), if any."""
    root = Path(__file__).resolve().parent.parent
    try:
        pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if f'name = "{DISTRIBUTION}"' in pyproject else None


def install_command(extra: str | None = None) -> str:
    """The pip command that installs this version with an extra (e.g. "report"): the text of
    every install hint, so that none names a source this version cannot come from.

    A copy that runs from a checkout is pointed at that checkout by its absolute path, so the
    command works from any directory and keeps the install editable; otherwise the package
    index once this version is released; otherwise a checkout of promptctl, from its root.
    """
    root = source_tree()
    if root is not None:
        return f"pip install -e {shlex.quote(f'{root}[{extra}]' if extra else str(root))}"
    if RELEASED:
        return index_install_command(extra)
    return f"pip install -e '.[{extra}]'" if extra else "pip install -e ."

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
