"""Markdown reports render on GitHub as the literal text of their data: each hostile payload is
rendered with cmark-gfm (GitHub's parser) and markdown-it-py (GFM preset, linkify), and the
HTML is read back: no tag the report itself did not write, tables as wide as their header,
the text as it was."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

import pytest

from promptctl.render import inert
from promptctl.render.compare import diff_markdown
from promptctl.render.markdown import check_markdown
from tests.render import gfm, hostile
from tests.render.hostile import ACTS_ON_TERMINAL, MARKDOWN, TERMINAL

PAYLOADS = {**MARKDOWN, **{f"terminal-{k}": v for k, v in TERMINAL.items()}}
Render = Callable[[str], gfm.Html]

# What GitHub links or mentions in text after rendering: a mention or e-mail, an issue
# reference, a URL scheme, a www. host, an emoji shortcode.
LINKED_BY_GITHUB = re.compile(r"@\w|#\d|://|(?i:www)\.|:([\w+-]*[A-Za-z][\w+-]*|[+-]1|100):")


def expected_text(payload: str) -> str:
    """What a reader should see: the payload on one line, control characters as escapes."""
    return " ".join(inert.text(payload).split())


@pytest.mark.parametrize("renderer", gfm.RENDERERS)
@pytest.mark.parametrize("name", PAYLOADS)
def test_one_value_is_literal_text_wherever_it_stands(name: str, renderer: str) -> None:
    """In a table cell, inside <code>, in a heading, a list item and a block quote."""
    shown = inert.markdown(PAYLOADS[name])
    doc = (f"### {shown}\n\n| a | b |\n|---|---|\n| {shown} | <code>{shown}</code> |\n\n"
           f"- **label**: {shown}\n\n> **error:** {shown}\n")
    html = gfm.RENDERERS[renderer](doc)
    assert html.tags == ["h3", "table", "thead", "tr", "th", "th", "tbody", "tr", "td", "td",
                         "code", "ul", "li", "strong", "blockquote", "p", "strong"], html.html
    want = expected_text(PAYLOADS[name])
    assert [gfm.visible(c) for c in html.rows[1]] == [want, want]
    assert gfm.visible(html.text).count(want) == 5, html.html
    assert LINKED_BY_GITHUB.search(html.text) is None, html.text
    assert ACTS_ON_TERMINAL.search(doc) is None


def test_entities_and_backslashes_stay_as_typed() -> None:
    html = gfm.cmark(inert.markdown("&lt;b&gt; &#60; &amp; a\\*b\\ c"))
    assert gfm.visible(html.text).strip() == "&lt;b&gt; &#60; &amp; a\\*b\\ c"


def test_a_long_value_is_cut_before_it_is_escaped() -> None:
    shown = inert.markdown("*" * 500, limit=80)
    assert shown == "\\*" * 79 + "…"
    assert gfm.cmark(shown).text.strip() == "*" * 79 + "…"


def _structure(render: Render, markdown: str) -> list[str]:
    return render(markdown).tags


def harmless_twin(payload: str) -> str:
    """A harmless word on each line where `payload` has text: a message of several lines
    is quoted as several paragraphs, which is its shape, not the payload's doing."""
    return "\n".join("harmless" if line.strip() else "" for line in payload.split("\n"))


@pytest.mark.parametrize("renderer", gfm.RENDERERS)
@pytest.mark.parametrize("name", PAYLOADS)
def test_check_report_keeps_its_shape_whatever_the_data(name: str, renderer: str) -> None:
    """The report of a check whose every value from data is a payload has exactly the
    structure (the same tags in the same order) of the report with a harmless word there,
    and its tables stay as wide as their header."""
    render = gfm.RENDERERS[renderer]
    report = check_markdown(hostile.check_result(PAYLOADS[name]))
    assert _structure(render, report) == _structure(
        render, check_markdown(hostile.check_result(harmless_twin(PAYLOADS[name])))), report
    html = render(report)
    for table in html.tables:
        assert {len(row) for row in table} == {len(table[0])}, table
    assert LINKED_BY_GITHUB.search(html.text) is None, html.text
    assert ACTS_ON_TERMINAL.search(report) is None
    assert expected_text(PAYLOADS[name])[:40] in gfm.visible(html.text)


@pytest.mark.parametrize("renderer", gfm.RENDERERS)
@pytest.mark.parametrize("name", PAYLOADS)
def test_diff_report_keeps_its_shape_whatever_the_data(name: str, renderer: str) -> None:
    render = gfm.RENDERERS[renderer]
    report = diff_markdown(hostile.diff_result(PAYLOADS[name]))
    assert _structure(render, report) == _structure(
        render, diff_markdown(hostile.diff_result("harmless"))), report
    html = render(report)
    for table in html.tables:
        assert {len(row) for row in table} == {len(table[0])}, table
    assert LINKED_BY_GITHUB.search(html.text) is None, html.text
    assert ACTS_ON_TERMINAL.search(report) is None


def test_an_error_and_its_fix_are_two_paragraphs() -> None:
    report = check_markdown(hostile.check_result("x"))
    assert not any("error:" in line and "fix:" in line for line in report.splitlines())
    assert not any("failure:" in line and "fix:" in line for line in report.splitlines())
    html = gfm.cmark(report)
    assert re.search(r"<blockquote>\s*<p><strong>provider failure:</strong> prompts/x\.yaml:3: "
                     r"server said x</p>\s*<p><strong>fix:</strong> x</p>\s*</blockquote>",
                     html.html), html.html


def test_a_lone_surrogate_is_shown_not_a_crash() -> None:
    report = check_markdown(hostile.check_result("bad \ud800 text"))
    report.encode("utf-8")
    assert "bad \\\\ud800 text" in report


def test_a_reused_current_run_says_so() -> None:
    result = hostile.check_result("x")
    assert "stored, reused" not in check_markdown(result)
    reused = replace(result.prompts[0], current_source="stored")
    result = replace(result, prompts=(reused, *result.prompts[1:]))
    assert "current run <code>x</code> (stored, reused)" in check_markdown(result)
