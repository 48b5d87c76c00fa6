"""Reports are never written through a symbolic link: a link committed in a pull request,
as the report's name or as a folder on the way to it, is refused with the fix, and the file
outside the repository it points at is untouched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from promptctl.render.files import LinkRefused, write_atomic
from tests import helpers
from tests.checkrepo import Repo, prompt_text, repo

__all__ = ["repo"]  # the fixture, imported for this module's tests

PRECIOUS = "do not replace me\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the repository, with a file a link may point at."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "victim.md").write_text(PRECIOUS, encoding="utf-8")
    return folder


def untouched(outside: Path) -> None:
    assert (outside / "victim.md").read_text(encoding="utf-8") == PRECIOUS
    assert sorted(p.name for p in outside.iterdir()) == ["victim.md"]


@pytest.mark.parametrize("option", ["--markdown", "--junit", "--html"])
def test_check_refuses_a_committed_link_as_the_report(option: str, repo: Repo,
                                                      outside: Path) -> None:
    (repo.root / "report.out").symlink_to(outside / "victim.md")
    repo.write("prompts/score.yaml", prompt_text(style="Reworded."))
    repo.commit("reword, and a link")
    result = helpers.invoke("check", option, "report.out", code=2)
    assert "report.out: the report path report.out is a symbolic link" in result.stderr
    assert "fix: remove the link" in result.stderr
    untouched(outside)


@pytest.mark.parametrize("option", ["--markdown", "--junit"])
def test_check_refuses_a_committed_link_as_a_folder(option: str, repo: Repo,
                                                    outside: Path) -> None:
    (repo.root / "reports").symlink_to(outside)
    repo.write("prompts/score.yaml", prompt_text(style="Reworded."))
    repo.commit("reword, and a linked folder")
    for path in ("reports/victim.md", "reports/new/report.md"):
        result = helpers.invoke("check", option, path, code=2)
        assert "the folder reports on the way to the report is a symbolic link" in result.stderr
    untouched(outside)


def test_report_and_the_step_summary_refuse_links(repo: Repo, outside: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (repo.root / "r.html").symlink_to(outside / "victim.md")
    run = helpers.eval_run("prompts/score.yaml")
    result = helpers.invoke("report", run["id"], "-o", "r.html", code=2)
    assert "is a symbolic link" in result.stderr
    summary = repo.root.parent / "summary.md"
    summary.symlink_to(outside / "victim.md")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    repo.write("prompts/score.yaml", prompt_text(style="Reworded."))
    repo.commit("reword")
    result = helpers.invoke("check", code=2)
    assert "summary.md is a symbolic link" in result.stderr
    untouched(outside)


def test_ordinary_paths_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "proj"
    (project / ".git").mkdir(parents=True)
    monkeypatch.chdir(project)
    write_atomic(Path("reports/deep/r.md"), "one\n")
    write_atomic(Path("reports/deep/r.md"), "two\n", append=True)
    assert (project / "reports/deep/r.md").read_text(encoding="utf-8") == "one\ntwo\n"
    # A link above the project (the project itself reached through one) is not the PR's.
    alias = tmp_path / "alias"
    alias.symlink_to(project)
    write_atomic(alias / "r2.md", "ok\n", root=alias)
    assert (project / "r2.md").read_text(encoding="utf-8") == "ok\n"
    # Outside any project: the folders are the user's own, the name still must not be a link.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "via").symlink_to(elsewhere)
    write_atomic(tmp_path / "via" / "r.md", "fine\n")
    assert (elsewhere / "r.md").read_text(encoding="utf-8") == "fine\n"
    (elsewhere / "l.md").symlink_to(elsewhere / "r.md")
    with pytest.raises(LinkRefused):
        write_atomic(elsewhere / "l.md", "no\n")
    assert os.path.islink(elsewhere / "l.md")
