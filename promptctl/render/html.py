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
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any, NamedTuple

import jinja2
from markupsafe import Markup

from promptctl import __version__, install_command
from promptctl.errors import InputError
from promptctl.redact import redact
from promptctl.render.inert import MARKED, MARKED_CLASS, mark_name, marks_js_class

INSTALL_HINT = install_command("report")
TEXT_LIMIT = 20_000  # characters of one completion or input value shown; the rest is counted
LABEL_LIMIT = 48  # characters of a label inside a chart
# Score keys that are helpers of the metrics, not scores a reader looks for.
HIDDEN_SCORES = frozenset({"answer_num", "expected_num", "label_answer", "label_expected"})
# Per-row 0/1 scores: a 0 is a failed row.
PASS_FAIL_SCORES = ("exact_match", "format_validity", "contains", "regex")
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


def text(value: Any, limit: int = TEXT_LIMIT) -> Markup:
    """Untrusted `value` as HTML text: redacted, escaped, marked characters made visible."""
    s = redact(_plain(value)).replace("\r\n", "\n")
    extra = len(s) - limit
    if extra > 0:
        s = s[:limit]
    out: list[str] = []
    last = 0
    for m in MARKED.finditer(s):
        out.append(html.escape(s[last:m.start()]))
        out.append(f'<span class="ctl">{mark_name(m.group())}</span>')
        last = m.end()
    out.append(html.escape(s[last:]))
    if extra > 0:
        out.append(f'<span class="more">… {extra:,} more characters</span>')
    return Markup("".join(out))


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
        spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json",
                "config": CHART_CONFIG, **spec}
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
        direction = m.get("direction")
        values.append({"metric": label(name), "delta": m["delta"], "lo": lo, "hi": hi, "zero": 0,
                       "verdict": direction if direction in ("better", "worse") else "same"})
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


def _trend_chart(charts: Charts, versions: Sequence[Mapping[str, Any]]) -> Markup:
    """Each metric across the versions, oldest first; one line per model."""
    ordered = list(reversed(versions))  # history lists the newest first
    names: list[str] = []
    for v in ordered:
        for name in (v.get("metrics") or {}):
            if name not in names:
                names.append(name)
    ticks, values = [], []
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
                values.append({"version": tick, "metric": label(name), "value": value,
                               "model": label(v.get("model"), 40)})
    if not values:
        return Markup()
    many_models = len({r["model"] for r in values}) > 1
    encoding: dict[str, Any] = {
        "x": {"field": "version", "type": "ordinal", "sort": ticks, "title": "version, oldest "
              "first: number, commit (* a dirty work tree), date",
              "axis": {"labelAngle": -40, "labelOverlap": True}},
        "y": {"field": "value", "type": "quantitative", "title": None,
              "scale": {"zero": False, "nice": True}},
    }
    if many_models:
        encoding["color"] = {"field": "model", "type": "nominal", "title": "model"}
    spec = {
        "data": {"values": values},
        "facet": {"row": {"field": "metric", "type": "nominal", "sort": [label(n) for n in names],
                          "header": HEADER}},
        "spec": {"width": max(360, min(900, 28 * len(ticks))), "height": 90,
                 "mark": {"type": "line", "point": True, "color": "#0969da"},
                 "encoding": encoding},
        "resolve": {"scale": {"y": "independent"}},
        "spacing": 10,
    }
    return charts.svg(spec, "trend of each metric across versions")


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


def _limited(value: Any, limit: int = TEXT_LIMIT) -> str:
    """Untrusted `value` as plain text for the page's script: redacted, cut at `limit`."""
    s = redact(_plain(value)).replace("\r\n", "\n")
    extra = len(s) - limit
    return s if extra <= 0 else f"{s[:limit]} … {extra:,} more characters"


def _fmt_plain(value: Any) -> str:
    return str(fmt(value)) if _is_number(value) or value is None or isinstance(value, bool) \
        else _limited(value, 200)


def _row_data(row: Mapping[str, Any], keys: dict[str, int]) -> dict[str, Any]:
    """One row as the page's script renders it: every value already plain text.

    Short keys keep 10,000 rows small: id, n (sample), f (failed), in (input as
    [key, value] pairs), c (completion), err (request error), a (answer),
    na (why there is no answer), e (expected), s ([score key index, value, bad]),
    j ([metric, score, error, completion] of LLM judges), st ([step, state,
    answer or error, completion] of pipeline steps), m (latency, tokens, cache).
    """
    out: dict[str, Any] = {"id": _limited(row.get("row_id"), 200)}
    sample = row.get("sample")
    if _is_number(sample) and sample:
        out["n"] = sample
    if row_failed(row):
        out["f"] = 1
    value = row.get("input")
    out["in"] = ([[_limited(k, 200), _limited(v)] for k, v in value.items()]
                 if isinstance(value, Mapping) and value else [[None, _limited(value)]])
    if row.get("error") is not None:
        out["err"] = _limited(row["error"], 4000)
    else:
        out["c"] = _limited(row.get("completion"))
        if row.get("valid") is False:
            out["na"] = _limited(row.get("extract_error") or "", 400)
        else:
            out["a"] = _limited(row.get("answer"), 4000)
    if row.get("has_expected", True):
        out["e"] = _limited(row.get("expected"), 4000)
    scores = row.get("scores")
    if isinstance(scores, Mapping):
        out["s"] = [[keys.setdefault(_limited(k, 200), len(keys)), _fmt_plain(v),
                     int(k in PASS_FAIL_SCORES and _is_number(v) and v < 1)]
                    for k, v in scores.items() if k not in HIDDEN_SCORES]
    judges = row.get("judges")
    if isinstance(judges, Mapping):
        out["j"] = [[_limited(metric, 200),
                     None if j.get("score") is None else _fmt_plain(j.get("score")),
                     None if j.get("error") is None else _limited(j.get("error"), 2000),
                     None if j.get("completion") is None else _limited(j.get("completion"))]
                    for metric, j in judges.items() if isinstance(j, Mapping)]
    steps = row.get("steps")
    if isinstance(steps, Mapping):
        out["st"] = [[_limited(step_id, 200),
                      "error" if st.get("error") is not None else
                      ("skipped" if st.get("skipped") else "ok"),
                      _limited(st.get("error") if st.get("error") is not None
                               else st.get("answer"), 2000),
                      None if st.get("completion") is None else _limited(st.get("completion"))]
                     for step_id, st in steps.items() if isinstance(st, Mapping)]
    facts = []
    if _is_number(row.get("latency_ms")):
        facts.append(f"{fmt(row['latency_ms'])} ms")
    if _is_number(row.get("prompt_tokens")) or _is_number(row.get("completion_tokens")):
        facts.append(f"{fmt(row.get('prompt_tokens'))}+{fmt(row.get('completion_tokens'))} tok")
    if row.get("cached"):
        facts.append("cached")
    out["m"] = " · ".join(facts)
    return out


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


def _rows_block(rows: Sequence[Mapping[str, Any]], what: str) -> dict[str, Any]:
    """A rows table: its data as a JSON island, its body rendered by the page's script."""
    keys: dict[str, int] = {}
    data = [_row_data(r, keys) for r in rows]
    with_steps = any("st" in r for r in data)
    island = json_island({"keys": list(keys), "steps": with_steps, "rows": data})
    return {"what": what, "n": len(rows), "failed": sum(1 for r in data if r.get("f")),
            "steps": with_steps, "island": Markup(island)}  # escaped by json_island


# --- sections: the context of each template -----------------------------------------------------


def _failed_requests(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ten most frequent messages of failed requests, with their counts."""
    counts: dict[str, int] = {}
    for r in rows:
        if r.get("error") is not None:
            key = _plain(r["error"])
            counts[key] = counts.get(key, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:10]
    return {"top": top, "more": len(counts) - len(top)}


def _run_section(index: int, document: Mapping[str, Any], charts: Charts) -> dict[str, Any]:
    run = _mapping(document.get("run"))
    rows = list(document.get("rows") or [])
    eval_rows = [r for r in rows if r.get("kind", "eval") == "eval"]
    fewshot_rows = [r for r in rows if r.get("kind") == "fewshot"]
    latencies = [float(r["latency_ms"]) for r in eval_rows
                 if _is_number(r.get("latency_ms")) and r.get("error") is None]
    metric_chart = _metric_chart(charts, _mapping(run.get("metrics")), "metrics of the run")
    return {"index": index, "run": _part(run), "metric_chart": metric_chart,
            "latency_chart": _latency_chart(charts, latencies),
            "failed_requests": _failed_requests(rows), "eval_rows": _rows_block(eval_rows, "eval"),
            "fewshot_rows": _rows_block(fewshot_rows, "fewshot") if fewshot_rows else None}


def _diff_section(index: int, diff: Mapping[str, Any], charts: Charts) -> dict[str, Any]:
    flipped = _mapping(diff.get("flipped"))
    flips = [(key, title, [fields(e) for e in entries if isinstance(e, Mapping)])
             for key, title in FLIP_GROUPS if (entries := flipped.get(key))]
    return {"index": index, "diff": _part(diff), "a": _part(diff.get("a")),
            "b": _part(diff.get("b")), "flips": flips,
            "delta_chart": _delta_chart(charts, _mapping(diff.get("metrics")))}


def _history_section(index: int, hist: Mapping[str, Any], charts: Charts) -> dict[str, Any]:
    versions = [v for v in hist.get("versions") or [] if isinstance(v, Mapping)]
    names: list[str] = []
    for v in versions:
        for name in (v.get("metrics") or {}):
            if name not in names:
                names.append(name)
    return {"index": index, "hist": _part(hist), "versions": fields(versions), "names": names,
            "trend_chart": _trend_chart(charts, versions) if versions else None}


# --- the page ---------------------------------------------------------------------------------


@functools.cache
def environment() -> jinja2.Environment:
    """The templates' environment, made once: autoescaped, strict about undefined names."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("promptctl.render", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(text=text, label=label, fmt=fmt, p=_p, signed=_signed,
                       interval=_interval, cost=_cost, short=_short, exact=_exact, plain=_plain,
                       part=_part, field=_field, records=_records)
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


def render_report(runs: Sequence[Mapping[str, Any]] = (), diffs: Sequence[Mapping[str, Any]] = (),
                  histories: Sequence[Mapping[str, Any]] = (), *, title: str | None = None,
                  generated_at: str | None = None, version: str | None = None) -> str:
    """The report as one HTML document.

    `runs`: documents as `promptctl show RUN --json` prints them ({"run", "rows"});
    `diffs`: as `compare_runs` returns them; `histories`: as `history` does.
    Raises InputError when vl-convert (the `report` extra) is missing.
    """
    require_charts()
    if version is None:
        version = __version__
    charts = Charts()  # in page order: chart ids count up through the sections
    run_sections = [_run_section(i, doc, charts) for i, doc in enumerate(runs, 1)]
    diff_sections = [_diff_section(i, diff, charts) for i, diff in enumerate(diffs, 1)]
    history_sections = [_history_section(i, hist, charts) for i, hist in enumerate(histories, 1)]
    if title is None:
        names = list(dict.fromkeys(
            [_plain(_mapping(d.get("run")).get("prompt")) for d in runs]
            + [_plain(_mapping(d.get("b")).get("prompt_name")) for d in diffs]
            + [_plain(h.get("prompt")) for h in histories]))
        title = "promptctl report" + (": " + ", ".join(names) if names else "")
    page = assets()
    return environment().get_template("report.html.j2").render(
        runs=run_sections, diffs=diff_sections, histories=history_sections, title=title,
        generated_at=generated_at or datetime.now(UTC).isoformat(timespec="seconds")
        .replace("+00:00", "Z"), version=version,
        # Our own constants: the policy holds quotes that must stay as they are.
        csp=Markup(page.csp), style=Markup(page.style), script=Markup(page.script))
