"""One set of characters is shown as visible marks by every renderer: the terminal and
plain text, Markdown, the HTML report and the report's script (VISIBLE_MARKS)."""

from __future__ import annotations

import re

from promptctl.render import html, inert
from promptctl.render.inert import VISIBLE_MARKS

# Every code point where a renderer could plausibly differ: the first planes' controls,
# punctuation and format characters, the surrogates, the specials and the tag characters.
CANDIDATES = [chr(c) for c in (*range(0, 0x3100), *range(0xD800, 0xE000), *range(0xFE00, 0x10000),
                               *range(0xE0000, 0xE0100))]
TABLE = {chr(c) for first, last, _ in VISIBLE_MARKS for c in range(first, last + 1)}
ESCAPED = re.compile(r"\\\\(r|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def marked_in_html(char: str) -> bool:
    return f'<span class="ctl">U+{ord(char):04X}</span>' in html.text(char)


def marked_in_terminal(char: str) -> bool:
    return inert.text(char) != char and char not in inert.text(char)


def marked_in_markdown(char: str) -> bool:
    return ESCAPED.fullmatch(inert.markdown(char)) is not None


def test_html_terminal_and_markdown_mark_the_same_characters() -> None:
    by_html = {c for c in CANDIDATES if marked_in_html(c)}
    by_terminal = {c for c in CANDIDATES if marked_in_terminal(c)}
    by_markdown = {c for c in CANDIDATES if marked_in_markdown(c)}
    assert by_html == by_terminal == by_markdown == TABLE
    # Layout is kept where a layout allows it, and marked where it does not.
    assert inert.text("a\tb\nc") == "a\tb\nc" and inert.text("a\tb\nc", layout=False) == "a\\tb\\nc"
    assert html.text("a\tb\nc") == "a\tb\nc"


def test_the_marks_read_the_same_everywhere() -> None:
    assert inert.text("\x1b\u202e\U000e0041") == "\\x1b\\u202e\\U000e0041"
    assert html.text("\x1b\u202e\U000e0041") == ('<span class="ctl">U+001B</span><span class="ctl">'
                                                 'U+202E</span><span class="ctl">U+E0041</span>')
    assert html.label("a\u202eb") == "a<U+202E>b"


def test_chart_text_json_island_and_json_output_leave_no_marked_character_raw() -> None:
    every = "".join(sorted(TABLE))
    assert not inert.MARKED.search(html.json_island({"t": every}))
    in_xml = "".join(c for c in sorted(TABLE) if ord(c) >= 0x7F and not 0xD800 <= ord(c) < 0xE000
                     and c not in "\ufffe\uffff")  # what an XML document can hold
    svg = html.sanitize_svg(f'<svg xmlns="http://www.w3.org/2000/svg"><text>{in_xml}</text></svg>', "c")
    assert svg == f"<svg><text>{'?' * len(in_xml)}</text></svg>"
    # JSON output escapes the marked characters a \u escape can spell (C0 it escapes itself).
    unsafe = re.compile(f"[{inert.UNSAFE_BEYOND_C0}]")
    assert {c for c in CANDIDATES if unsafe.match(c)} == {c for c in TABLE
                                                           if 0x1F < ord(c) <= 0xFFFF}
