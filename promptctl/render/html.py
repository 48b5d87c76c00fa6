"""The HTML report: one self-contained file (styles, script and charts inline) from plain data.

Its input is what the `--json` outputs print: runs as `promptctl show RUN --json`
gives them (`{"run": run_json(...), "rows": [...]}`), diffs as `compare_runs`
returns them and histories as `history` does. It reads nothing else.

Everything that came from a model, an eval set, a prompt file or git is text:
escaped, with control, bidirectional and other invisible characters shown as
visible marks, and passed through `redact`. No URL, attribute, event handler,
style or script is ever built from it. The rows travel as a JSON island (`<`,
`>`, `&`, line separators and invisible characters escaped) that the page's one
script renders as text nodes, a page at a time, so that 10,000 rows open fast.
A Content-Security-Policy meta tag forbids every network load and lets only
this file's own script and style block run (by their hashes). Charts are
Vega-Lite specs rendered to SVG by vl-convert (the `report` extra); their SVG is
rebuilt from an allowlist of elements and attributes before it is inlined.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from promptctl import install_command
from promptctl.errors import InputError
from promptctl.redact import redact

INSTALL_HINT = install_command("report")
TEXT_LIMIT = 20_000  # characters of one completion or input value shown; the rest is counted
LABEL_LIMIT = 48  # characters of a label inside a chart
# Score keys that are helpers of the metrics, not scores a reader looks for.
HIDDEN_SCORES = frozenset({"answer_num", "expected_num", "label_answer", "label_expected"})
# Per-row 0/1 scores: a 0 is a failed row.
PASS_FAIL_SCORES = ("exact_match", "format_validity", "contains", "regex")

# C0 and C1 controls (but tab and newline), bidirectional embeddings, overrides,
# isolates and marks, the BOM, lone surrogates and the tag characters (which spell
# hidden ASCII): shown as a visible mark, never passed to the browser as they are.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                        "\u2066-\u2069\ufeff\ud800-\udfff\U000e0000-\U000e007f]")


# --- text -------------------------------------------------------------------------------------


def _plain(value: Any) -> str:
    """Any value as the text a reader sees: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:  # a circular structure: not from JSON, but never a crash
        return repr(value)


def text(value: Any, limit: int = TEXT_LIMIT) -> str:
    """Untrusted `value` as HTML text: redacted, escaped, invisible characters made visible."""
    s = redact(_plain(value)).replace("\r\n", "\n")
    extra = len(s) - limit
    if extra > 0:
        s = s[:limit]
    out: list[str] = []
    last = 0
    for m in _INVISIBLE.finditer(s):
        out.append(html.escape(s[last:m.start()]))
        out.append(f'<span class="ctl">U+{ord(m.group()):04X}</span>')
        last = m.end()
    out.append(html.escape(s[last:]))
    if extra > 0:
        out.append(f'<span class="more">… {extra:,} more characters</span>')
    return "".join(out)


def label(value: Any, limit: int = LABEL_LIMIT) -> str:
    """Untrusted `value` as a short plain label for a chart: one line, no invisible characters."""
    s = _INVISIBLE.sub(lambda m: f"<U+{ord(m.group()):04X}>", redact(_plain(value)))
    s = " ".join(s.split())
    return s if len(s) <= limit else s[:limit - 1] + "…"


def _mapping(value: Any) -> Mapping[str, Any]:
    """`value` when it is a mapping, else an empty one: a document may lack any part."""
    return value if isinstance(value, Mapping) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for reading (3 significant digits, thousands separated), as HTML."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return text(value, 200)
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _num_cell(value: Any, digits: int = 3, shown: str | None = None) -> str:
    """A table cell with a number; `data-value` keeps it exact for scripts and tests."""
    exact = f' data-value="{value!r}"' if _is_number(value) else ""
    return f'<td class="num"{exact}>{shown if shown is not None else fmt(value, digits)}</td>'


def _p(value: Any) -> str:
    if not _is_number(value):
        return fmt(value)
    return "&lt;0.001" if value < 0.001 else f"{value:.3f}"


def _signed(value: Any) -> str:
    if not _is_number(value):
        return fmt(value)
    return ("+" if value > 0 else "") + fmt(value)


def _interval(ci: Any) -> str:
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(_is_number(v) for v in ci):
        return f"[{fmt(ci[0])}, {fmt(ci[1])}]"
    return "–"


def _cost(value: Any) -> str:
    if not _is_number(value):
        return fmt(value)
    return f"${value:.4f}" if value >= 0.01 or value == 0 else f"${value:.6f}"


def _short(sha: Any, n: int = 12) -> str:
    return text(sha[:n]) if isinstance(sha, str) else "–"


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

    def svg(self, spec: dict[str, Any], description: str) -> str:
        """The chart of `spec` as inline SVG markup inside a figure."""
        require_charts()
        import vl_convert

        self.count += 1
        spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json",
                "config": CHART_CONFIG, **spec}
        # No base URL is allowed: a spec can load no data from anywhere.
        raw = vl_convert.vegalite_to_svg(spec, allowed_base_urls=[])
        return (f'<figure class="chart" aria-label="{html.escape(description)}">'
                f"{sanitize_svg(raw, f'c{self.count}-')}</figure>")


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
    return html.escape(_INVISIBLE.sub("?", value), quote=False)


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


def _metric_chart(charts: Charts, metrics: Mapping[str, Any], what: str) -> str:
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
        return ""
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


def _latency_chart(charts: Charts, latencies: Sequence[float]) -> str:
    """A histogram of the answered rows' latency (binned here: the spec stays small)."""
    if len(latencies) < 10:  # too few rows for a shape
        return ""
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


def _delta_chart(charts: Charts, metrics: Mapping[str, Any]) -> str:
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
        return ""
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


def _trend_chart(charts: Charts, versions: Sequence[Mapping[str, Any]]) -> str:
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
        return ""
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


# --- rows -------------------------------------------------------------------------------------


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


def _kv(value: Any) -> str:
    """A row's input: one line per variable."""
    if isinstance(value, Mapping) and value:
        return "".join(f'<div class="kv"><span class="k">{text(k, 200)}</span> '
                       f'<span class="v">{text(v)}</span></div>' for k, v in value.items())
    return f'<div class="v">{text(value)}</div>'


def _limited(value: Any, limit: int = TEXT_LIMIT) -> str:
    """Untrusted `value` as plain text for the page's script: redacted, cut at `limit`."""
    s = redact(_plain(value)).replace("\r\n", "\n")
    extra = len(s) - limit
    return s if extra <= 0 else f"{s[:limit]} … {extra:,} more characters"


def _fmt_plain(value: Any) -> str:
    return fmt(value) if _is_number(value) or value is None or isinstance(value, bool) \
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


_JSON_ESCAPED = re.compile("[<>&\u2028\u2029" + _INVISIBLE.pattern[1:])


def json_island(value: Any) -> str:
    """`value` as JSON that is safe inside <script type="application/json">.

    `<`, `>` and `&` are escaped (no `</script>` or `<!--` can end or bend the
    element), and so are U+2028/2029 and every invisible character, so that the
    page's source holds none of them either.
    """
    return _JSON_ESCAPED.sub(_escape_json_char,
                             json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _rows_block(rows: Sequence[Mapping[str, Any]], what: str) -> str:
    """The rows table: its data as a JSON island, its body rendered by the page's script."""
    keys: dict[str, int] = {}
    data = [_row_data(r, keys) for r in rows]
    with_steps = any("st" in r for r in data)
    failed = sum(1 for r in data if r.get("f"))
    head = ("<tr><th>row</th><th>input</th><th>completion</th><th>answer</th><th>expected</th>"
            f"<th>scores</th>{'<th>steps</th>' if with_steps else ''}<th>latency, tokens</th></tr>")
    island = json_island({"keys": list(keys), "steps": with_steps, "rows": data})
    return (f'<div class="rows" data-kind="{what}">'
            '<div class="controls"><input type="search" class="search" placeholder="Search rows" '
            f'aria-label="Search the {what} rows"> <label><input type="checkbox" class="failures"> '
            f"failures only ({failed:,})</label> "
            f'<output class="count">{len(rows):,} rows</output></div>'
            f'<table class="rowtable{" steps" if with_steps else ""}"><thead>{head}</thead>'
            '<tbody></tbody></table><button type="button" class="more" hidden>Show more rows'
            f'</button><script type="application/json" class="rowdata">{island}</script></div>')


# --- sections ---------------------------------------------------------------------------------


def _facts(pairs: Iterable[tuple[str, str]]) -> str:
    return ('<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in pairs)
            + "</dl>")


def _metrics_table(metrics: Mapping[str, Any], css: str = "metrics") -> str:
    rows = []
    for name, m in metrics.items():
        if not isinstance(m, Mapping):
            continue
        rows.append(f'<tr data-metric="{html.escape(label(name, 200))}"><th>{text(name, 200)}</th>'
                    f'{_num_cell(m.get("value"))}{_num_cell(m.get("n"))}'
                    f'<td class="num">{_interval(m.get("ci95"))}</td></tr>')
    if not rows:
        return '<p class="dim">no metrics</p>'
    return (f'<table class="{css}"><thead><tr><th>metric</th><th>value</th><th>n</th>'
            f"<th>95% interval</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _warnings(items: Any) -> str:
    if not items:
        return ""
    return ('<ul class="warnings">' + "".join(f"<li>{text(w, 2000)}</li>" for w in items)
            + "</ul>")


def _errors(rows: Sequence[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        if r.get("error") is not None:
            key = _plain(r["error"])
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return ""
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:10]
    more = len(counts) - len(top)
    return ('<h3>Failed requests</h3><ul class="errors">'
            + "".join(f'<li><b>{n:,}×</b> {text(msg, 2000)}</li>' for msg, n in top)
            + (f'<li class="dim">and {more:,} other messages</li>' if more else "") + "</ul>")


def _stat(name: str, value: str, exact: Any = None) -> str:
    data = f' data-value="{exact!r}"' if _is_number(exact) else ""
    return f'<div class="stat"><div class="sv"{data}>{value}</div><div class="sn">{name}</div></div>'


def _run_section(index: int, document: Mapping[str, Any], charts: Charts) -> str:
    run = document.get("run") or {}
    rows = list(document.get("rows") or [])
    eval_rows = [r for r in rows if r.get("kind", "eval") == "eval"]
    fewshot_rows = [r for r in rows if r.get("kind") == "fewshot"]
    tokens = _mapping(run.get("tokens"))
    latency = _mapping(run.get("latency_ms"))
    dirty = ' <span class="warn">dirty work tree</span>' if run.get("git_dirty") else ""
    facts = _facts([
        ("prompt", f"{text(run.get('prompt'))} <span class=\"dim\">{text(run.get('prompt_path'))}"
                   "</span>"),
        ("prompt version", f"<code>{_short(run.get('prompt_version'))}</code>"),
        ("commit", f"<code>{_short(run.get('git_commit'))}</code>{dirty}"
                   + (f" on {text(run.get('git_branch'))}" if run.get("git_branch") else "")),
        ("model", f"{text(run.get('model'))} <span class=\"dim\">via "
                  f"{text(run.get('endpoint'))}</span>"),
        ("eval set", f"{text(run.get('evalset'))} <code>{_short(run.get('evalset_version'))}</code>"),
        ("status", text(run.get("status"))),
        ("created", text(run.get("created_at"))),
    ] + ([("fingerprints", text(", ".join(map(_plain, run["system_fingerprints"]))))]
         if run.get("system_fingerprints") else []))
    errors = run.get("errors") or 0
    stats = "".join([
        _stat("rows", fmt(run.get("n")), run.get("n")),
        _stat("failed requests", f'<span class="{"err" if errors else ""}">{fmt(errors)}</span>',
              errors),
        _stat("from cache", fmt(run.get("cached")), run.get("cached")),
        _stat("retries", fmt(run.get("retries")), run.get("retries")),
        _stat("prompt tokens", fmt(tokens.get("prompt")), tokens.get("prompt")),
        _stat("completion tokens", fmt(tokens.get("completion")), tokens.get("completion")),
        _stat("cost", _cost(run.get("cost_usd")), run.get("cost_usd")),
        *(_stat(f"latency {k}", f"{fmt(latency.get(k))} ms", latency.get(k))
          for k in ("p50", "p75", "p90", "p99") if latency.get(k) is not None),
    ])
    metrics = _mapping(run.get("metrics"))
    fewshot = _mapping(run.get("fewshot_metrics"))
    latencies = [float(r["latency_ms"]) for r in eval_rows
                 if _is_number(r.get("latency_ms")) and r.get("error") is None]
    parts = [
        f'<section class="run" id="run-{index}"><h2>Run <code>{text(run.get("id"))}</code> · '
        f"{text(run.get('prompt'))} · {text(run.get('model'))}</h2>",
        f'<div class="overview">{facts}<div class="stats">{stats}</div></div>',
        '<h3>Metrics</h3><div class="split">', _metrics_table(metrics),
        _metric_chart(charts, metrics, "metrics of the run"), "</div>",
    ]
    if any(isinstance(m, Mapping) and m.get("n") for m in fewshot.values()):
        parts += ['<h3>On its own few-shot examples</h3><div class="split">',
                  _metrics_table(fewshot, "metrics fewshot"), "</div>"]
    steps = run.get("steps")
    if isinstance(steps, Mapping) and steps:
        parts.append("<h3>Steps</h3>")
        for step_id, step in steps.items():
            step_metrics = step.get("metrics") if isinstance(step, Mapping) else None
            parts.append(f"<h4>{text(step_id, 200)}</h4>"
                         + _metrics_table(_mapping(step_metrics)))
    gap = run.get("composability_gap")
    if isinstance(gap, Mapping):
        parts.append(f'<p>Composability gap: <b>{fmt(gap.get("value"))}</b> '
                     f'<span class="dim">(n = {fmt(gap.get("n"))})</span></p>')
    if isinstance(run.get("consistency"), Mapping):
        parts.append("<h3>Consistency across samples</h3>" + _facts(
            (text(k, 200), fmt(v) if _is_number(v) else text(v, 400))
            for k, v in run["consistency"].items()))
    parts.append(_errors(rows))
    hist = _latency_chart(charts, latencies)
    if hist:
        parts += ["<h3>Latency</h3>", hist]
    parts += [f"<h3>Rows <span class=\"dim\">({len(eval_rows):,})</span></h3>",
              _rows_block(eval_rows, "eval")]
    if fewshot_rows:
        parts += [f"<details class=\"fewshot\"><summary>Few-shot examples scored as rows "
                  f"({len(fewshot_rows):,})</summary>", _rows_block(fewshot_rows, "fewshot"),
                  "</details>"]
    parts.append("</section>")
    return "".join(parts)


def _side(name: str, brief: Mapping[str, Any]) -> str:
    dirty = ' <span class="warn">dirty</span>' if brief.get("git_dirty") else ""
    return (f"<tr><th>{name}</th><td><code>{text(brief.get('id'))}</code></td>"
            f"<td>{text(brief.get('prompt_name'))}</td>"
            f"<td><code>{_short(brief.get('prompt_version'))}</code></td>"
            f"<td><code>{_short(brief.get('git_commit'))}</code>{dirty}</td>"
            f"<td>{text(brief.get('model'))}</td><td>{text(brief.get('created_at'))}</td></tr>")


FLIP_GROUPS = (("pass_to_fail", "Passed in A, failed in B"),
               ("fail_to_pass", "Failed in A, passed in B"),
               ("biggest_error_increases", "Largest increases of the error"))


def _flips(flipped: Mapping[str, Any]) -> str:
    parts = []
    for key, title in FLIP_GROUPS:
        entries = flipped.get(key) or []
        if not entries:
            continue
        rows = []
        for e in entries:
            if not isinstance(e, Mapping):
                continue
            if "error_a" in e:
                why = f"error {fmt(e.get('error_a'))} → {fmt(e.get('error_b'))}"
            else:
                why = text(e.get("metric"), 200)
                if "pass_a" in e:
                    why += f" {fmt(e.get('pass_a'))} → {fmt(e.get('pass_b'))}"
            rows.append(
                f'<tr><td class="id">{text(e.get("row_id"), 200)}<div class="dim">{why}</div></td>'
                f'<td>{_kv(e.get("input"))}<div class="exp">expected <b>{text(e.get("expected"))}'
                f"</b></div></td>"
                f'<td><div class="ans">answer <b>{text(e.get("answer_a"))}</b></div>'
                f'<pre>{text(e.get("completion_a"))}</pre></td>'
                f'<td><div class="ans">answer <b>{text(e.get("answer_b"))}</b></div>'
                f'<pre>{text(e.get("completion_b"))}</pre></td></tr>')
        parts.append(f'<h4>{title} <span class="dim">({len(rows):,})</span></h4>'
                     f'<table class="flips" data-group="{key}"><thead><tr><th>row</th>'
                     "<th>input and expected</th><th>A</th><th>B</th></tr></thead>"
                     f"<tbody>{''.join(rows)}</tbody></table>")
    return "".join(parts) or '<p class="dim">no row flipped</p>'


def _diff_section(index: int, diff: Mapping[str, Any], charts: Charts) -> str:
    a, b = diff.get("a") or {}, diff.get("b") or {}
    metrics = _mapping(diff.get("metrics"))
    rows = []
    for name, m in metrics.items():
        if not isinstance(m, Mapping):
            continue
        direction = m.get("direction")
        verdict = direction if direction in ("better", "worse", "same") else "–"
        arrow = "↑" if m.get("higher_is_better") else "↓"
        rows.append(
            f'<tr data-metric="{html.escape(label(name, 200))}" class="{verdict}">'
            f'<th>{text(name, 200)} <span class="dim" title="better when">{arrow}</span></th>'
            f'{_num_cell(m.get("a"))}{_num_cell(m.get("b"))}'
            f'{_num_cell(m.get("delta"), shown=_signed(m.get("delta")))}'
            f'<td class="num">{_interval(m.get("ci95"))}</td>'
            f'{_num_cell(m.get("p_value"), shown=_p(m.get("p_value")))}'
            f'<td>{text(m.get("test"), 100)}</td>{_num_cell(m.get("n"))}'
            f'<td class="verdict">{verdict}</td></tr>')
    table = ('<table class="deltas"><thead><tr><th>metric</th><th>A</th><th>B</th><th>delta</th>'
             "<th>95% interval</th><th>p-value</th><th>test</th><th>n</th><th></th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>") if rows else \
        '<p class="dim">no metric in common</p>'
    paired = (f"{fmt(diff.get('paired_rows'))} paired rows; {fmt(diff.get('only_in_a'))} only in "
              f"A, {fmt(diff.get('only_in_b'))} only in B; {fmt(diff.get('errors_excluded'))} "
              "left out for a failed request.")
    flipped = _mapping(diff.get("flipped"))
    return "".join([
        f'<section class="diff" id="diff-{index}"><h2>Diff: {text(b.get("prompt_name"))} '
        f'<code>{text(b.get("id"))}</code> against <code>{text(a.get("id"))}</code></h2>',
        '<table class="sides"><thead><tr><th></th><th>run</th><th>prompt</th><th>version</th>'
        "<th>commit</th><th>model</th><th>created</th></tr></thead><tbody>",
        _side("A", a), _side("B", b), "</tbody></table>",
        _warnings(diff.get("warnings")),
        "<h3>Deltas (B − A)</h3>", f'<p class="dim">{paired} Intervals are paired bootstrap '
        "95% intervals of the delta; p-values are from McNemar's exact test (0/1 scores) or a "
        "paired permutation test.</p>",
        '<div class="split">', table, _delta_chart(charts, metrics), "</div>",
        "<h3>Rows that flipped</h3>", _flips(flipped), "</section>",
    ])


def _history_section(index: int, hist: Mapping[str, Any], charts: Charts) -> str:
    versions = [v for v in hist.get("versions") or [] if isinstance(v, Mapping)]
    names: list[str] = []
    for v in versions:
        for name in (v.get("metrics") or {}):
            if name not in names:
                names.append(name)
    head = ("<tr><th>date</th><th>commit</th><th>subject</th><th>author</th><th>model</th>"
            "<th>run</th><th>n</th><th>errors</th>"
            + "".join(f"<th>{text(n, 200)}</th>" for n in names) + "</tr>")
    rows = []
    for v in versions:
        dirty = ' <span class="warn">dirty</span>' if v.get("git_dirty") else ""
        metrics = _mapping(v.get("metrics"))
        rows.append(
            f"<tr><td>{text(v.get('date') or v.get('created_at'))}</td>"
            f"<td><code>{_short(v.get('git_commit'))}</code>{dirty}</td>"
            f"<td>{text(v.get('subject'), 400) if v.get('subject') else '–'}</td>"
            f"<td>{text(v.get('author'), 200) if v.get('author') else '–'}</td>"
            f"<td>{text(v.get('model'))}</td><td><code>{text(v.get('run'))}</code></td>"
            f"{_num_cell(v.get('n'))}{_num_cell(v.get('errors'))}"
            + "".join(_num_cell(metrics.get(n)) for n in names) + "</tr>")
    model = f" with {text(hist.get('model'))}" if hist.get("model") else ""
    return "".join([
        f'<section class="history" id="history-{index}"><h2>History of '
        f"{text(hist.get('prompt'))}{model}</h2>",
        _warnings(hist.get("warnings")),
        _trend_chart(charts, versions) if versions else '<p class="dim">no complete run</p>',
        f'<h3>Versions <span class="dim">({len(versions):,}, newest first)</span></h3>',
        f'<table class="versions"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>',
        "</section>",
    ])


# --- the page ---------------------------------------------------------------------------------

STYLE = """
:root{--fg:#1f2328;--dim:#656d76;--line:#d8dee4;--bg:#fff;--soft:#f6f8fa;--bad:#cf222e;
--good:#1a7f37;--warn:#9a6700;--accent:#0969da}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
header{padding:16px 24px;border-bottom:1px solid var(--line);background:var(--soft)}
header h1{margin:0 0 4px;font-size:20px}
nav a{margin-right:14px;color:var(--accent);text-decoration:none}
main{padding:8px 24px 48px}
section{border-bottom:1px solid var(--line);padding-bottom:24px}
h2{font-size:18px;margin:24px 0 8px}h3{font-size:15px;margin:20px 0 8px}h4{margin:14px 0 6px}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{margin:0;white-space:pre-wrap;overflow-wrap:anywhere}
.dim{color:var(--dim)}.err{color:var(--bad)}.warn{color:var(--warn)}
.ctl{display:inline-block;border:1px solid var(--bad);border-radius:3px;padding:0 2px;
color:var(--bad);font:10px ui-monospace,monospace;vertical-align:middle}
.more{color:var(--dim);font-style:italic}
.overview{display:flex;flex-wrap:wrap;gap:16px 40px;align-items:flex-start}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:0}
dl.facts dt{color:var(--dim)}dl.facts dd{margin:0}
.stats{display:grid;grid-template-columns:repeat(4,minmax(110px,auto));gap:8px}
.stat{border:1px solid var(--line);border-radius:6px;padding:6px 10px;background:var(--soft)}
.sv{font-size:16px;font-weight:600}.sn{color:var(--dim);font-size:12px}
.split{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
figure.chart{margin:0}figure.chart svg{display:block;max-width:100%;height:auto}
table{border-collapse:collapse}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:var(--soft);position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.worse .verdict{color:var(--bad)}tr.better .verdict{color:var(--good)}
ul.warnings li{color:var(--warn)}
.controls{display:flex;gap:14px;align-items:center;margin:6px 0}
.controls input[type=search]{width:320px;padding:5px 8px;border:1px solid var(--line);
border-radius:6px;font:inherit}
table.rowtable,table.flips{width:100%;table-layout:fixed}
table.rowtable th:nth-child(1){width:8%}table.rowtable th:nth-child(2){width:22%}
table.rowtable th:nth-child(3){width:30%}table.rowtable th:nth-child(4),
table.rowtable th:nth-child(5){width:8%}table.rowtable th:nth-child(6){width:14%}
table.rowtable th:last-child{width:10%}
table.rowtable.steps th:nth-child(3){width:22%}table.rowtable.steps th:nth-child(7){width:14%}
table.rowtable td{overflow-wrap:anywhere}
table.flips th:nth-child(1){width:12%}table.flips th:nth-child(2){width:28%}
table.flips td{overflow-wrap:anywhere}
tr.f td.id{border-left:3px solid var(--bad)}
td.id{font:12px ui-monospace,monospace}
.kv .k,.step .k{color:var(--dim);font-size:12px}
.sc{white-space:nowrap}.sc.bad,.sc.bad b{color:var(--bad)}
.judge{white-space:normal}
details summary{cursor:pointer;color:var(--accent);font-size:12px}
details.fewshot{margin-top:16px}details.fewshot>summary{font-size:15px;font-weight:600}
button.more{margin:8px 0;padding:5px 12px;border:1px solid var(--line);border-radius:6px;
background:var(--soft);font:inherit;cursor:pointer}
footer{padding:12px 24px;color:var(--dim);font-size:12px}
"""

# Renders each rows table from its JSON island, a page at a time, and filters it.
# Every value goes into the page as a text node (invisible characters as marks),
# never as markup; it builds no URL and no attribute from the data.
SCRIPT = """
(function () {
  "use strict";
  var PAGE = 200;
  var INVISIBLE = new RegExp("[\\0-\\x08\\x0b-\\x1f\\x7f-\\x9f\\u061c\\u200e\\u200f" +
    "\\u202a-\\u202e\\u2066-\\u2069\\ufeff\\ud800-\\udfff\\u{e0000}-\\u{e007f}]", "gu");
  function text(parent, value) {
    var s = String(value), last = 0, m;
    INVISIBLE.lastIndex = 0;
    while ((m = INVISIBLE.exec(s)) !== null) {
      if (m.index > last) { parent.appendChild(document.createTextNode(s.slice(last, m.index))); }
      var mark = document.createElement("span");
      mark.className = "ctl";
      mark.textContent = "U+" + m[0].codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
      parent.appendChild(mark);
      last = m.index + m[0].length;
    }
    if (last < s.length) { parent.appendChild(document.createTextNode(s.slice(last))); }
    return parent;
  }
  function el(tag, cls, value) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (value !== undefined && value !== null) { text(e, value); }
    return e;
  }
  function add(parent, child) { parent.appendChild(child); return child; }
  function space(parent) { parent.appendChild(document.createTextNode(" ")); }
  function details(summary, body) {
    var d = el("details");
    add(d, el("summary", null, summary));
    add(d, el("pre", null, body));
    return d;
  }
  function render(r, data) {
    var tr = el("tr", r.f ? "f" : null);
    var id = add(tr, el("td", "id", r.id));
    if (r.n) { add(id, el("span", "dim", " #" + r.n)); }
    var input = add(tr, el("td"));
    r.in.forEach(function (kv) {
      var line = add(input, el("div", "kv"));
      if (kv[0] !== null) { add(line, el("span", "k", kv[0])); space(line); }
      add(line, el("span", "v", kv[1]));
    });
    var said = add(tr, el("td")), answer = add(tr, el("td"));
    if (r.err !== undefined) {
      add(said, el("div", "err", "request failed: " + r.err));
      add(answer, el("span", "dim", "\\u2013"));
    } else {
      add(said, el("pre", null, r.c));
      if (r.na !== undefined) {
        add(answer, el("span", "err", "no answer"));
        if (r.na) { space(answer); add(answer, el("span", "dim", r.na)); }
      } else {
        text(answer, r.a);
      }
    }
    var expected = add(tr, el("td"));
    if (r.e === undefined) { add(expected, el("span", "dim", "none")); } else { text(expected, r.e); }
    var scores = add(tr, el("td"));
    (r.s || []).forEach(function (s) {
      var line = add(scores, el("div", s[2] ? "sc bad" : "sc", data.keys[s[0]] + " "));
      add(line, el("b", null, s[1]));
    });
    (r.j || []).forEach(function (j) {
      var bad = j[2] !== null || j[1] === null;
      var line = add(scores, el("div", bad ? "sc judge bad" : "sc judge", j[0] + " (judge) "));
      if (j[2] !== null) { add(line, el("span", "err", "judge error: " + j[2])); }
      else { add(line, el("b", null, j[1] === null ? "no score" : j[1])); }
      if (j[3] !== null) { add(line, details("judge said", j[3])); }
    });
    if (data.steps) {
      var steps = add(tr, el("td"));
      (r.st || []).forEach(function (s) {
        var line = add(steps, el("div", "step"));
        add(line, el("span", "k", s[0]));
        line.appendChild(document.createTextNode(" \\u2192 "));
        if (s[1] === "error") { add(line, el("span", "err", "error: " + s[2])); }
        else if (s[1] === "skipped") { add(line, el("span", "dim", "skipped")); }
        else { add(line, el("span", "v", s[2])); }
        if (s[3] !== null) { add(line, details("completion", s[3])); }
      });
    }
    add(tr, el("td", "dim", r.m));
    return tr;
  }
  function strings(value, out) {
    if (typeof value === "string") { out.push(value); }
    else if (Array.isArray(value)) { value.forEach(function (v) { strings(v, out); }); }
    return out;
  }
  function haystack(r, data) {
    var out = strings([r.id, r.c, r.err, r.a, r.na, r.e, r.m, r.in, r.j, r.st], []);
    (r.s || []).forEach(function (s) { out.push(data.keys[s[0]], s[1]); });
    return out.join("\\n").toLowerCase();
  }
  function count(n) { return n.toLocaleString("en"); }
  document.querySelectorAll("div.rows").forEach(function (block) {
    var data = JSON.parse(block.querySelector("script.rowdata").textContent);
    var tbody = block.querySelector("tbody");
    var search = block.querySelector("input.search");
    var failures = block.querySelector("input.failures");
    var counter = block.querySelector("output.count");
    var more = block.querySelector("button.more");
    var hay = null, matches = [], shown = 0, timer = 0;
    function next() {
      var end = Math.min(matches.length, shown + PAGE);
      var rows = document.createDocumentFragment();
      for (var i = shown; i < end; i++) { rows.appendChild(render(data.rows[matches[i]], data)); }
      tbody.appendChild(rows);
      shown = end;
      more.hidden = shown >= matches.length;
      more.textContent = "Show " + count(Math.min(PAGE, matches.length - shown)) + " more rows";
      counter.textContent = count(matches.length) + " of " + count(data.rows.length) + " rows" +
        (shown < matches.length ? " (" + count(shown) + " shown)" : "");
    }
    function apply() {
      var query = search.value.trim().toLowerCase(), onlyFailures = failures.checked;
      if (query && hay === null) { hay = data.rows.map(function (r) { return haystack(r, data); }); }
      matches = [];
      for (var i = 0; i < data.rows.length; i++) {
        if ((!onlyFailures || data.rows[i].f) && (!query || hay[i].indexOf(query) !== -1)) {
          matches.push(i);
        }
      }
      tbody.textContent = "";
      shown = 0;
      next();
    }
    search.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(apply, 120);
    });
    failures.addEventListener("change", apply);
    more.addEventListener("click", next);
    apply();
  });
})();
"""


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode() + "'"


# Nothing is fetched (default-src 'none'); only the style block and the script above apply.
CSP = (f"default-src 'none'; script-src {_hash(SCRIPT)}; style-src {_hash(STYLE)}; "
       "base-uri 'none'; form-action 'none'")


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
        from promptctl import __version__ as version
    charts = Charts()
    when = generated_at or datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    sections, nav = [], []
    for i, doc in enumerate(runs, 1):
        sections.append(_run_section(i, doc, charts))
        run = doc.get("run") or {}
        nav.append(f'<a href="#run-{i}">run {text(run.get("prompt"), 60)} '
                   f'<code>{text(str(run.get("id"))[:8])}</code></a>')
    for i, diff in enumerate(diffs, 1):
        sections.append(_diff_section(i, diff, charts))
        nav.append(f'<a href="#diff-{i}">diff {text((diff.get("b") or {}).get("prompt_name"), 60)}'
                   "</a>")
    for i, hist in enumerate(histories, 1):
        sections.append(_history_section(i, hist, charts))
        nav.append(f'<a href="#history-{i}">history {text(hist.get("prompt"), 60)}</a>')
    if title is None:
        names = list(dict.fromkeys(
            [_plain((d.get("run") or {}).get("prompt")) for d in runs]
            + [_plain((d.get("b") or {}).get("prompt_name")) for d in diffs]
            + [_plain(h.get("prompt")) for h in histories]))
        title = "promptctl report" + (": " + ", ".join(names) if names else "")
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n",
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n',
        '<meta name="referrer" content="no-referrer">\n',
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        f"<title>{html.escape(label(title, 300))}</title>\n<style>{STYLE}</style></head>\n<body>\n",
        f"<header><h1>{text(title, 300)}</h1>",
        f'<div class="dim">generated {text(when)} by promptctl {text(version)}</div>',
        f"<nav>{''.join(nav)}</nav></header>\n<main>\n",
        "\n".join(sections) or '<p class="dim">nothing to report</p>',
        f"\n</main>\n<footer>promptctl {text(version)}</footer>\n<script>{SCRIPT}</script>\n"
        "</body></html>\n",
    ])
