"""Numbers as every output shows them: fixed decimals in tables, no "-0", "-" for none."""

from __future__ import annotations

import math
from typing import Any

from promptctl.results import UsageDiff


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def num(value: Any, digits: int = 3) -> str:
    """`0.667`; `-` for no value (None, NaN, infinity); never `-0.000`."""
    if not _finite(value):
        return "-"
    text = f"{value:.{digits}f}"
    return text.lstrip("-") if float(text) == 0 else text


def signed(value: Any, digits: int = 3) -> str:
    """A change: `+0.050`, `-0.200`, and `0.000` for none (no sign on a zero)."""
    if not _finite(value):
        return "-"
    text = f"{value:+.{digits}f}"
    return text[1:] if float(text) == 0 else text


def interval(ci: Any) -> str:
    """A 95% interval of a change: `[-0.100, +0.050]`."""
    if not ci or len(ci) != 2:
        return "-"
    return f"[{signed(ci[0])}, {signed(ci[1])}]"


def p_value(p: Any) -> str:
    """`0.031`, `<0.001`, `-` for no test."""
    if not _finite(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def metric(result: dict[str, Any] | None) -> str:
    """A metric's value with its interval: `0.750 [0.600, 0.900]`."""
    if not result or not _finite(result.get("value")):
        return "-"
    text = num(result["value"])
    ci = result.get("ci95")
    if ci and len(ci) == 2:
        text += f" [{num(ci[0])}, {num(ci[1])}]"
    return text


def short(value: Any) -> str:
    """A number in a sentence: at most 3 decimals, no trailing zeros (`0.333`, `2`, `1.5`)."""
    if not _finite(value):
        return "-"
    if value != 0 and abs(value) < 0.001:
        return f"{value:.1g}"
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# A row's cost is a few millionths of a dollar: reports show it per 1,000 rows.
COST_ROWS = 1000
_UNIT_DIGITS = {"tokens": 1, "usd": 4, "ms": 0}


def usage(value: Any, unit: str, *, sign: bool = False) -> str:
    """A tokens, cost or latency figure of a diff: tokens with one decimal (a mean per row),
    a cost per row as USD per 1,000 rows, milliseconds whole; `-` for none."""
    if not _finite(value):
        return "-"
    scaled = value * COST_ROWS if unit == "usd" else value
    text = (signed if sign else num)(scaled, _UNIT_DIGITS.get(unit, 3))
    if unit == "usd" and text != "-":
        return text[0] + "$" + text[1:] if text[0] in "+-" else "$" + text
    return text


def usage_interval(ci: Any, unit: str) -> str:
    """A figure's 95% interval, as `usage` shows the figure: `[+$0.0100, +$0.0200]`."""
    if not ci or len(ci) != 2:
        return "-"
    return f"[{usage(ci[0], unit, sign=True)}, {usage(ci[1], unit, sign=True)}]"


def usage_label(name: str, unit: str) -> str:
    """A figure's name with its unit: `cost (USD / 1k rows)`, `latency p50 (ms)`."""
    return {"tokens": f"{name} / row", "usd": f"{name} (USD / {COST_ROWS // 1000}k rows)",
            "ms": f"{name} (ms)"}.get(unit, name)


USAGE_COLUMNS = ("per paired row", "A", "B", "delta (B-A)", "95% CI", "p", "n")


def usage_cells(diff: UsageDiff) -> list[list[str]]:
    """Per figure of tokens, cost and latency: its label, A, B, delta, interval, p, n; an
    unknown figure says `unknown` (an unknown cost is never 0)."""
    out = []
    for name, unit, f in diff.figures():
        if f.unknown is not None:
            out.append([usage_label(name, unit), "unknown", "unknown", "-", "-", "-", "-"])
            continue
        out.append([usage_label(name, unit), usage(f.a, unit), usage(f.b, unit),
                    usage(f.delta, unit, sign=True), usage_interval(f.ci95, unit),
                    p_value(f.p_value), str(f.n)])
    return out


def usage_notes(diff: UsageDiff) -> list[str]:
    """Why a figure is unknown, and the rows latency leaves out (answered from the cache)."""
    why: dict[str, list[str]] = {}
    for name, _, f in diff.figures():
        if f.unknown is not None:
            why.setdefault(f.unknown, []).append(name)
    notes = [f"{', '.join(names)} unknown: {reason}" for reason, names in why.items()]
    if diff.latency_cached_excluded:
        notes.append(f"latency leaves out {diff.latency_cached_excluded} paired row(s) "
                     "answered from the cache on either side (a cache hit replays an earlier "
                     "request's latency)")
    return notes


def usage_line(diff: UsageDiff) -> str:
    """The tokens, cost and latency change on one line: `total tokens / row 6.0 → 15.0
    (+9.0), ...`; an unknown figure says so."""
    parts = []
    for (name, _, f), cells in zip(diff.figures(), usage_cells(diff), strict=True):
        if name in ("prompt tokens", "completion tokens"):
            continue
        parts.append(f"{cells[0]} unknown" if f.unknown is not None
                     else f"{cells[0]} {cells[1]} → {cells[2]} ({cells[3]})")
    return ", ".join(parts)
