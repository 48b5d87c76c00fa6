"""A prompt and its eval set as they were at a git ref, read from git's object store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from promptctl.evalsets import EvalSet, load_evalset_bytes
from promptctl.gitinfo import GitState, read_at_ref
from promptctl.prompts import Prompt, parse_prompt


@dataclass(frozen=True)
class AtRef:
    """What `--ref` evaluates: the prompt, its eval set (when it names one) and the commit."""

    prompt: Prompt
    evalset: EvalSet | None
    git: GitState


def prompt_at_ref(path: Path, ref: str, *, with_evalset: bool = True) -> AtRef:
    """Load `path` as committed at `ref`, and its eval set at the same commit.

    Neither the work tree nor the index is touched, so this is safe in a dirty
    checkout and in CI.
    """
    data, commit = read_at_ref(path, ref)
    prompt = parse_prompt(data, path)
    evalset = None
    if with_evalset and prompt.evalset is not None:
        set_data, _ = read_at_ref(prompt.evalset, commit)
        evalset = load_evalset_bytes(set_data, prompt.evalset)
    root = _root(path)
    return AtRef(prompt, evalset, GitState(root=root, commit=commit, dirty=False, branch=None))


def _root(path: Path) -> Path | None:
    for candidate in (path.resolve().parent, *path.resolve().parents):
        if (candidate / ".git").exists():
            return candidate
    return None
