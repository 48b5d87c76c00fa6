"""Numbers as every output shows them: fixed decimals in tables, no "-0", "-" for none."""

from __future__ import annotations

import math
from typing import Any


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
