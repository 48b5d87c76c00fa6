"""The HTML report: one self-contained file (styles, script and charts inline) from plain data.

Its input is what the `--json` outputs print: runs as `promptctl show RUN --json`
gives them (`{"run": run_json(...), "rows": [...]}`), diffs as `compare_runs`
returns them and histories as `history` does. It reads nothing else.

The page is built from Jinja2 templates in `templates/` (autoescaped, strict about
undefined names); this module builds their context and the filters they format with.
Templates read every field by attribute (`run.summary.n`), so a document may be a
mapping (read through `Fields`, where a missing field is None) or a record object.

Everything that came from a model, an eval set, a prompt file or git is text:
escaped, with the characters of `inert.VISIBLE_MARKS` shown as visible marks, and
passed through `redact`. No URL, attribute, event handler, style or script is ever
built from it. The rows travel as a JSON island (`<`, `>`, `&`, line separators and
the marked characters escaped) that the page's one script renders as text nodes, a
page at a time, so that 10,000 rows open fast. A Content-Security-Policy meta tag
forbids every network load and lets only this file's own script and style block run
(by their hashes). Charts are Vega-Lite specs rendered to SVG by vl-convert (the
`report` extra); their SVG is rebuilt from an allowlist of elements and attributes
before it is inlined.

Each text a cell shows is cut to a limit (`TEXT_LIMIT` characters unless the caller
asks for another), and the cell says how much it left out and which command prints it
whole: a run of long texts gives a file that grows by a few kilobytes a row, not by
what the model wrote. A run's rows may come from the store as they are read (any
iterable in place of the list) and wait in a temporary file as their table's data, and
the page is produced in pieces (`iter_report`), so that neither the rows nor the page
are ever held whole: memory stays flat in the number of rows (bench/report.py
--long-texts).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import html
import json
import math
import re
import tempfile
import unicodedata
from array import array
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any, NamedTuple

import jinja2
from markupsafe import Markup

from promptctl import __version__, install_command
from promptctl.errors import EXIT_GATE, EXIT_INPUT, EXIT_OK, EXIT_PROVIDER, InputError
from promptctl.metrics.registry import builtin, pass_fail_keys
from promptctl.redact import redact
from promptctl.render import TEXT_LIMIT
from promptctl.render import fmt as numbers
from promptctl.render.inert import MARKED, MARKED_CLASS, mark_name, marks_js_class
from promptctl.results import (
    CheckResult,
    CompatResult,
    Gate,
    PromptCheck,
    pareto_front,
    verdict,
)

INSTALL_HINT = install_command("report")
ID_LIMIT = 200  # characters of a row id, a variable's or a score's name
# How far a cut may move back to keep a cluster (an emoji sequence, an accented letter) whole.
CUT_BACKOFF = 32
# Joiners, variation selectors and skin tones: they belong to the character before them.
_EXTENDS = re.compile("[\u200c\u200d\ufe00-\ufe0f\U0001f3fb-\U0001f3ff\U000e0100-\U000e01ef]")
_SHELL_SAFE = re.compile(r"[A-Za-z0-9._:/@%+=,-]+")
LABEL_LIMIT = 48  # characters of a label inside a chart
# Score keys that are helpers of the metrics, not scores a reader looks for.
HIDDEN_SCORES = frozenset({"answer_num", "expected_num", "label_answer", "label_expected"})
# Per-row 0/1 scores: a 0 is a failed row.
# Score keys whose 0 is a failed row: every built-in pass/fail metric's (tool call metrics
# and accuracy included), and the names older runs stored.
PASS_FAIL_SCORES = tuple(dict.fromkeys(("exact_match", "format_validity", "contains", "regex",
                                        *pass_fail_keys())))
# Metrics whose values lie in [0, 1] (beyond the 0/1 ones) and in [-1, 1].
BOUNDED_01 = ("accuracy", "f1_macro")
BOUNDED_CORRELATION = ("pearson", "spearman")
FLIP_GROUPS = (("pass_to_fail", "Passed in A, failed in B"),
               ("fail_to_pass", "Failed in A, passed in B"),
               ("biggest_error_increases", "Largest increases of the error"))


# --- documents --------------------------------------------------------------------------------


class Fields(Mapping[str, Any]):
    """A document's mapping read the way a template reads a record: by attribute, a missing
    field None, a nested mapping or list read the same way. (Names of mapping methods, such
    as `items`, stay methods: no document field is named so.)"""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return fields(self._data.get(name))

    def __getitem__(self, key: str) -> Any:
        return fields(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


EMPTY = Fields({})


def fields(value: Any) -> Any:
    """`value` for a template: a mapping as `Fields`, a list item by item, the rest as it is."""
    if isinstance(value, Fields):
        return value
    if isinstance(value, Mapping):
        return Fields(value)
    if isinstance(value, list | tuple):
        return [fields(v) for v in value]
    return value


def _part(value: Any) -> Any:
    """A part a document may lack: `value`, or an empty record when it is missing or no record."""
    if isinstance(value, Mapping):
        return fields(value)
    return value if dataclasses.is_dataclass(value) else EMPTY


def _field(record: Any, name: str) -> Any:
    """The field `name` of a record, for a name that is data (a metric's): None when missing."""
    if isinstance(record, Mapping):
        return fields(record.get(name))
    return getattr(record, name, None) if not name.startswith("_") else None


def _records(value: Any) -> list[tuple[Any, Any]]:
    """The (key, record) pairs of a mapping whose values are records; others left out."""
    if not isinstance(value, Mapping):
        return []
    return [(k, fields(v)) for k, v in value.items()
            if isinstance(v, Mapping) or dataclasses.is_dataclass(v)]


def _mapping(value: Any) -> Mapping[str, Any]:
    """`value` when it is a mapping, else an empty one: a document may lack any part."""
    return value if isinstance(value, Mapping) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- text and numbers (the templates' filters) -------------------------------------------------


def _unwrap(value: Any) -> Any:
    return value._data if isinstance(value, Fields) else str(value)


def _plain(value: Any) -> str:
    """Any value as the text a reader sees: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=_unwrap)
    except ValueError:  # a circular structure: not from JSON, but never a crash
        return repr(value)


def _readable(value: Any) -> str:
    """Untrusted `value` as the text a cell shows before it is cut: redacted first, so that no
    secret is cut to a piece too short to be recognised."""
    return redact(_plain(value)).replace("\r\n", "\n")


def _regional(c: str) -> bool:
    return "\U0001f1e6" <= c <= "\U0001f1ff"


def _splits(s: str, i: int) -> bool:
    """Whether cutting `s` before index `i` splits what a reader sees as one character: a
    letter from its combining marks, a joiner or variation selector from its neighbours, a
    flag's two letters, or the two halves of a surrogate pair."""
    c, before = s[i], s[i - 1]
    if unicodedata.category(c) in ("Mn", "Mc", "Me") or _EXTENDS.match(c) or before == "\u200d":
        return True
    if "\ud800" <= before <= "\udbff" and "\udc00" <= c <= "\udfff":
        return True
    if _regional(c) and _regional(before):
        run = 0
        while i - run - 1 >= 0 and _regional(s[i - run - 1]):
            run += 1
        return run % 2 == 1
    return False


def cut_at(s: str, limit: int) -> int:
    """Where to cut `s` so that at most `limit` characters stay: `limit`, or up to
    `CUT_BACKOFF` characters before it when `limit` falls inside a cluster of characters
    (an emoji sequence, an accented letter). A cut never splits a code point; past the
    back-off it may split a cluster (a long run of combining marks), which shows as a mark
    without its letter and breaks no escaping."""
    if len(s) <= limit:
        return len(s)
    end = limit
    while end > 0 and limit - end < CUT_BACKOFF and _splits(s, end):
        end -= 1
    return limit if end > 0 and _splits(s, end) else end


def show_row_command(run_id: Any, row_id: Any) -> str:
    """The command that prints one row whole, each id quoted for a POSIX shell when it holds
    more than letters, digits and `._:/-` (a row id is data: pasted unquoted, `$(...)` in it
    would run)."""
    return f"promptctl show {_shell_word(run_id)} --row {_shell_word(row_id)}"


def _shell_word(value: Any) -> str:
    s = _plain(value)
    return s if _SHELL_SAFE.fullmatch(s) else "'" + s.replace("'", "'\\''") + "'"


def _marked_html(s: str) -> str:
    out: list[str] = []
    last = 0
    for m in MARKED.finditer(s):
        out.append(html.escape(s[last:m.start()]))
        out.append(f'<span class="ctl">{mark_name(m.group())}</span>')
        last = m.end()
    out.append(html.escape(s[last:]))
    return "".join(out)


def text(value: Any, limit: int = TEXT_LIMIT, full: str | None = None) -> Markup:
    """Untrusted `value` as HTML text: redacted, escaped, marked characters made visible; cut
    to `limit` characters, with a note of how many it leaves out (and `full`, the command that
    prints it whole)."""
    s = _readable(value)
    end = cut_at(s, limit)
    if end == len(s):
        return Markup(_marked_html(s))
    return Markup(_marked_html(s[:end]) + _cut_note(len(s) - end, full))


def _cut_note(extra: int, full: str | None) -> str:
    where = f"; full text: <code>{_marked_html(full)}</code>" if full else ""
    return f'<span class="cut">… {extra:,} more characters{where}</span>'


def label(value: Any, limit: int = LABEL_LIMIT) -> str:
    """Untrusted `value` as a short plain label (a chart's, the title's): one line, marked
    characters as `<U+202E>`. Plain text: a template escapes it."""
    s = MARKED.sub(lambda m: f"<{mark_name(m.group())}>", redact(_plain(value)))
    s = " ".join(s.split())
    return s if len(s) <= limit else s[:limit - 1] + "…"


def fmt(value: Any, digits: int = 3) -> Markup:
    """A number for reading (3 significant digits, thousands separated), as HTML."""
    if value is None:
        return Markup("–")
    if isinstance(value, bool):
        return Markup("yes" if value else "no")
    if isinstance(value, int):
        return Markup(f"{value:,}")
    if not isinstance(value, float):
        return text(value, 200)
    if not math.isfinite(value):
        return Markup(str(value))
    if value == 0:
        return Markup("0")
    if abs(value) >= 1000:
        return Markup(f"{value:,.0f}")
    return Markup(f"{value:.{digits}g}")


def _p(value: Any) -> Markup:
    if not _is_number(value):
        return fmt(value)
    return Markup("&lt;0.001" if value < 0.001 else f"{value:.3f}")


def _signed(value: Any) -> Markup:
    if not _is_number(value):
        return fmt(value)
    return ("+" if value > 0 else "") + fmt(value)


def _interval(ci: Any) -> Markup:
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(_is_number(v) for v in ci):
        return Markup("[{}, {}]").format(fmt(ci[0]), fmt(ci[1]))
    return Markup("–")


def _cost(value: Any) -> Markup:
    if not _is_number(value):
        return fmt(value)
    return Markup(f"${value:.4f}" if value >= 0.01 or value == 0 else f"${value:.6f}")


def _short(sha: Any, n: int = 12) -> Markup:
    return text(sha[:n]) if isinstance(sha, str) else Markup("–")


def _exact(value: Any) -> str:
    """A number exactly (for `data-value`, read by scripts and tests)."""
    return repr(value)


# --- charts -----------------------------------------------------------------------------------


def charts_available() -> bool:
    """Whether vl-convert (the `report` extra) is installed."""
    from importlib.util import find_spec

    return find_spec("vl_convert") is not None


def require_charts() -> None:
    """An InputError naming the install command when the `report` extra is missing."""
    if not charts_available():
        raise InputError("HTML reports need the charting package vl-convert-python, which is "
                         "not installed", fix=f"install it: {INSTALL_HINT}")


_SVG_TAGS = frozenset({"svg", "g", "path", "rect", "line", "text", "tspan", "circle", "ellipse",
                       "polygon", "polyline", "title", "desc", "defs", "clipPath",
                       "linearGradient", "radialGradient", "stop"})
_SVG_ATTRS = frozenset({
    "width", "height", "viewBox", "x", "y", "x1", "x2", "y1", "y2", "dx", "dy", "cx", "cy", "r",
    "rx", "ry", "d", "points", "transform", "fill", "fill-opacity", "stroke", "stroke-width",
    "stroke-opacity", "stroke-dasharray", "stroke-dashoffset", "stroke-linecap",
    "stroke-linejoin", "stroke-miterlimit", "opacity", "font-family", "font-size", "font-weight",
    "font-style", "text-anchor", "dominant-baseline", "alignment-baseline", "letter-spacing",
    "class", "role", "aria-label", "aria-hidden", "aria-roledescription", "clip-path", "id",
    "offset", "stop-color", "stop-opacity", "gradientUnits", "pointer-events", "display",
    "shape-rendering", "version", "preserveAspectRatio",
})
_SVG_NS = "{http://www.w3.org/2000/svg}"
_URL_REF = re.compile(r"url\(#([A-Za-z0-9_.-]+)\)")


class Charts:
    """Vega-Lite specs rendered to SVG, sanitised, with ids unique in the page."""

    def __init__(self) -> None:
        self.count = 0

    def svg(self, spec: dict[str, Any], description: str) -> Markup:
        """The chart of `spec` as inline SVG markup inside a figure: markup built here, from
        vl-convert's SVG rebuilt by `sanitize_svg`."""
        require_charts()
        import vl_convert

        self.count += 1
        # The SVG's text is measured with vl-convert's fonts and drawn with the browser's,
        # which run wider: a margin keeps the outermost labels and legends whole.
        spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json",
                "config": CHART_CONFIG, "padding": {"left": 28, "right": 28, "top": 6,
                                                    "bottom": 6}, **spec}
        # No base URL is allowed: a spec can load no data from anywhere.
        raw = vl_convert.vegalite_to_svg(spec, allowed_base_urls=[])
        return Markup('<figure class="chart" aria-label="{}">{}</figure>').format(
            description, Markup(sanitize_svg(raw, f"c{self.count}-")))


def sanitize_svg(svg: str, prefix: str) -> str:
    """`svg` rebuilt from an allowlist of elements and attributes, every text escaped.

    Scripts, styles, links, foreign objects, event handlers and external
    references cannot survive it; ids (and `url(#id)` references) get `prefix`
    so that two charts in one page do not share clip paths.
    """
    import xml.etree.ElementTree as ET

    if "<!DOCTYPE" in svg or "<!ENTITY" in svg:
        raise ValueError("chart SVG with a document type declaration")
    root = ET.fromstring(svg)
    out: list[str] = []

    def attr_value(name: str, value: str) -> str | None:
        if name == "id":
            return prefix + value if re.fullmatch(r"[A-Za-z0-9_.-]+", value) else None
        if "url(" in value:
            if not value.startswith("url(#"):
                return None
            return _URL_REF.sub(lambda m: f"url(#{prefix}{m.group(1)})", value)
        if ":" in value and name not in ("aria-label", "aria-roledescription", "font-family"):
            return None  # no scheme (javascript:, data:) in any geometry or paint value
        return value

    def walk(el: ET.Element) -> None:
        tag = el.tag
        if not isinstance(tag, str) or not tag.startswith(_SVG_NS):
            return
        name = tag[len(_SVG_NS):]
        if name not in _SVG_TAGS:
            if el.tail:
                out.append(_svg_text(el.tail))
            return
        attrs = []
        for key, value in el.attrib.items():
            if key not in _SVG_ATTRS:
                continue
            kept = attr_value(key, value)
            if kept is not None:
                attrs.append(f' {key}="{html.escape(kept, quote=True)}"')
        out.append(f"<{name}{''.join(attrs)}>")
        if el.text:
            out.append(_svg_text(el.text))
        for child in el:
            walk(child)
        out.append(f"</{name}>")
        if el.tail:
            out.append(_svg_text(el.tail))

    walk(root)
    return "".join(out)


def _svg_text(value: str) -> str:
    return html.escape(MARKED.sub("?", value), quote=False)


CHART_CONFIG: dict[str, Any] = {
    "font": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif",
    "background": "transparent",
    "view": {"stroke": "#d8dee4"},
    "axis": {"labelColor": "#3d444d", "titleColor": "#3d444d", "gridColor": "#eaeef2",
             "domainColor": "#afb8c1", "tickColor": "#afb8c1", "labelFontSize": 11,
             "titleFontSize": 11, "titleFontWeight": "normal"},
    "header": {"labelFontSize": 12, "labelColor": "#1f2328"},
    "legend": {"labelFontSize": 11, "titleFontSize": 11, "labelLimit": 240},
}

# A facet's label (the metric) above its strip, at the left.
HEADER = {"title": None, "labelAngle": 0, "labelAlign": "left", "labelAnchor": "start",
          "labelOrient": "top", "labelPadding": 2}


def _metric_chart(charts: Charts, metrics: Mapping[str, Any], what: str) -> Markup:
    """Each metric's value and 95% interval, one strip per metric (each on its own scale)."""
    values = []
    for name, m in metrics.items():
        if not isinstance(m, Mapping) or not _is_number(m.get("value")):
            continue
        ci = m.get("ci95")
        lo, hi = (ci if isinstance(ci, list | tuple) and len(ci) == 2
                  and all(_is_number(v) for v in ci) else (m["value"], m["value"]))
        values.append({"metric": label(name), "value": m["value"], "lo": lo, "hi": hi})
    if not values:
        return Markup()
    x = {"type": "quantitative", "title": None, "scale": {"zero": False, "nice": True},
         "axis": {"tickCount": 5}}
    spec = {
        "data": {"values": values},
        "facet": {"row": {"field": "metric", "type": "nominal",
                          "sort": [v["metric"] for v in values], "header": HEADER}},
        "spec": {"width": 360, "height": 16, "layer": [
            {"mark": {"type": "rule", "strokeWidth": 3, "color": "#8fb8ea"},
             "encoding": {"x": {"field": "lo", **x}, "x2": {"field": "hi"}}},
            {"mark": {"type": "point", "filled": True, "size": 70, "color": "#0969da"},
             "encoding": {"x": {"field": "value", **x}}},
        ]},
        "resolve": {"scale": {"x": "independent"}},
        "spacing": 6,
    }
    return charts.svg(spec, f"{what}: value and 95% interval per metric")


def _latency_chart(charts: Charts, latencies: Sequence[float]) -> Markup:
    """A histogram of the answered rows' latency (binned here: the spec stays small)."""
    if len(latencies) < 10:  # too few rows for a shape
        return Markup()
    lo, hi = min(latencies), max(latencies)
    bins = 30
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in latencies:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    values = [{"from": lo + i * width, "to": lo + (i + 1) * width, "rows": c}
              for i, c in enumerate(counts)]
    spec = {
        "data": {"values": values}, "width": 360, "height": 90,
        "mark": {"type": "rect", "color": "#8fb8ea", "stroke": "#0969da", "strokeWidth": 0.5},
        "encoding": {"x": {"field": "from", "type": "quantitative", "title": "latency (ms)",
                           "scale": {"zero": False}, "axis": {"tickCount": 6}},
                     "x2": {"field": "to"},
                     "y": {"field": "rows", "type": "quantitative", "title": "rows"}},
    }
    return charts.svg(spec, "latency histogram of the answered rows")


def _delta_chart(charts: Charts, metrics: Mapping[str, Any]) -> Markup:
    """Each metric's delta (B - A) with its 95% interval and the zero line."""
    values = []
    for name, m in metrics.items():
        if not isinstance(m, Mapping) or not _is_number(m.get("delta")):
            continue
        ci = m.get("ci95")
        lo, hi = (ci if isinstance(ci, list | tuple) and len(ci) == 2
                  and all(_is_number(v) for v in ci) else (m["delta"], m["delta"]))
        # The one verdict rule (results.verdict): colour only what the paired test found.
        verdict = m.get("verdict")
        change = verdict.get("change") if isinstance(verdict, Mapping) else None
        values.append({"metric": label(name), "delta": m["delta"], "lo": lo, "hi": hi, "zero": 0,
                       "verdict": change if change in ("better", "worse") else "same"})
    if not values:
        return Markup()
    x = {"type": "quantitative", "title": None, "scale": {"nice": True}, "axis": {"tickCount": 5}}
    color = {"field": "verdict", "type": "nominal", "title": None,
             "scale": {"domain": ["better", "worse", "same"],
                       "range": ["#1a7f37", "#cf222e", "#6e7781"]}}
    spec = {
        "data": {"values": values},
        "facet": {"row": {"field": "metric", "type": "nominal",
                          "sort": [v["metric"] for v in values], "header": HEADER}},
        "spec": {"width": 360, "height": 16, "layer": [
            {"mark": {"type": "rule", "strokeDash": [3, 3], "color": "#6e7781"},
             "encoding": {"x": {"field": "zero", **x}}},
            {"mark": {"type": "rule", "strokeWidth": 3, "opacity": 0.45},
             "encoding": {"x": {"field": "lo", **x}, "x2": {"field": "hi"}, "color": color}},
            {"mark": {"type": "point", "filled": True, "size": 70},
             "encoding": {"x": {"field": "delta", **x}, "color": color}},
        ]},
        "resolve": {"scale": {"x": "independent"}},
        "spacing": 6,
    }
    return charts.svg(spec, "delta of each metric (B - A) with its 95% interval")


def _y_scale(name: str) -> dict[str, Any]:
    """A metric's y scale in a trend: a bounded metric on its whole range (0.2 accuracy sits
    low on the axis, not mid-way), an error from zero, anything else on its own values."""
    metric = builtin(name)
    if metric is not None and (metric.pass_fail or name in BOUNDED_01):
        return {"domain": [0, 1]}
    if name in BOUNDED_CORRELATION:
        return {"domain": [-1, 1]}
    if metric is not None and not metric.higher_is_better:
        return {"zero": True, "nice": True}
    return {"zero": False, "nice": True}


def _trend_chart(charts: Charts, versions: Sequence[Mapping[str, Any]]) -> Markup:
    """Each metric across the versions, oldest first, one strip per metric on its own scale
    (see `_y_scale`); one line per model; the versions named under the last strip."""
    ordered = list(reversed(versions))  # history lists the newest first
    names: list[str] = []
    for v in ordered:
        for name in (v.get("metrics") or {}):
            if name not in names:
                names.append(name)
    ticks: list[str] = []
    values: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for i, v in enumerate(ordered):
        commit, when = v.get("git_commit"), v.get("date") or v.get("created_at")
        tick = f"{i + 1}: {commit[:7]}" if isinstance(commit, str) and commit else f"{i + 1}"
        if v.get("git_dirty"):
            tick += "*"
        if isinstance(when, str):
            tick += f" {when[:10]}"
        tick = label(tick, 32)
        ticks.append(tick)
        for name in names:
            value = (v.get("metrics") or {}).get(name)
            if _is_number(value):
                values[name].append({"version": tick, "value": value,
                                     "model": label(v.get("model"), 40)})
    shown = [n for n in names if values[n]]
    if not shown:
        return Markup()
    many_models = len({r["model"] for n in shown for r in values[n]}) > 1
    strips = []
    for i, name in enumerate(shown):
        last = i == len(shown) - 1
        encoding: dict[str, Any] = {
            "x": {"field": "version", "type": "ordinal", "sort": ticks,
                  "title": "version, oldest first: number, commit (* a dirty work tree), date"
                  if last else None,
                  "axis": {"labelAngle": -40, "labelOverlap": True, "labelLimit": 0}
                  if last else {"labels": False, "ticks": False}},
            "y": {"field": "value", "type": "quantitative", "title": None,
                  "scale": _y_scale(name)},
        }
        if many_models:
            encoding["color"] = {"field": "model", "type": "nominal", "title": "model"}
        strips.append({"title": {"text": label(name), "anchor": "start", "fontSize": 12,
                                 "fontWeight": "normal"},
                       "data": {"values": values[name]},
                       "width": max(360, min(900, 28 * len(ticks))), "height": 90,
                       "mark": {"type": "line", "point": True, "color": "#0969da"},
                       "encoding": encoding})
    return charts.svg({"vconcat": strips, "spacing": 12},
                      "trend of each metric across versions")


def _version_labels(versions: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each version's short name in a chart, newest first as history lists them: its number
    counted from the oldest, its commit (`*` a dirty work tree) and, with several models,
    its model."""
    many_models = len({v.get("model") for v in versions}) > 1
    out = []
    for i, v in enumerate(versions):
        commit = v.get("git_commit")
        name = f"{len(versions) - i}"
        if isinstance(commit, str) and commit:
            name += f": {commit[:7]}"
        if v.get("git_dirty"):
            name += "*"
        if many_models:
            name += f" {_plain(v.get('model'))}"
        out.append(label(name, 40))
    return out


def _pareto_charts(charts: Charts, versions: Sequence[Mapping[str, Any]],
                   directions: Mapping[str, Any]) -> list[Markup]:
    """Per metric, its value against the cost of a row, a point per (version, model): the
    points on the Pareto front (`results.pareto_front`) drawn filled and joined by a step
    line (the best value to be had for at most that cost). Points of unknown cost are not
    drawn (the section lists them)."""
    names: list[str] = []
    for v in versions:
        names += [n for n in (v.get("metrics") or {}) if n not in names]
    labels = _version_labels(versions)
    out = []
    for name in names:
        higher = directions.get(name)
        if not isinstance(higher, bool):
            found = builtin(name)
            higher = found.higher_is_better if found is not None else True
        points = [(v.get("cost_per_row") if _is_number(v.get("cost_per_row")) else None,
                   (v.get("metrics") or {}).get(name)) for v in versions]
        points = [(c, m if _is_number(m) else None) for c, m in points]
        front = pareto_front(points, higher_is_better=higher)
        values = [{"version": labels[i], "number": str(len(versions) - i),
                   "cost": round(c * numbers.COST_ROWS, 9), "value": m,
                   "front": "on the Pareto front" if front[i] else "dominated"}
                  for i, (c, m) in enumerate(points) if c is not None and m is not None]
        if not values:
            continue
        step = sorted((v for v in values if v["front"] != "dominated"),
                      key=lambda v: (v["cost"], -v["value"] if higher else v["value"]))
        # Padding keeps the labels of the outermost points inside the plot.
        x = {"field": "cost", "type": "quantitative",
             "scale": {"zero": False, "nice": True, "padding": 16},
             "axis": {"tickCount": 6}, "title": f"cost, USD per {numbers.COST_ROWS:,} rows"}
        y = {"field": "value", "type": "quantitative", "scale": _y_scale(name),
             "title": f"{label(name)} ({'higher' if higher else 'lower'} is better)"}
        kinds = ["on the Pareto front", "dominated"]
        shape = {"field": "front", "type": "nominal", "title": None,
                 "scale": {"domain": kinds, "range": ["#0969da", "#8c959f"]}}
        spec = {"width": 360, "height": 200, "layer": [
            {"data": {"values": step},
             "mark": {"type": "line", "interpolate": "step-after",
                      "color": "#0969da", "strokeWidth": 1.5},
             "encoding": {"x": x, "y": y, "order": {"field": "cost"}}},
            {"data": {"values": values},
             "mark": {"type": "point", "size": 80, "strokeWidth": 2},
             "encoding": {"x": x, "y": y, "color": shape,
                          "fill": {**shape, "scale": {"domain": kinds,
                                                      "range": ["#0969da", "#ffffff"]}},
                          "tooltip": [{"field": "version"}, {"field": "cost"},
                                      {"field": "value"}]}},
            {"data": {"values": values},
             # The version's number (the versions table's first column): whole labels of
             # points close together would overlap.
             "mark": {"type": "text", "align": "left", "dx": 6, "dy": -7, "fontSize": 11,
                      "color": "#3d444d"},
             "encoding": {"x": x, "y": y, "text": {"field": "number"}}},
        ]}
        out.append(charts.svg(spec, f"{label(name)} against cost per row, Pareto front marked"))
    return out


def row_failed(row: Mapping[str, Any]) -> bool:
    """A failed request, no readable answer, a 0/1 score of 0, or a judge or step that failed."""
    if row.get("error") is not None or row.get("valid") is False:
        return True
    scores = row.get("scores")
    if isinstance(scores, Mapping) and any(
            _is_number(scores.get(k)) and scores[k] < 1 for k in PASS_FAIL_SCORES):
        return True
    judges = row.get("judges")
    if isinstance(judges, Mapping) and any(
            isinstance(j, Mapping) and (j.get("error") is not None or j.get("score") is None)
            for j in judges.values()):
        return True
    steps = row.get("steps")
    return isinstance(steps, Mapping) and any(
        isinstance(s, Mapping) and s.get("error") is not None for s in steps.values())


# A text in the page's data: itself, or [what a cell shows, how many characters it leaves out].
Shown = str | list[Any]
# Different messages of failed requests counted apart; past them, only how many rows failed.
MAX_MESSAGES = 1_000
MAX_VARIABLES = 20  # variables of a row's input shown; the others are counted
# Characters of a rows table's data kept in memory; past them it waits in a temporary file.
SPOOL_MEMORY = 1 << 20
SPOOL_READ = 1 << 16  # characters of that data read back at a time


def _name(value: Any, limit: int = ID_LIMIT) -> str:
    """A name from data (a score's, a judge's, a step's) for the page's script: cut with an
    ellipsis, never a note (it is shown inside a sentence)."""
    s = _readable(value)
    end = cut_at(s, limit)
    return s if end == len(s) else s[:end] + "…"


class _Cells:
    """One row's texts as the page's script shows them, each cut to `limit` characters;
    remembers whether it cut any (the row then names the command that prints it whole)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.cut = False

    def __call__(self, value: Any, limit: int | None = None) -> Shown:
        return self._cut(_readable(value), self.limit if limit is None else min(limit, self.limit))

    def _cut(self, s: str, limit: int) -> Shown:
        end = cut_at(s, limit)
        if end == len(s):
            return s
        self.cut = True
        return [s[:end], len(s) - end]

    def value(self, value: Any) -> Shown:
        """A score: a number as it reads, anything else as a short text."""
        if _is_number(value) or value is None or isinstance(value, bool):
            return str(fmt(value))
        return self(value, ID_LIMIT)

    def pairs(self, value: Any) -> list[list[Any]]:
        """A row's input as [name, value] pairs ([None, value] when it is not a mapping).

        The values share the cell's limit, so that an input of many variables is no bigger
        than one of a single long one: each gets an even share, and what a short one leaves
        goes to the longer ones. Past `MAX_VARIABLES` variables, one last [None, ["", n]]
        counts the characters of those left out."""
        if not (isinstance(value, Mapping) and value):
            return [[None, self(value)]]
        items = list(value.items())
        texts = [_readable(v) for _, v in items[:MAX_VARIABLES]]
        shares = _shares([len(t) for t in texts], self.limit)
        out: list[list[Any]] = [[_name(k), self._cut(t, share)]
                                for (k, _), t, share in zip(items, texts, shares, strict=False)]
        if len(items) > MAX_VARIABLES:
            self.cut = True
            rest = sum(len(_readable(k)) + len(_readable(v)) for k, v in items[MAX_VARIABLES:])
            out.append([None, ["", rest]])
        return out


def _shares(lengths: Sequence[int], budget: int) -> list[int]:
    """Each of `lengths`' share of `budget` characters: its whole length when all fit, else
    an even share, what the shorter ones leave going to the longer ones."""
    shares = [0] * len(lengths)
    left = budget
    for done, i in enumerate(sorted(range(len(lengths)), key=lengths.__getitem__)):
        shares[i] = min(lengths[i], left // (len(lengths) - done))
        left -= shares[i]
    return shares


def _row_data(row: Mapping[str, Any], keys: dict[str, int], limit: int,
              run_id: Any) -> dict[str, Any]:
    """One row as the page's script renders it: every value already plain text, each text
    cut to `limit` characters (a cut one as [text, characters left out]).

    Short keys keep 10,000 rows small: id, n (sample), f (failed), in (input as
    [key, value] pairs), c (completion), err (request error), a (answer),
    na (why there is no answer), e (expected), s ([score key index, value, bad]),
    j ([metric, score, error, completion] of LLM judges), st ([step, state,
    answer or error, completion] of pipeline steps), m (latency, tokens, cache),
    x (the command that prints the row whole, when a text was cut).
    """
    cell = _Cells(limit)
    out: dict[str, Any] = {"id": cell(row.get("row_id"), ID_LIMIT)}
    sample = row.get("sample")
    if _is_number(sample) and sample:
        out["n"] = sample
    if row_failed(row):
        out["f"] = 1
    out["in"] = cell.pairs(row.get("input"))
    if row.get("error") is not None:
        out["err"] = cell(row["error"])
    else:
        out["c"] = cell(row.get("completion"))
        if row.get("valid") is False:
            out["na"] = cell(row.get("extract_error") or "", 400)
        else:
            out["a"] = cell(row.get("answer"))
    if row.get("has_expected", True):
        out["e"] = cell(row.get("expected"))
    scores = row.get("scores")
    if isinstance(scores, Mapping):
        out["s"] = [[keys.setdefault(_name(k), len(keys)), cell.value(v),
                     int(k in PASS_FAIL_SCORES and _is_number(v) and v < 1)]
                    for k, v in scores.items() if k not in HIDDEN_SCORES]
    judges = row.get("judges")
    if isinstance(judges, Mapping):
        out["j"] = [[_name(metric),
                     None if j.get("score") is None else cell.value(j.get("score")),
                     None if j.get("error") is None else cell(j.get("error")),
                     None if j.get("completion") is None else cell(j.get("completion"))]
                    for metric, j in judges.items() if isinstance(j, Mapping)]
    steps = row.get("steps")
    if isinstance(steps, Mapping):
        out["st"] = [[_name(step_id),
                      "error" if st.get("error") is not None else
                      ("skipped" if st.get("skipped") else "ok"),
                      cell(st.get("error") if st.get("error") is not None else st.get("answer")),
                      None if st.get("completion") is None else cell(st.get("completion"))]
                     for step_id, st in steps.items() if isinstance(st, Mapping)]
    votes = _votes(cell, row.get("self_consistency"))
    if votes:
        out["v"] = votes
    trajectory = row.get("trajectory")
    turns = trajectory.get("turns") if isinstance(trajectory, Mapping) else None
    if isinstance(turns, list):
        out["st"] = [_turn_entry(cell, t) for t in turns if isinstance(t, Mapping)]
        if trajectory.get("outcome") == "turn_limit":  # type: ignore[union-attr]
            out["st"].append(["turn limit", "error",
                              cell("max_turns reached: scored as it stands"), None])
    facts = []
    if _is_number(row.get("latency_ms")):
        facts.append(f"{fmt(row['latency_ms'])} ms")
    if _is_number(row.get("prompt_tokens")) or _is_number(row.get("completion_tokens")):
        facts.append(f"{fmt(row.get('prompt_tokens'))}+{fmt(row.get('completion_tokens'))} tok")
    if row.get("cached"):
        facts.append("cached")
    out["m"] = " · ".join(facts)
    if cell.cut:
        out["x"] = show_row_command(run_id, row.get("row_id"))
    return out


def _votes(cell: _Cells, detail: Any) -> list[list[Any]]:
    """A sampled row's K answers, counted: [answer, count, 1 for the voted one], most
    common first; unreadable answers and failed requests counted apart (answer None, with
    "unreadable" or "failed" as a fourth item)."""
    if not isinstance(detail, Mapping) or not isinstance(detail.get("samples"), list):
        return []
    samples = [s for s in detail["samples"] if isinstance(s, Mapping)]
    chosen = detail.get("chosen")
    counts: dict[str, list[Any]] = {}
    for i, s in enumerate(samples):
        entry: list[Any]
        if s.get("error") is not None:
            key, entry = "\0failed", [None, 0, 0, "failed"]
        elif s.get("valid") is False:
            key, entry = "\0unreadable", [None, 0, 0, "unreadable"]
        else:
            shown = cell(s.get("answer"), ID_LIMIT)
            key, entry = json.dumps(shown), [shown, 0, 0]
        found = counts.setdefault(key, entry)
        found[1] += 1
        if i == chosen and found[0] is not None:
            found[2] = 1
    return sorted(counts.values(), key=lambda e: (e[0] is None, -e[1]))


def _samples_section(figures: Any) -> dict[str, Any] | None:
    """`eval --samples K`'s figures as the terminal shows them: per metric the first sample
    against the vote on the same rows, with the paired test's verdict; then the multiples."""
    if not isinstance(figures, Mapping):
        return None
    metrics = []
    for name, m in _mapping(figures.get("metrics")).items():
        if not isinstance(m, Mapping):
            continue
        delta, ci, p = m.get("delta"), m.get("ci95"), m.get("p_value")
        found = verdict(delta if _is_number(delta) else None,
                        ci if isinstance(ci, list) and len(ci) == 2 and all(map(_is_number, ci))
                        else None, p if _is_number(p) else None,
                        higher_is_better=m.get("higher_is_better") is not False)
        metrics.append({"name": name, "m": fields(m), "verdict": found.text, "note": found.note,
                        "higher_is_better": m.get("higher_is_better") is not False})
    requests = _mapping(figures.get("requests"))
    n, separate = requests.get("n") or 0, requests.get("separate") or 0
    how = ("one request with n per row" if n and not separate else
           f"n on {n} rows, one request per sample on {separate}"
           if n else "one request per sample")
    # As the terminal prints them: 2 decimals, so that both read the same.
    multiples = {k: f"{numbers.num(figures.get(f'{k}_multiple'), 2)}×"
                 if _is_number(figures.get(f"{k}_multiple")) else None
                 for k in ("tokens", "cost", "latency")}
    return {"figures": fields(figures), "metrics": metrics, "how": how, "multiples": multiples,
            "latency_unknown": bool(n) and not _is_number(figures.get("latency_multiple"))}


def _escape_json_char(m: re.Match[str]) -> str:
    code = ord(m.group())
    if code > 0xFFFF:  # as a UTF-16 pair, the only way JSON spells it
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


_JSON_ESCAPED = re.compile(f"[<>&\u2028\u2029{MARKED_CLASS}]")


def json_island(value: Any) -> str:
    """`value` as JSON that is safe inside <script type="application/json">.

    `<`, `>` and `&` are escaped (no `</script>` or `<!--` can end or bend the
    element), and so are U+2028/2029 and every invisible character, so that the
    page's source holds none of them either.
    """
    return _JSON_ESCAPED.sub(_escape_json_char,
                             json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _turn_entry(cell: _Cells, turn: Mapping[str, Any]) -> list[Any]:
    """One turn of an agent's trajectory as a step line: `turn N`, its state, each call with
    its arguments and what came back (or its error), the model's text folded under it."""
    label = f"turn {_plain(turn.get('turn'))}"
    if turn.get("error") is not None:
        return [label, "error", cell(turn.get("error")), None]
    parts = []
    for call in turn.get("calls") or []:
        if not isinstance(call, Mapping):
            continue
        head = f"{_plain(call.get('name'))}({_plain(call.get('arguments'))})"
        if call.get("not_executed"):
            parts.append(f"{head}: not run (the last turn)")
        elif call.get("error"):
            parts.append(f"{head}: error {_plain(call.get('error'))}")
        else:
            parts.append(f"{head} \u2192 {_plain(call.get('result'))}")
    text = "; ".join(parts) if parts else "answer"
    completion = turn.get("completion")
    return [label, "ok", cell(text), None if not completion else cell(completion)]


class _RowsBlock:
    """A rows table as its rows are read: its counts, and its rows as JSON (the middle of its
    island), kept in a temporary file once they outgrow `SPOOL_MEMORY`. The rows are read
    once, before the section's figures that count them are written, and never held."""

    def __init__(self, what: str, limit: int, run_id: Any) -> None:
        self.what, self.limit, self.run_id = what, limit, run_id
        self.n = self.failed = 0
        self.steps = False
        self.keys: dict[str, int] = {}
        self.spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY, mode="w+",
                                                   encoding="utf-8")

    def add(self, row: Mapping[str, Any]) -> None:
        data = _row_data(row, self.keys, self.limit, self.run_id)
        self.spool.write(("," if self.n else "") + json_island(data))
        self.n += 1
        self.failed += "f" in data
        self.steps = self.steps or "st" in data

    def island(self) -> Iterator[Markup]:
        """The table's data as a JSON island, in pieces: {"rows": [...], "keys": [...],
        "steps": ...}. Every piece was escaped by `json_island`."""
        yield Markup('{"rows":[')
        with self.spool:
            self.spool.seek(0)
            while piece := self.spool.read(SPOOL_READ):
                yield Markup(piece)
        yield Markup(f'],"keys":{json_island(list(self.keys))},"steps":{json_island(self.steps)}}}')

    def context(self) -> dict[str, Any]:
        return {"what": self.what, "n": self.n, "failed": self.failed, "steps": self.steps,
                "island": self.island()}


class _Tally:
    """What a run's section says about its rows before it lists them: failed requests by
    message, and the latency histogram. It keeps 8 bytes a row (the latencies) and at most
    `MAX_MESSAGES` messages, each cut to the text limit: never the rows themselves."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.latencies = array("d")
        # Cut message: [rows, characters cut off]. Messages alike up to the limit count as one.
        self.messages: dict[str, list[int]] = {}
        self.untold = 0  # failed requests past MAX_MESSAGES different messages

    def add(self, row: Mapping[str, Any]) -> None:
        if row.get("error") is not None:
            s = _readable(row["error"])
            end = cut_at(s, self.limit)
            entry = self.messages.get(s[:end])
            if entry is not None:
                entry[0] += 1
            elif len(self.messages) < MAX_MESSAGES:
                self.messages[s[:end]] = [1, len(s) - end]
            else:
                self.untold += 1
        elif row.get("kind", "eval") == "eval" and _is_number(row.get("latency_ms")):
            self.latencies.append(float(row["latency_ms"]))

    def failed_requests(self) -> dict[str, Any]:
        """The ten most frequent messages of failed requests (as HTML), with their counts."""
        top = sorted(self.messages.items(), key=lambda kv: -kv[1][0])[:10]
        return {"top": [(Markup(_marked_html(message) + (_cut_note(extra, None) if extra else "")),
                         n) for message, (n, extra) in top],
                "more": len(self.messages) - len(top), "untold": self.untold,
                "max_messages": MAX_MESSAGES}


# --- sections: the context of each template -----------------------------------------------------


def _run_section(index: int, document: Mapping[str, Any], charts: Charts,
                 limit: int) -> dict[str, Any]:
    """A run's section. Its rows ("rows": a list, or rows read from the store as they come)
    are read once, here."""
    run = _mapping(document.get("run"))
    tally = _Tally(limit)
    blocks = {kind: _RowsBlock(kind, limit, run.get("id")) for kind in ("eval", "fewshot")}
    for row in document.get("rows") or ():
        tally.add(row)
        block = blocks.get(row.get("kind", "eval"))
        if block is not None:
            block.add(row)
    metric_chart = _metric_chart(charts, _mapping(run.get("metrics")), "metrics of the run")
    return {"index": index, "run": _part(run), "metric_chart": metric_chart,
            "latency_chart": _latency_chart(charts, tally.latencies),
            "failed_requests": tally.failed_requests(), "eval_rows": blocks["eval"].context(),
            "samples": _samples_section(run.get("self_consistency")),
            "fewshot_rows": blocks["fewshot"].context() if blocks["fewshot"].n else None}


def _usage_rows(usage: Any) -> list[list[str]]:
    """A diff's tokens, cost and latency figures (its JSON `usage`) as table cells: label,
    A, B, delta, interval, p, n, and why it is unknown (else "")."""
    if not isinstance(usage, Mapping):
        return []
    tokens, latency = _mapping(usage.get("tokens")), _mapping(usage.get("latency_ms"))
    out = []
    for name, unit, f in (("prompt tokens", "tokens", tokens.get("prompt")),
                          ("completion tokens", "tokens", tokens.get("completion")),
                          ("total tokens", "tokens", tokens.get("total")),
                          ("cost", "usd", usage.get("cost_usd")),
                          ("latency p50", "ms", latency.get("p50")),
                          ("latency p90", "ms", latency.get("p90"))):
        f = _mapping(f)
        why = f.get("unknown")
        if why is not None:
            out.append([numbers.usage_label(name, unit), "unknown", "unknown", "–", "–", "–",
                        "–", _plain(why)])
            continue
        out.append([numbers.usage_label(name, unit), numbers.usage(f.get("a"), unit),
                    numbers.usage(f.get("b"), unit),
                    numbers.usage(f.get("delta"), unit, sign=True),
                    numbers.usage_interval(f.get("ci95"), unit),
                    numbers.p_value(f.get("p_value")), numbers.num(f.get("n"), 0), ""])
    return out


def _diff_section(index: int, diff: Mapping[str, Any], charts: Charts,
                  limit: int) -> dict[str, Any]:
    flipped = _mapping(diff.get("flipped"))
    flips = [(key, title, [fields(e) for e in entries if isinstance(e, Mapping)])
             for key, title in FLIP_GROUPS if (entries := flipped.get(key))]
    return {"index": index, "diff": _part(diff), "a": _part(diff.get("a")),
            "b": _part(diff.get("b")), "flips": flips, "limit": limit,
            "usage": _usage_rows(diff.get("usage")),
            "cached_excluded": _mapping(_mapping(diff.get("usage")).get("latency_ms"))
            .get("cached_excluded"),
            "delta_chart": _delta_chart(charts, _mapping(diff.get("metrics")))}


def _history_section(index: int, hist: Mapping[str, Any], charts: Charts) -> dict[str, Any]:
    versions = [v for v in hist.get("versions") or [] if isinstance(v, Mapping)]
    names: list[str] = []
    for v in versions:
        for name in (v.get("metrics") or {}):
            if name not in names:
                names.append(name)
    labels = _version_labels(versions)
    directions = hist.get("higher_is_better")
    numbers_of = [len(versions) - i for i in range(len(versions))]
    return {"index": index, "hist": _part(hist), "versions": fields(versions), "names": names,
            "trend_chart": _trend_chart(charts, versions) if versions else None,
            "pareto_charts": _pareto_charts(charts, versions, directions
                                            if isinstance(directions, Mapping) else {}),
            "unpriced": [labels[i] for i, v in enumerate(versions)
                         if not _is_number(v.get("cost_per_row"))],
            "costs": [numbers.usage(v.get("cost_per_row"), "usd") for v in versions],
            "numbers": numbers_of, "searches": _searches(hist.get("searches"))}


def _searches(value: Any) -> list[dict[str, Any]]:
    """A history's searches for its template: each with the metrics its runs have, in order,
    and how many runs it made on each part."""
    out = []
    for search in value if isinstance(value, list) else []:
        if not isinstance(search, Mapping):
            continue
        runs = [r for r in search.get("runs") or [] if isinstance(r, Mapping)]
        names: list[str] = []
        for r in runs:
            names += [m for m in _mapping(r.get("metrics")) if m not in names]
        parts = [str(r.get("part")) for r in runs]
        made = ", ".join(f"{parts.count(p)} {p}" for p in dict.fromkeys(parts))
        out.append({"search": fields(search), "runs": fields(runs), "names": names,
                    "made": made})
    return out


# --- the page ---------------------------------------------------------------------------------


@functools.cache
def environment() -> jinja2.Environment:
    """The templates' environment, made once: autoescaped, strict about undefined names."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("promptctl.render", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(text=text, label=label, fmt=fmt, p=_p, signed=_signed,
                       interval=_interval, cost=_cost, short=_short, exact=_exact,
                       plain=_plain, part=_part, field=_field, records=_records,
                       show_row=show_row_command)
    env.tests.update(real=_is_number)
    return env


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode() + "'"


class Assets(NamedTuple):
    style: str
    script: str
    csp: str


@functools.cache
def assets() -> Assets:
    """The page's style block, its script and the Content-Security-Policy that allows just them.

    Nothing is fetched (default-src 'none'); only this style and this script apply.
    """
    style = resources.files("promptctl.render").joinpath("templates/report.css").read_text("utf-8")
    script = environment().get_template("report.js.j2").render(marks=Markup(marks_js_class()))
    csp = (f"default-src 'none'; script-src {_hash(script)}; style-src {_hash(style)}; "
           "base-uri 'none'; form-action 'none'")
    return Assets(style, script, csp)


def __getattr__(name: str) -> str:  # the page's parts, read once they are asked for
    if name == "CSP":
        return assets().csp
    if name == "STYLE":
        return assets().style
    if name == "SCRIPT":
        return assets().script
    raise AttributeError(name)


_OVERALL = {EXIT_OK: ("passed", "pass"), EXIT_GATE: ("failed", "fail"),
            EXIT_INPUT: ("could not run: input error", "error"),
            EXIT_PROVIDER: ("could not run: provider failure", "error")}


def _gate_label(gate: Gate) -> str:
    if gate.kind == "min":
        return f"{gate.metric} ≥ {gate.limit:g}"
    if gate.kind == "max":
        return f"{gate.metric} ≤ {gate.limit:g}"
    return f"{gate.metric} drop ≤ {gate.limit:g}"


def check_context(result: CheckResult) -> dict[str, Any]:
    """What the verdict at the top of a `check --html` report shows: the overall verdict,
    the base, each prompt's verdict and every gate with its threshold and figures."""
    overall, status = _OVERALL.get(result.exit_code, (f"exit {result.exit_code}", "error"))
    s = result.summary
    parts = [f"{n} {what}" for n, what in ((s.fail, "failed"), (s.error, "could not be checked"),
                                           (s.warn, "warned"), (s.pass_, "passed")) if n]
    return {
        "command": "check", "intro": None, "current_label": "current",
        "baseline_label": "baseline", "overall": overall, "status": status,
        "headline": ", ".join(parts) if result.prompts else "no prompt changed",
        "base_ref": result.base.ref, "base_how": result.base.how,
        "base_commit": result.base.commit[:12], "head_commit": (result.head.commit or "-")[:12],
        "dirty": bool(result.head.dirty), "significance": result.significance,
        "strict": result.strict,
        "config_note": result.config.note() if result.config else None,
        "prompts": _gated(result.prompts),
        "deleted": [d.prompt for d in result.deleted],
    }


def _gated(prompts: Sequence[PromptCheck]) -> list[dict[str, Any]]:
    return [{
        "prompt": p.prompt, "status": p.status, "reasons": list(p.reasons),
        "error": p.error.message if p.error else None, "warnings": list(p.warnings),
        "gates": [{"label": _gate_label(g), "value": g.value, "baseline": g.baseline,
                   "delta": g.delta, "ci95": g.ci95, "p_value": g.p_value,
                   "regression": g.kind == "max_regression", "status": g.status,
                   "message": g.message} for g in p.gates]} for p in prompts]


_COMPAT_OVERALL = {EXIT_OK: ("compatible", "pass"), EXIT_GATE: ("regression", "fail"),
                   EXIT_INPUT: ("could not run: input error", "error"),
                   EXIT_PROVIDER: ("could not run: provider failure", "error")}


def compat_context(result: CompatResult) -> dict[str, Any]:
    """What the verdict at the top of a `compat --html` report shows, in the shape of
    `check_context`: model A is each file's baseline, model B its current side."""
    overall, status = _COMPAT_OVERALL.get(result.exit_code, (f"exit {result.exit_code}", "error"))
    s = result.summary
    parts = [f"{n} {what}" for n, what in ((s.fail, "regressed"), (s.error, "could not be compared"),
                                           (s.warn, "warned"), (s.pass_, "passed"),
                                           (s.skip, "skipped")) if n]
    strict = " (strict: any drop beyond the limit fails)" if result.strict else ""
    return {
        "command": "compat", "current_label": f"B ({result.to_model})",
        "baseline_label": f"A ({result.from_model})", "overall": overall, "status": status,
        "headline": ", ".join(parts) if result.files else "no file compared",
        "intro": f"From {result.from_model} (A) to {result.to_model} (B); a drop beyond a "
                 "file's max_regression fails when the paired test finds it significant at "
                 f"p < {result.significance:g}{strict}.",
        "config_note": None, "prompts": _gated(result.files), "deleted": [],
    }


def iter_report(runs: Sequence[Mapping[str, Any]] = (), diffs: Sequence[Mapping[str, Any]] = (),
                histories: Sequence[Mapping[str, Any]] = (), *, title: str | None = None,
                generated_at: str | None = None, version: str | None = None,
                text_limit: int = TEXT_LIMIT,
                check: CheckResult | CompatResult | None = None) -> Iterator[str]:
    """The report as one HTML document, in pieces to write one after the other.

    `runs`: documents as `promptctl show RUN --json` prints them ({"run", "rows"}), where
    "rows" may be any iterable (the store's rows of the run, read as they come: each run's
    rows are read once, here, and wait in a temporary file until their table is written);
    `diffs`: as `compare_runs` returns them; `histories`: as `history` does. Each text a
    cell shows is cut to `text_limit` characters. Raises InputError when vl-convert (the
    `report` extra) is missing.
    """
    require_charts()
    if text_limit < 1:
        raise ValueError(f"text_limit must be at least 1, not {text_limit}")
    if version is None:
        version = __version__
    charts = Charts()  # in page order: chart ids count up through the sections
    run_sections = [_run_section(i, doc, charts, text_limit) for i, doc in enumerate(runs, 1)]
    diff_sections = [_diff_section(i, diff, charts, text_limit)
                     for i, diff in enumerate(diffs, 1)]
    history_sections = [_history_section(i, hist, charts) for i, hist in enumerate(histories, 1)]
    if title is None:
        names = list(dict.fromkeys(
            [_plain(_mapping(d.get("run")).get("prompt")) for d in runs]
            + [_plain(_mapping(d.get("b")).get("prompt_name")) for d in diffs]
            + [_plain(h.get("prompt")) for h in histories]))
        title = "promptctl report" + (": " + ", ".join(names) if names else "")
    page = assets()
    return environment().get_template("report.html.j2").generate(
        runs=run_sections, diffs=diff_sections, histories=history_sections, title=title,
        check=None if check is None else fields(
            compat_context(check) if isinstance(check, CompatResult) else check_context(check)),
        generated_at=generated_at or datetime.now(UTC).isoformat(timespec="seconds")
        .replace("+00:00", "Z"), version=version, text_limit=text_limit,
        # Our own constants: the policy holds quotes that must stay as they are.
        csp=Markup(page.csp), style=Markup(page.style), script=Markup(page.script))


def render_report(runs: Sequence[Mapping[str, Any]] = (), diffs: Sequence[Mapping[str, Any]] = (),
                  histories: Sequence[Mapping[str, Any]] = (), *, title: str | None = None,
                  generated_at: str | None = None, version: str | None = None,
                  text_limit: int = TEXT_LIMIT) -> str:
    """The report as one HTML document (`iter_report` joined: for reports small enough to
    hold whole)."""
    return "".join(iter_report(runs, diffs, histories, title=title, generated_at=generated_at,
                               version=version, text_limit=text_limit))
