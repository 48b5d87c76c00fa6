"""Answer extraction and per-row scores.

A scorer looks at one row; aggregates over rows live in `metrics`.
"""

from __future__ import annotations

import json
import math
import re
import string
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from promptctl.toolcalls import TOOL_OUTPUT_TYPES, Tool, ToolCall, read_calls

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.S)
# A decimal number; commas only as thousands separators (1,234,567.5), never as a decimal point.
# ASCII digits only: int()/float() would also take "nan", "1_000" and other scripts' digits.
_NUMBER = re.compile(
    r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?|[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:[eE][+-]?[0-9]+)?")
_MINUS_SIGNS = str.maketrans({"\u2212": "-"})  # the typographic minus sign
_LABEL_EDGES = string.whitespace + string.punctuation


# Answers read from a completion's text; a tool call answer is read from the calls the
# model made (see `extract_calls`).
TEXT_OUTPUT_TYPES = ("number", "integer", "string", "label", "json")
OUTPUT_TYPES = (*TEXT_OUTPUT_TYPES, *TOOL_OUTPUT_TYPES)


@dataclass(frozen=True)
class OutputSpec:
    """How the answer is read out of a completion."""

    pattern: str | None = None
    type: str = "string"
    labels: tuple[str, ...] = ()
    json_schema: dict[str, Any] | None = None
    # The tools the prompt declares: what a tool call answer is checked against.
    tools: tuple[Tool, ...] = ()

    @property
    def reads_calls(self) -> bool:
        """Whether the answer is the model's tool calls rather than its text."""
        return self.type in TOOL_OUTPUT_TYPES

    @cached_property
    def regex(self) -> re.Pattern[str] | None:
        return re.compile(self.pattern) if self.pattern is not None else None


@dataclass(frozen=True)
class Extraction:
    """The answer read from a completion, or why none could be read."""

    answer: Any
    valid: bool
    error: str | None = None
    # The answer text as found in the completion, before conversion to `output.type`.
    text: str | None = None
    # A tool call answer's calls, read and checked (None: the answer was read from text).
    calls: tuple[ToolCall, ...] | None = None


def _parse_number(text: str) -> int | float | None:
    """A finite number written in `text`, or None. Integers stay exact ints."""
    cleaned = text.strip().translate(_MINUS_SIGNS)
    if _NUMBER.fullmatch(cleaned) is None:
        return None
    cleaned = cleaned.replace(",", "")
    if not any(c in cleaned for c in ".eE"):
        return int(cleaned)
    value = float(cleaned)
    return value if math.isfinite(value) else None


def _to_number(text: str, integer: bool) -> Any:
    value = _parse_number(text)
    if value is None:
        raise ValueError(f"{text[:40]!r} is not a finite number")
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{text[:40]!r} is not an integer")
            return int(value)
        return value
    return float(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"invalid JSON: {text[:40]} is out of range")
    return value


def _error_order(error: Any) -> list[tuple[bool, Any]]:
    """Sort schema errors by instance path; indices before keys so paths always compare."""
    return [(isinstance(p, str), p) for p in error.path]


def _label_around(label: str, folded: str) -> bool:
    """Whether `folded` is the label with only whitespace and punctuation around it."""
    edges = f"[{re.escape(_LABEL_EDGES)}]*"
    return re.fullmatch(edges + re.escape(label.casefold()) + edges, folded) is not None


def extract(completion: str, spec: OutputSpec) -> Extraction:
    """Find the answer with `pattern` (group `answer`, else 1, else all), then convert it."""
    text = completion
    if spec.regex is not None:
        match = spec.regex.search(completion)
        if match is None:
            return Extraction(None, False, "pattern did not match")
        if "answer" in spec.regex.groupindex:
            text = match.group("answer")
        elif spec.regex.groups >= 1:
            text = match.group(1)
        else:
            text = match.group(0)
        if text is None:
            return Extraction(None, False, "the answer group did not take part in the match")
    text = text.strip()
    kind = spec.type
    try:
        if kind in ("number", "integer"):
            return Extraction(_to_number(text, kind == "integer"), True, text=text)
        if kind == "label":
            folded = text.casefold()
            for label in spec.labels:
                if label.casefold() == folded:
                    return Extraction(label, True, text=text)
            # Tolerate surrounding punctuation and markdown such as **Billing** or "Billing.";
            # when several labels fit (C and C++ in "**C++**"), the longest is meant.
            fits = [label for label in spec.labels if label and _label_around(label, folded)]
            if fits:
                return Extraction(max(fits, key=len), True, text=text)
            return Extraction(text, False, f"{text[:40]!r} is not one of the labels", text=text)
        if kind == "json":
            fenced = _FENCE.match(text)
            if fenced:
                text = fenced.group(1).strip()
            value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
            if spec.json_schema:
                import jsonschema

                errors = sorted(jsonschema.validators.validator_for(spec.json_schema)(
                    spec.json_schema).iter_errors(value), key=_error_order)
                if errors:
                    where = "/".join(str(p) for p in errors[0].path) or "(root)"
                    return Extraction(value, False, f"schema: {where}: {errors[0].message}",
                                      text=text)
            return Extraction(value, True, text=text)
    except json.JSONDecodeError as exc:
        return Extraction(None, False, f"invalid JSON: {exc.msg}", text=text)
    except ValueError as exc:
        return Extraction(None, False, str(exc) or f"cannot convert {text[:40]!r} to {kind}",
                          text=text)
    return Extraction(text, True, text=text)


def extract_calls(raw: Any, spec: OutputSpec) -> Extraction:
    """The answer of a tool call output from the response's raw `tool_calls`.

    `tool_call`: the first call as `{"name", "arguments"}` (arguments parsed, or as written
    when they are not JSON), or None when the model called nothing; `tool_calls`: a list of
    those. The answer is unreadable (not `valid`) when a call names no function or its
    arguments are not JSON; a call that fits no declared tool is read all the same (the
    tool metrics count it as invalid).
    """
    calls = read_calls(raw, spec.tools)
    if spec.type == "tool_call":
        calls = calls[:1]
        answer: Any = calls[0].answer if calls else None
    else:
        answer = [c.answer for c in calls]
    unreadable = next((c for c in calls if not c.readable), None)
    return Extraction(answer, unreadable is None,
                      None if unreadable is None else unreadable.problem, calls=tuple(calls))


class _Bool:
    """A JSON boolean, kept apart from the numbers 0 and 1 (Python has True == 1)."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Bool) and other.value == self.value

    def __hash__(self) -> int:
        return hash((_Bool, self.value))


def _norm(value: Any) -> Any:
    if isinstance(value, bool):
        return _Bool(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        number = _parse_number(value)
        return value.strip().casefold() if number is None else number
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    return value


def equals(answer: Any, expected: Any) -> bool:
    """Numbers compare as numbers, strings stripped and case-folded, JSON structurally.

    Numbers compare exactly (7 == 7.0, "7" == 7), so two different integers are
    never equal however large they are.
    """
    return bool(_norm(answer) == _norm(expected))


def _kind_of(value: Any) -> str:
    """A JSON value's kind, as a message names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return "a number" if isinstance(value, int | float) else "text"


def unreachable(expected: Any, spec: OutputSpec) -> tuple[str, str] | None:
    """Why no answer read as `spec` says can equal `expected` (as `equals` compares them):
    (the reason, the fix), or None when some answer can. A JSON answer can be any value."""
    if expected is None:
        # null expects no readable answer (a step skipped, a row with nothing to extract):
        # an answer that cannot be read is right, which is a meaning, not a mistake.
        return None
    kind = spec.type
    if kind == "label":
        if any(equals(label, expected) for label in spec.labels):
            return None
        return (f"which is not one of the labels ({', '.join(spec.labels)})",
                "expect one of the labels (case does not matter), or add it to the labels")
    if kind in ("number", "integer"):
        value = numeric(expected)
        if value is None:
            return (f"which is {_kind_of(expected)}, not a number, but answers are read as {kind}s",
                    "write the expected answer as a number (7, 2.5), or change the output type")
        if kind == "integer" and not value.is_integer():
            return ("which is not a whole number, but answers are read as integers",
                    "write a whole number, or read answers as type: number")
        return None
    if kind == "string" and isinstance(expected, dict | list | tuple | bool):
        return (f"which is {_kind_of(expected)}, but answers are read as text",
                "write the expected answer as text, or read answers as type: json")
    return None


def numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number: float | int | None = value
    elif isinstance(value, str):
        number = _parse_number(value)
    else:
        return None
    if number is None or not math.isfinite(number):
        return None
    return float(number)


def class_name(value: Any) -> str:
    """The class a label answer or expected value stands for, compared as `equals` does."""
    norm = _norm(value)
    if isinstance(norm, float) and norm.is_integer():
        return str(int(norm))
    if isinstance(norm, int | float | str):
        return str(norm)
    return json.dumps(value, sort_keys=True, default=str)


def answer_text(extraction: Extraction) -> str:
    """The answer as the model wrote it (so `^7$` matches a number answer of 7)."""
    if extraction.text is not None:
        return extraction.text
    return str(extraction.answer)
