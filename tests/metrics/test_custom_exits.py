"""User code cannot end a run: a scorer that calls sys.exit() or raises any BaseException, on
import or on call, is that scorer's error with its file and line, never a silent exit 0, a
traceback or a false gate failure. Genuine interrupts still interrupt."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest

from promptctl.metrics.custom import user_fault
from tests.fakeserver import FakeOpenAI
from tests.helpers import (
    ECHO_PROMPT,
    commit_all,
    git_identity,
    git_init,
    invoke,
    write_echo_project,
)

PROMPT = ECHO_PROMPT.replace(
    "metrics: [exact_match, format_validity]",
    "metrics:\n  - exact_match\n  - name: mine\n    custom: ../scorers/mine.py:score\n")

# What the scorer does on row r2 (on call) or at its line 3 (on import).
RAISES = {
    "sys.exit(0)": "import sys\nsys.exit(0)",
    "sys.exit()": "import sys\nsys.exit()",
    "raise SystemExit(3)": "raise SystemExit(3)",
    "a BaseException subclass": "class Stop(BaseException):\n    pass\nraise Stop('halt')",
    "GeneratorExit": "raise GeneratorExit('closed')",
    "CancelledError": "import asyncio\nraise asyncio.CancelledError()",
}


def scorer_raising_on_call(statement: str) -> str:
    body = textwrap.indent(statement, "        ")
    return f"def score(answer, expected, row):\n    if row['id'] == 'r2':\n{body}\n    return 1\n"


def scorer_raising_on_import(statement: str) -> str:
    return f"x = 1\ny = 2\n{statement}\ndef score(answer, expected, row):\n    return 1\n"


def make_project(root: Path, scorer: str) -> Path:
    write_echo_project(root, PROMPT)
    (root / "scorers").mkdir(exist_ok=True)
    (root / "scorers" / "mine.py").write_text(scorer, encoding="utf-8")
    return root


def last_line_of(text: str, needle: str) -> int:
    return max(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("case", list(RAISES))
def test_raised_on_call_is_that_rows_error(case: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           api: FakeOpenAI) -> None:
    scorer = scorer_raising_on_call(RAISES[case])
    root = make_project(tmp_path / "proj", scorer)
    monkeypatch.chdir(root)
    result = invoke("eval", "prompts/echo.yaml", "--json")
    (run,) = json.loads(result.stdout)["runs"]
    assert run["status"] == "complete"
    assert run["metrics"]["mine"]["n"] == 4  # the four other rows are scored
    (failed,) = run["scoring_errors"]["mine"]["rows"]
    assert failed["row_id"] == "r2"
    line = last_line_of(scorer, RAISES[case].splitlines()[-1].strip())
    assert failed["error"].endswith(f"(at scorers/mine.py:{line})"), failed["error"]
    name = RAISES[case].split("raise ")[-1].split("(")[0].strip()
    assert ("SystemExit" if "exit" in case else name.split(".")[-1]) in failed["error"]


@pytest.mark.parametrize("case", list(RAISES))
def test_raised_on_import_names_the_file_and_line(case: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  api: FakeOpenAI) -> None:
    scorer = scorer_raising_on_import(RAISES[case])
    root = make_project(tmp_path / "proj", scorer)
    monkeypatch.chdir(root)
    line = last_line_of(scorer, RAISES[case].splitlines()[-1].strip())
    for args in (["validate", "prompts/echo.yaml"], ["eval", "prompts/echo.yaml"],
                 ["eval", "prompts/echo.yaml", "--dry-run"]):
        result = invoke(*args, code=2)
        assert f"scorers/mine.py:{line}: the scorer failed while loading" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
    assert api.count == 0


def test_check_never_passes_silently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     api: FakeOpenAI) -> None:
    """The PR's scorer exits on import: exit 2 with the file and line, not exit 0 without a
    report; exiting on call: the reports are written and the row's error is in them."""
    git_identity(monkeypatch)
    root = make_project(git_init(tmp_path / "repo"), scorer_raising_on_call("return 1"))
    base = commit_all(root, "base")
    monkeypatch.chdir(root)
    (root / "scorers" / "mine.py").write_text(scorer_raising_on_import("import sys\nsys.exit(0)"),
                                              encoding="utf-8")
    (root / "prompts" / "echo.yaml").write_text(PROMPT.replace("Question", "Q"), encoding="utf-8")
    commit_all(root, "exits on import")
    report = tmp_path / "report.md"
    result = invoke("check", "--base", base, "--markdown", str(report), code=2)
    assert "scorers/mine.py:4: the scorer failed while loading: SystemExit" in result.stdout
    assert "SystemExit" in report.read_text(encoding="utf-8")  # the report is written
    report.unlink()
    (root / "scorers" / "mine.py").write_text(scorer_raising_on_call("import sys\nsys.exit(0)"),
                                              encoding="utf-8")
    commit_all(root, "exits on call")
    invoke("check", "--base", base, "--markdown", str(report))
    assert report.is_file() and "echo" in report.read_text(encoding="utf-8")


@pytest.mark.parametrize("raised", [SystemExit(0), SystemExit(None), GeneratorExit()])
def test_an_exit_from_inside_a_command_is_exit_4(raised: BaseException,
                                                 echo_project: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Whatever gets past a command's own handling: exit 4 with a traceback, never 0 or 1."""
    from promptctl.cli import app as cli
    from promptctl.cli import runs_cmd

    def leaves(*args: object, **kwargs: object) -> None:
        raise raised

    monkeypatch.setattr(runs_cmd, "open_project_store", leaves)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["runs"])
    assert exit_.value.code == cli.EXIT_BUG == 4
    err = capsys.readouterr().err
    assert "Traceback" in err and "not a verdict" in err


def test_genuine_interrupts_are_passed_on() -> None:
    assert not user_fault(KeyboardInterrupt())
    assert user_fault(SystemExit(0)) and user_fault(GeneratorExit())
    assert user_fault(asyncio.CancelledError())  # raised with no loop: the code's own

    async def cancelled_task() -> bool:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError as exc:
            return user_fault(exc)
        return True

    async def raised_by_code() -> bool:
        return user_fault(asyncio.CancelledError())

    assert asyncio.run(cancelled_task()) is False
    assert asyncio.run(raised_by_code()) is True
