"""Nothing from data acts on the terminal: escape sequences in model output, server errors,
eval sets, commit subjects and authors, model names and file names are shown as visible
escapes by every command, in-process and in a real subprocess with colours on."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.table import Table
from rich.text import Text

from promptctl.render import inert
from promptctl.render.terminal import InertConsole
from tests import helpers
from tests.fakeserver import FakeOpenAI
from tests.render import hostile
from tests.render.hostile import ACTS_ON_TERMINAL, IN_ARGV, NOT_SGR, SGR, TERMINAL


def assert_inert(*outputs: str) -> None:
    for out in outputs:
        found = ACTS_ON_TERMINAL.search(out)
        assert found is None, f"{found.group()!r} reached the terminal in:\n{out!r}"


@pytest.mark.parametrize("name", TERMINAL)
def test_text_shows_every_control_character_as_an_escape(name: str) -> None:
    shown = inert.text(TERMINAL[name])
    assert ACTS_ON_TERMINAL.search(shown) is None
    shown.encode("utf-8")  # a lone surrogate is written out, not a crash
    assert inert.text(shown) == shown  # idempotent: already inert text is left alone


def test_text_keeps_layout_and_shows_what_it_replaced() -> None:
    assert inert.text("a\tb\nc\r\nd") == "a\tb\nc\nd"
    assert inert.text("a\tb\nc", layout=False) == "a\\tb\\nc"
    assert inert.text("x\x1b]0;t\x07\rY\x9b\u202e\ud800") == "x\\x1b]0;t\\x07\\rY\\x9b\\u202e\\ud800"
    # Structured values as their JSON, which escapes C0 itself.
    assert inert.text({"k": "\x1b\x9b"}) == '{"k": "\\u001b\\x9b"}'


def _console(**kwargs: object) -> tuple[InertConsole, io.StringIO]:
    buffer = io.StringIO()
    return InertConsole(file=buffer, width=200, **kwargs), buffer  # type: ignore[arg-type]


@pytest.mark.parametrize("name", TERMINAL)
def test_console_makes_every_way_of_printing_inert(name: str) -> None:
    """Strings with and without markup, table cells, titles and ready-made Text objects, on a
    colour terminal: only SGR colour sequences come out, and no hyperlink."""
    payload = TERMINAL[name]
    con, buffer = _console(force_terminal=True, color_system="truecolor")
    con.print(payload)
    con.print(payload, markup=False)
    con.print(f"[bold]{payload}[/]")
    con.print(Text(payload, style="bold link https://evil.invalid"))
    con.print(Text.from_markup(f"[link=https://evil.invalid]{payload}[/link]"))
    table = Table(title=payload)
    table.add_column(payload)
    table.add_row(payload)
    table.add_row(Text(payload))
    con.print(table)
    out = buffer.getvalue()
    assert NOT_SGR.search(out) is None, repr(out)
    assert_inert(_strip_sgr(out))
    assert "evil.invalid" not in out or name in ("osc8-hyperlink", "rich-markup")
    assert "\x1b]8" not in out


def test_console_keeps_table_columns_aligned() -> None:
    """Escapes are made visible before rich measures a cell, so a row with a payload is as
    wide as the others."""
    con, buffer = _console(color_system=None)
    table = Table(show_edge=False)
    table.add_column("a")
    table.add_column("b")
    table.add_row("\x1b[2J\x1b[H", "end")
    table.add_row("0123456789012345678", "end")
    con.print(table)
    lines = [line for line in buffer.getvalue().splitlines() if line.rstrip().endswith("end")]
    assert len(lines) == 2 and len({line.index("end") for line in lines}) == 1, lines


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         fake_openai: FakeOpenAI) -> helpers.GitRepo:
    monkeypatch.setenv("COLUMNS", "400")  # cells wide enough that no sentence is folded
    return hostile.project(tmp_path, monkeypatch, fake_openai)


MODEL = "gpt-4o-mini" + TERMINAL["osc0-window-title"] + TERMINAL["c1-csi"] + "\u202e"


def test_every_command_prints_hostile_data_inertly(repo: helpers.GitRepo,
                                                   fake_openai: FakeOpenAI) -> None:
    """eval's summary and error, runs, show, history, diff (table and Markdown), and the
    error messages of a command given a hostile argument."""
    hostile.fail_first_request(fake_openai)
    first = helpers.invoke("eval", "prompts/hostile.yaml", "--concurrency", "1", "--model",
                           MODEL, code=3)
    assert_inert(first.stdout, first.stderr)
    assert "gpt-4o-mini\\x1b]0;pwned\\x07\\x9b2J" in first.stdout  # the model, shown inert
    [run_a] = json.loads(helpers.invoke("runs", "--json").stdout)["runs"]
    second = helpers.invoke("eval", "prompts/hostile.yaml", "--no-cache", "--concurrency", "1")
    assert_inert(second.stdout, second.stderr)
    run_b = json.loads(helpers.invoke("runs", "--json", "--limit", "1").stdout)["runs"][0]

    shown = helpers.invoke("show", run_a["id"])
    assert_inert(shown.stdout, shown.stderr)
    # What the data said is shown, as escapes, not dropped.
    for seen in ("\\x1b]0;pwned\\x07", "\\x9b2J", "all good\\rFAILED!!", "\\u202eevil",
                 "\\x07\\x00\\x7f", "[link=https://evil.invalid]x[/link]",
                 "HTTP 400: bad request", "no answer: the pattern did not match"):
        assert seen in shown.stdout, seen

    history = helpers.invoke("history", "hostile")
    assert_inert(history.stdout, history.stderr)
    assert "Mallory \\x1b]0;pwned\\x07" in history.stdout
    assert "subject \\x1b]0;pwned\\x07" in history.stdout
    for args in (["runs"], ["diff", run_a["id"], run_b["id"]],
                 ["diff", run_a["id"], run_b["id"], "--markdown"]):
        result = helpers.invoke(*args)
        assert_inert(result.stdout, result.stderr)
    for args in (["show", IN_ARGV], ["history", IN_ARGV, "-m", IN_ARGV],
                 ["diff", IN_ARGV, run_b["id"]], ["eval", IN_ARGV]):
        result = helpers.run_cli(*args)
        assert result.exit_code in (0, 2), (args, result.stdout, result.stderr)
        assert_inert(result.stdout, result.stderr)
        assert "\\x1b]0;pwned\\x07" in result.stdout + result.stderr, args


def _strip_sgr(text: str) -> str:
    return SGR.sub("", text)


def test_a_real_process_with_colours_sends_only_colour_sequences(
        repo: helpers.GitRepo, fake_openai: FakeOpenAI) -> None:
    """The CLI in its own interpreter, on what rich takes for a colour terminal: the only
    escape sequences on stdout and stderr are rich's colours."""
    hostile.fail_first_request(fake_openai)
    run = helpers.eval_run("prompts/hostile.yaml", "--concurrency", "1", code=3)
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(FORCE_COLOR="1", TERM="xterm-256color")
    for args in (["show", run["id"]], ["history", "hostile"], ["show", IN_ARGV]):
        done = subprocess.run([sys.executable, "-c", helpers.CLI_SCRIPT, *args],
                              capture_output=True, env=env, timeout=120, check=False)
        out, err = done.stdout.decode("utf-8"), done.stderr.decode("utf-8")
        assert done.returncode in (0, 2), err
        assert "\x1b[" in out + err, "colours were expected, so that the check means something"
        for text in (out, err):
            assert NOT_SGR.search(text) is None, repr(text)
            assert_inert(_strip_sgr(text))


def test_check_and_diff_tables_show_hostile_results_inertly() -> None:
    """Every value from data in a check or diff result (prompt, metric and model names,
    rows, answers, messages, warnings) is shown, as escapes, on a colour terminal."""
    from promptctl.render.check import check_terminal
    from promptctl.render.compare import diff_terminal

    for name, payload in TERMINAL.items():
        con, buffer = _console(force_terminal=True, color_system="truecolor")
        check_terminal(con, hostile.check_result(payload))
        diff_terminal(con, hostile.diff_result(payload))
        out = buffer.getvalue()
        assert NOT_SGR.search(out) is None, (name, out)
        assert_inert(_strip_sgr(out))
        assert "\x1b]8" not in out
    con, buffer = _console(color_system=None)
    check_terminal(con, hostile.check_result("a\x1b]0;t\x07b"))
    assert buffer.getvalue().count("a\\x1b]0;t\\x07b") >= 10
