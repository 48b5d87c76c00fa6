"""The release workflow and the distribution checks it shares with .ci/run
(scripts/smoke_wheel.py: here its checks that need no build, no venv and no network)."""

from __future__ import annotations

import importlib.util
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from promptctl import __version__
from tests.helpers import REPO


def _smoke() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smoke_wheel", REPO / "scripts" / "smoke_wheel.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


smoke = _smoke()


def test_the_wheel_must_hold_the_report_templates_and_py_typed() -> None:
    files = smoke.package_files()
    for name in ("promptctl/py.typed", "promptctl/render/templates/report.css",
                 "promptctl/render/templates/run.html.j2", "promptctl/cli/app.py"):
        assert name in files


def _wheel(path: Path, names: set[str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name in sorted(names):
            archive.writestr(name, "")
        archive.writestr("promptctl_eval-1.0.dist-info/METADATA", "Name: promptctl-eval\nVersion: 1.0\n")
    return path


def test_a_wheel_with_every_package_file_passes(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "promptctl_eval-1.0-py3-none-any.whl", smoke.package_files())
    smoke.check_wheel_contents(wheel)
    assert smoke.wheel_version(wheel) == "1.0"


def test_a_wheel_without_a_template_fails(tmp_path: Path) -> None:
    missing = "promptctl/render/templates/report.css"
    wheel = _wheel(tmp_path / "promptctl_eval-1.0-py3-none-any.whl", smoke.package_files() - {missing})
    with pytest.raises(smoke.SmokeFailure, match=missing):
        smoke.check_wheel_contents(wheel)


def test_a_tag_that_names_a_released_version_passes() -> None:
    assert smoke.tag_problems("v1.2.0", "1.2.0", "1.2.0", True) == []


@pytest.mark.parametrize(("tag", "installed", "released", "says"), [
    ("v1.2.1", "1.2.0", True, "does not name the package's version 1.2.0"),
    ("1.2.0", "1.2.0", True, "does not name"),
    ("v1.2.0", "1.1.0", True, "__version__ is 1.1.0"),
    ("v1.2.0", "1.2.0", False, "RELEASED is False"),
])
def test_a_tag_that_is_not_a_release_is_refused(tag: str, installed: str, released: bool,
                                                says: str) -> None:
    [problem] = smoke.tag_problems(tag, "1.2.0", installed, released)
    assert says in problem


def test_the_package_names_one_version() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["version"] == __version__


def _release() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(
        (REPO / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8"))
    return document


def test_the_release_runs_on_version_tags_only() -> None:
    document = _release()
    # YAML 1.1 reads the key `on` as True; GitHub reads it as "on".
    trigger = document.get("on", document.get(True))
    assert trigger == {"push": {"tags": ["v*"]}}
    assert document["permissions"] == {"contents": "read"}


def test_the_release_checks_before_it_publishes_with_trusted_publishing() -> None:
    jobs = _release()["jobs"]
    runs = [s.get("run", "") for s in jobs["build"]["steps"]]
    assert "python -m build" in runs
    assert "twine check --strict dist/*" in runs
    assert 'python scripts/smoke_wheel.py dist --tag "$TAG"' in runs
    [tagged] = [s for s in jobs["build"]["steps"] if "smoke_wheel.py" in s.get("run", "")]
    assert tagged["env"]["TAG"] == "${{ github.ref_name }}"
    publish = jobs["publish"]
    assert publish["needs"] == "build"
    assert publish["environment"]["name"] == "pypi"
    assert publish["permissions"] == {"id-token": "write"}
    uses = [s.get("uses", "") for s in publish["steps"]]
    assert uses[-1] == "pypa/gh-action-pypi-publish@release/v1"
    # Trusted publishing: no token is passed to the upload.
    assert "with" not in publish["steps"][-1] and "secrets." not in str(publish)


def test_ci_builds_and_smoke_checks_the_wheel_too() -> None:
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.split("#")[0].strip() for line in script.splitlines()]
    for command in ("python -m build --quiet", "twine check --strict dist/*",
                    "python scripts/smoke_wheel.py dist"):
        assert command in lines
    assert lines.index("python -m build --quiet") > lines.index("lint-imports")
