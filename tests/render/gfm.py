"""GitHub-flavoured Markdown rendered by two real renderers, and what the HTML holds.

cmark-gfm (GitHub's own parser, through cmarkgfm) with the table, autolink,
strikethrough and tagfilter extensions, and markdown-it-py with its GFM preset and
linkify on. Raw HTML is let through by both, so a tag that Markdown passes on shows up
as a tag here rather than as "raw HTML omitted".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

import cmarkgfm
from cmarkgfm.cmark import Options
from markdown_it import MarkdownIt

# The tags promptctl's reports are made of. Anything else in the HTML (img, a, em, strong
# outside our labels, del, script, h1, sup for a footnote...) came from the data.
REPORT_TAGS = {"p", "h2", "h3", "table", "thead", "tbody", "tr", "th", "td", "code", "details",
               "summary", "blockquote", "ul", "li", "strong", "br"}

WORD_JOINER = "\u2060"


@dataclass
class Html:
    """The tags of a rendered document, its text, the cells of each table row, and each
    table as its rows."""

    html: str
    tags: list[str] = field(default_factory=list)
    text: str = ""
    rows: list[list[str]] = field(default_factory=list)
    tables: list[list[list[str]]] = field(default_factory=list)
    strong: list[str] = field(default_factory=list)


class _Reader(HTMLParser):
    def __init__(self, out: Html) -> None:
        super().__init__(convert_charrefs=True)
        self.out = out
        self.cell: list[str] | None = None
        self.in_strong = False
        self.texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.out.tags.append(tag)
        if tag == "table":
            self.out.tables.append([])
        elif tag == "tr":
            self.out.rows.append([])
            if self.out.tables:
                self.out.tables[-1].append(self.out.rows[-1])
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "strong":
            self.in_strong = True
            self.out.strong.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.out.rows[-1].append("".join(self.cell))
            self.cell = None
        elif tag == "strong":
            self.in_strong = False

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self.cell is not None:
            self.cell.append(data)
        if self.in_strong:
            self.out.strong[-1] += data


def _read(html: str) -> Html:
    out = Html(html)
    reader = _Reader(out)
    reader.feed(html)
    reader.close()
    out.text = "".join(reader.texts)
    return out


def cmark(markdown: str) -> Html:
    """`markdown` as cmark-gfm renders it (GitHub's parser)."""
    return _read(cmarkgfm.github_flavored_markdown_to_html(markdown,
                                                           options=Options.CMARK_OPT_UNSAFE))


_MARKDOWN_IT = MarkdownIt("gfm-like", {"linkify": True, "html": True})


def markdown_it(markdown: str) -> Html:
    """`markdown` as markdown-it-py renders it with GFM settings and linkify."""
    return _read(_MARKDOWN_IT.render(markdown))


RENDERERS = {"cmark-gfm": cmark, "markdown-it": markdown_it}


def visible(text: str) -> str:
    """Text as a reader sees it: without the invisible word joiners."""
    return text.replace(WORD_JOINER, "")
