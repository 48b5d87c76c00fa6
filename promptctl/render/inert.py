"""Untrusted text made inert, one function per kind of output.

What promptctl prints comes from places it does not control: completions, server
error bodies, eval sets, file names, git subjects and authors, and the prompt files
of a pull request (prompt, metric and model names). A terminal acts on escape
sequences (window title, OSC 8 links, OSC 52 clipboard writes, clearing the
screen); GitHub renders Markdown in a job summary or a PR comment (images, links,
mentions). Every value from data passes through the function here for its output:

- `text`: terminal and plain text (also JUnit's XML text): control characters shown as
  visible escapes such as `\\x1b`;
- `markdown`: literal text in GitHub-flavoured Markdown, whatever it contains.

Both also mask the secrets in use (`promptctl.redact`). JSON output keeps the exact
text: see `promptctl.render.jsonout.dumps`.

Which characters are shown as marks is decided once, in `VISIBLE_MARKS`: these functions
write them as escapes (`\\x1b`), the HTML report (`promptctl.render.html`, and its page
script) as `U+001B` marks.
"""

from __future__ import annotations

import json
import re
from typing import Any

from promptctl.redact import redact

# The characters every renderer (terminal, Markdown, HTML) shows as a visible mark instead of
# passing them on, as (first, last, what) code point ranges. They act on a terminal or on a
# reader instead of showing, hide text, or cannot be written. Tab and newline are layout:
# each renderer keeps them where its layout allows. U+2060 (WORD JOINER) is left out: it
# hides nothing, and `markdown` below inserts it on purpose.
VISIBLE_MARKS: tuple[tuple[int, int, str], ...] = (
    (0x00, 0x08, "C0 controls before tab"),
    (0x0B, 0x1F, "C0 controls after newline: vertical tab, form feed, CR, escape, ..."),
    (0x7F, 0x9F, "DEL and the C1 controls (U+009B alone is a CSI to many terminals)"),
    (0x061C, 0x061C, "arabic letter mark (bidi)"),
    (0x200B, 0x200B, "zero width space"),
    (0x200E, 0x200F, "left-to-right and right-to-left marks (bidi)"),
    (0x2028, 0x2029, "line and paragraph separators"),
    (0x202A, 0x202E, "bidi embeddings and overrides"),
    (0x2066, 0x2069, "bidi isolates"),
    (0xD800, 0xDFFF, "lone surrogates: no encoding can write them"),
    (0xFEFF, 0xFEFF, "byte order mark (zero width no-break space)"),
    (0xFFFE, 0xFFFF, "the two non-characters XML refuses"),
    (0xE0000, 0xE007F, "tag characters, which spell hidden ASCII"),
)


def _escape(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _char_class(ranges: tuple[tuple[int, int, str], ...]) -> str:
    """`ranges` as the body of a regular expression character class (inside `[...]`)."""
    return "".join(_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b, _ in ranges)


MARKED_CLASS = _char_class(VISIBLE_MARKS)
MARKED = re.compile(f"[{MARKED_CLASS}]")

# What JSON output writes as \u escapes (see jsonout.dumps): the marked characters beyond C0
# (which JSON escapes itself) that a \u escape can spell, that is in the Basic Multilingual
# Plane. They parse back to the same text.
UNSAFE_BEYOND_C0 = _char_class(tuple(r for r in VISIBLE_MARKS if r[0] > 0x1F and r[1] <= 0xFFFF))


def marks_js_class() -> str:
    """VISIBLE_MARKS as a JavaScript character class, for a regular expression with the `u` flag."""
    def one(code: int) -> str:
        return f"\\u{{{code:x}}}"
    return "[" + "".join(one(a) if a == b else f"{one(a)}-{one(b)}"
                         for a, b, _ in VISIBLE_MARKS) + "]"


def mark_name(char: str) -> str:
    """A marked character by its code point, as the HTML report shows it: `U+202E`."""
    return f"U+{ord(char):04X}"


_CONTROL_OR_LAYOUT = re.compile(f"[\t\n{MARKED_CLASS}]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def as_text(value: Any) -> str:
    """A value as the text a reader sees: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:  # NaN or infinity somewhere inside
        return str(value)


def text(value: Any, *, layout: bool = True) -> str:
    """`value` safe for a terminal, a log or an XML text node: secrets masked, control
    characters shown as escapes (`\\x1b`, `\\u202e`). With `layout`, newlines and tabs
    stay; a CRLF line end reads as a newline, a bare CR (which overwrites a line) does not."""
    raw = redact(as_text(value))
    if layout:
        return MARKED.sub(_visible, raw.replace("\r\n", "\n"))
    return _CONTROL_OR_LAYOUT.sub(_visible, raw)


def shorten(value: str, limit: int | None) -> str:
    """`value` cut to `limit` characters, an ellipsis marking the cut."""
    if limit is None or len(value) <= limit:
        return value
    return value[: max(limit - 1, 0)] + "…"


# Markdown: every ASCII punctuation character backslash-escaped is literal in CommonMark
# and GFM (no emphasis, link, image, code span, HTML, entity, heading, list, table pipe,
# footnote), and also inside inline HTML such as <code>, whose content GitHub parses as
# Markdown. What GitHub links without any punctuation of its own is broken with a WORD
# JOINER (U+2060, invisible, and not a character any of these patterns accepts): after
# every @ (mentions, e-mail autolinks), after # before a digit (issue references),
# after the colon of `scheme://` (URL autolinks), between `www` and its dot (www autolinks),
# and after the colon that opens an emoji shortcode.
_MD_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_WORD_JOINER = "\u2060"
# An emoji name: one with a letter (`smile`, `8ball`), or one of the few without
# (`+1`, `-1`, `100`, `1234`); `file.yaml:3:` is a place in a file, left alone.
_SHORTCODE = r"[\w+-]*[A-Za-z][\w+-]*|[+-]1|100|1234"
_LINKED = re.compile(rf"@|#(?=\d)|:(?=/)|(?i:www)(?=\.)|:(?=(?:{_SHORTCODE}):)")


def markdown(value: Any, limit: int | None = None) -> str:
    """`value` as literal text in GitHub-flavoured Markdown, on one line (safe in a table
    cell, a heading, a list item or inline HTML); at most `limit` characters of it shown.

    Secrets are masked and control characters shown as escapes first, whitespace runs
    (newlines too) become one space, then nothing in it can render as anything but text.
    """
    shown = shorten(" ".join(text(value).split()), limit)
    joined = _LINKED.sub(lambda m: m.group() + _WORD_JOINER, shown)
    return _MD_PUNCTUATION.sub(r"\\\1", joined)
