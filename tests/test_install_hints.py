"""Install hints name a source this version can be installed from: its checkout, the package
index once released, else a checkout's root; and the README says the same."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import promptctl
from promptctl import RELEASED, __version__, index_install_command, install_command
from tests.helpers import REPO


def test_from_a_checkout_the_hint_installs_that_checkout_from_anywhere() -> None:
    assert promptctl.source_tree() == REPO
    assert shlex.split(install_command("report")) == ["pip", "install", "-e", f"{REPO}[report]"]
    assert shlex.split(install_command()) == ["pip", "install", "-e", str(REPO)]


def test_a_checkout_path_with_quotes_and_spaces_stays_one_argument(
        monkeypatch: pytest.MonkeyPatch) -> None:
    odd = Path("/src/it's mine")
    monkeypatch.setattr(promptctl, "source_tree", lambda: odd)
    assert shlex.split(install_command("local")) == ["pip", "install", "-e", f"{odd}[local]"]


@pytest.mark.parametrize("released", [False, True])
def test_outside_a_checkout_the_index_only_once_released(
        monkeypatch: pytest.MonkeyPatch, released: bool) -> None:
    monkeypatch.setattr(promptctl, "source_tree", lambda: None)
    monkeypatch.setattr(promptctl, "RELEASED", released)
    expected = (f"pip install 'promptctl-eval[postgres]=={__version__}'" if released
                else "pip install -e '.[postgres]'")
    assert install_command("postgres") == expected
    assert index_install_command("postgres") == f"pip install 'promptctl-eval[postgres]=={__version__}'"


def _source_tree_of_a_copy(tmp_path: Path, pyproject: str | None) -> str:
    """source_tree() as a copy of the package under tmp_path sees it (beside `pyproject`)."""
    shutil.copytree(REPO / "promptctl", tmp_path / "promptctl",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", "import promptctl; print(promptctl.source_tree())"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_copy_in_site_packages_has_no_source_tree(tmp_path: Path) -> None:
    assert _source_tree_of_a_copy(tmp_path, None) == "None"


def test_a_copy_beside_another_projects_pyproject_has_no_source_tree(tmp_path: Path) -> None:
    assert _source_tree_of_a_copy(tmp_path, '[project]\nname = "other"\n') == "None"


def test_a_copy_beside_promptctls_pyproject_is_a_source_tree(tmp_path: Path) -> None:
    found = _source_tree_of_a_copy(tmp_path, (REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert Path(found) == tmp_path.resolve()


# A pinned install from the index, written as a command (the workflow's comment shows one as
# what to write once the version is released: a line that starts with #).
PINNED = re.compile(r"^(?!\s*#).*pip install '?promptctl-eval\S*==", re.MULTILINE)


def test_the_readme_names_an_index_install_only_once_released() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    if RELEASED:
        assert "not on the package index yet" not in readme
    else:
        assert PINNED.findall(readme) == []
        assert "pip install -e '.[report]'" in readme


def test_the_pinned_pattern_finds_a_pinned_install() -> None:
    assert PINNED.findall("run: pip install 'promptctl-eval[report]==0.2.0'\n")
    assert not PINNED.findall("        #   run: pip install 'promptctl-eval[report]==0.2.0'\n")
