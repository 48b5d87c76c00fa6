"""The project a command works in: its root, its promptctl.yaml, the files that belong to it.

One rule, for every command: the project is the git work tree that contains the current
directory (outside git, the current directory itself). Its promptctl.yaml and its store
are the ones used, whichever files a command names, so `eval` and `runs` run from the
same directory always see the same runs. A prompt file that belongs to another git work
tree (a submodule, a nested repository) is refused: its runs would be keyed by commits
of a repository this project's history does not hold.
"""

from __future__ import annotations

from pathlib import Path

from promptctl.config import Config, load_config
from promptctl.errors import InputError, set_display_root
from promptctl.gitinfo import work_tree

# The project layout: prompt files live in prompts/, pipeline files in pipelines/ (both are
# targets: evaluated, compared and gated alike), eval sets in evalsets/.
PROMPTS_DIR = "prompts"
PIPELINES_DIR = "pipelines"
AGENTS_DIR = "agents"
EVALSETS_DIR = "evalsets"
TARGET_DIRS = (PROMPTS_DIR, PIPELINES_DIR, AGENTS_DIR)
TARGET_SUFFIXES = (".yaml", ".yml")


def is_target_file(path: Path) -> bool:
    """A file a target folder holds as a prompt or pipeline (by its extension)."""
    return path.is_file() and path.suffix.lower() in TARGET_SUFFIXES


def target_files(root: Path) -> list[Path]:
    """The prompt files of prompts/, then the pipeline files of pipelines/, each folder sorted."""
    out: list[Path] = []
    for folder in TARGET_DIRS:
        if (root / folder).is_dir():
            out += sorted(p for p in (root / folder).iterdir() if is_target_file(p))
    return out


def find_root(cwd: Path | None = None) -> Path:
    """The project root: the git work tree containing `cwd` (default: the current
    directory), else `cwd` itself."""
    here = (cwd or Path.cwd()).resolve()
    return work_tree(here) or here


def open_project(cwd: Path | None = None) -> Config:
    """The project's configuration (promptctl.yaml at its root, if any); messages from now
    on show paths relative to its root."""
    root = find_root(cwd)
    set_display_root(root)
    return load_config(root)


def project_config(cwd: Path | None = None) -> Config:
    """The configuration of the project containing `cwd` (default: the current directory),
    leaving how paths are shown as it is."""
    return load_config(find_root(cwd))


def check_belongs(path: Path, config: Config) -> None:
    """Refuse a prompt or pipeline file that lives in another git work tree."""
    if not path.exists():
        return  # the loader says "not found" with the path as given
    owner = work_tree(path.resolve())
    if owner is None or owner == config.root:
        return
    try:
        inside = owner.relative_to(config.root).as_posix()
    except ValueError:
        inside = None
    where = f"the git repository at {inside}/ (a submodule or nested repository)" if inside \
        else f"another git repository ({owner})"
    raise InputError(f"this file belongs to {where}, not to the project at {config.root}",
                     file=path, fix=f"run promptctl from inside that repository: cd {owner}")


def relative(path: Path | None, root: Path) -> str | None:
    """`path` as stored and shown: normalised, relative to the project root when inside it."""
    if path is None:
        return None
    resolved = path.resolve()
    try:
        return resolved.relative_to(root).as_posix()
    except ValueError:
        return resolved.as_posix()
