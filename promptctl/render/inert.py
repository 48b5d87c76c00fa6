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
"""

from __future__ import annotations

import json
import re
from typing import Any

from promptctl.redact import redact

# What acts on a terminal or on a reader instead of showing: C0 controls (tab and newline
# are layout, kept where a layout allows them), DEL, the C1 controls (U+009B alone is a CSI
# to many terminals), the bidi controls that reorder what is shown (U+061C, U+200E/F,
# U+202A-E, U+2066-9), the line and paragraph separators, lone surrogates (no encoding can
# write them) and the two non-characters XML refuses.
# JSON escapes C0 itself; the rest it must be told about (see jsonout.dumps).
UNSAFE_BEYOND_C0 = ("\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                    "\ud800-\udfff\ufffe\uffff")
_CONTROLS = "\x00-\x08\x0b-\x1f" + UNSAFE_BEYOND_C0
_CONTROL = re.compile(f"[{_CONTROLS}]")
_CONTROL_OR_LAYOUT = re.compile(f"[\t\n{_CONTROLS}]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


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
        return _CONTROL.sub(_visible, raw.replace("\r\n", "\n"))
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
