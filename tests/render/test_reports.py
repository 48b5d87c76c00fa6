"""Report files (`check --markdown`, `--junit`, $GITHUB_STEP_SUMMARY) are written whole or not at
all, and a hostile server or model cannot break them: the real CLI against the fake server."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from promptctl.render.files import LinkRefused, write_atomic
from tests import helpers
from tests.checkrepo import Repo, prompt_text
from tests.fakeserver import FakeOpenAI, error_body
from tests.render import gfm
from tests.render.hostile import ACTS_ON_TERMINAL, EVERY_ESCAPE

SCHEMA = xmlschema.XMLSchema(Path(__file__).parents[1] / "data" / "jenkins-junit.xsd")


def test_write_atomic_writes_appends_and_keeps_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "report.md"
    write_atomic(target, "one\n")
    assert target.read_text(encoding="utf-8") == "one\n"
    target.chmod(0o640)
    write_atomic(target, "two\n", append=True)
    assert target.read_text(encoding="utf-8") == "one\ntwo\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    link = tmp_path / "link.md"
    link.symlink_to(target)
    with pytest.raises(LinkRefused):  # never through a link (tests/render/test_report_links.py)
        write_atomic(link, "three\n", append=True)
    assert link.is_symlink() and target.read_text(encoding="utf-8") == "one\ntwo\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.md"]  # no temp left


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_a_failure_mid_write_leaves_the_old_file_whole(tmp_path: Path, where: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills (the data never reaches it) or the process dies before the rename:
    the file still holds what it held, and no temporary file is left behind."""
    target = tmp_path / "summary.md"
    target.write_text("earlier step\n", encoding="utf-8")

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, where, disk_full)
    with pytest.raises(OSError):
        write_atomic(target, "x" * 100_000, append=True)
    monkeypatch.undo()
    assert target.read_text(encoding="utf-8") == "earlier step\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]


def test_text_that_cannot_be_encoded_touches_nothing(tmp_path: Path) -> None:
    target = tmp_path / "r.md"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "\ud800")
    assert target.read_text(encoding="utf-8") == "old"


def test_a_text_in_pieces_is_written_as_they_come_or_not_at_all(tmp_path: Path) -> None:
    from promptctl.render.files import BLOCK

    target = tmp_path / "report.html"
    target.write_text("old", encoding="utf-8")
    n = 3 * BLOCK // 10 + 1
    written: list[int] = []

    def pieces(fail: bool = False) -> Any:
        for _ in range(n):
            yield "é" * 10  # two bytes each: blocks are cut by characters, written whole
        [tmp] = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        written.append(tmp.stat().st_size)
        if fail:
            raise RuntimeError("the store went away")

    with pytest.raises(RuntimeError, match="went away"):
        write_atomic(target, pieces(fail=True))
    # Two blocks of the three were on disk before the last piece came: nothing waited for
    # the whole.
    [size] = written
    assert 2 * 2 * BLOCK <= size < 2 * 10 * n
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp left

    write_atomic(target, pieces())
    assert target.read_text(encoding="utf-8") == "é" * 10 * n
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, iter(["fine", "\ud800"]))
    assert target.read_text(encoding="utf-8") == "é" * 10 * n


def test_check_with_a_hostile_server_error_writes_whole_inert_reports(
        repo: Repo, fake_openai: FakeOpenAI, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider error whose text holds escapes and a lone surrogate: exit 3 (never 1, which
    CI takes for a worse prompt), and every report is complete, valid and inert."""
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    repo.write("prompts/score.yaml", prompt_text(style="Reworded."))
    repo.commit("reword")
    fake_openai.fail_next(1000, status=401,
                          body=error_body(401, f"no such key \ud800 {EVERY_ESCAPE} @octocat"))
    md, junit = tmp_path / "r.md", tmp_path / "j.xml"
    result = helpers.invoke("check", "--markdown", str(md), "--junit", str(junit), code=3)
    for out in (result.stdout, result.stderr):
        assert ACTS_ON_TERMINAL.search(out) is None, out
    # The provider replaces a lone surrogate (not valid UTF-8) when it reads the error.
    assert "no such key \ufffd" in result.stdout

    report = md.read_text(encoding="utf-8")
    assert ACTS_ON_TERMINAL.search(report) is None
    html = gfm.cmark(report)
    assert set(html.tags) <= gfm.REPORT_TAGS, html.html
    assert "refused the credentials" in html.text and "no such key \ufffd" in html.text
    assert summary.read_text(encoding="utf-8") == "earlier step\n" + report + "\n"
    SCHEMA.validate(str(junit))
    assert ACTS_ON_TERMINAL.search(junit.read_text(encoding="utf-8")) is None
