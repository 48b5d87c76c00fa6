"""The package's layers: the import-linter contracts of pyproject.toml, and imports made
inside functions (which hide a dependency from a reader of the module's header)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "promptctl"


def test_import_contracts_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    cli = pytest.importorskip("importlinter.cli")
    code = cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True,
                            no_logo=True)
    assert code == 0, capsys.readouterr().out


# Imports of promptctl's own modules inside functions, outside cli/ (which loads each command's
# modules when the command runs, so `promptctl --help` stays instant). Keyed by the importing
# file and the imported module; each says why the import cannot be at the top of the file.
ALLOWED: dict[tuple[str, str], str] = {
    ("promptctl/store/__init__.py", "promptctl.store.postgres"):
        "psycopg is an optional extra: the PostgreSQL back-end loads only for a postgresql:// URL",
    ("promptctl/providers/openai.py", "promptctl.providers._http"):
        "it subclasses the SDK's HTTP clients, so it loads the SDK: only when a provider opens",
    ("promptctl/sampling.py", "promptctl.stats"):
        "stats loads numpy, and prompts import sampling: only a sampled run's summary needs it",
}



def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The modules an import statement names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".")
        base = base[:len(base) - node.level + (1 if is_package else 0)]
        return [".".join([*base, *([node.module] if node.module else [])])]
    return [node.module or ""]


def function_level_imports() -> set[tuple[str, str]]:
    """(file, imported module) of every import of promptctl inside a function, outside cli/."""
    found: set[tuple[str, str]] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("promptctl/cli/"):
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    for name in _imported(node, module, is_package):
                        if name == "promptctl" or name.startswith("promptctl."):
                            found.add((rel, name))
    return found


def test_the_walk_sees_imports_inside_functions() -> None:
    assert ("promptctl/store/__init__.py", "promptctl.store.postgres") in function_level_imports()


def test_imports_inside_functions_are_only_the_listed_ones() -> None:
    found = function_level_imports()
    allowed = dict(ALLOWED)
    unlisted = sorted(found - set(allowed))
    assert not unlisted, ("import these at the top of the file (or, for a heavy or optional "
                          f"library's module, list it in ALLOWED with the reason): {unlisted}")
    stale = sorted(set(allowed) - found)
    assert not stale, f"no longer imported inside a function: delete from the lists {stale}"


def test_every_allowed_import_says_why() -> None:
    assert all(reason.strip() for reason in ALLOWED.values())
