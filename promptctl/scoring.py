"""Answer extraction and per-row scores.

A scorer looks at one row; aggregates over rows live in `metrics`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from promptctl.evalsets import Row
from promptctl.prompts import OutputSpec

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.S)


@dataclass(frozen=True)
class Extraction:
    """The answer read from a completion, or why none could be read."""

    answer: Any
    valid: bool
    error: str | None = None


def _to_number(text: str, integer: bool) -> Any:
    value = float(text.strip().replace(",", "")) if isinstance(text, str) else float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    if integer:
        if not value.is_integer():
            raise ValueError(f"{text!r} is not an integer")
        return int(value)
    return value


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
            return Extraction(_to_number(text, kind == "integer"), True)
        if kind == "label":
            folded = text.casefold().strip(" .'\"`*")
            for label in spec.labels:
                if label.casefold() == folded:
                    return Extraction(label, True)
            return Extraction(text, False, f"{text[:40]!r} is not one of the labels")
        if kind == "json":
            fenced = _FENCE.match(text)
            if fenced:
                text = fenced.group(1)
            value = json.loads(text)
            if spec.json_schema:
                import jsonschema

                errors = sorted(jsonschema.validators.validator_for(spec.json_schema)(
                    spec.json_schema).iter_errors(value), key=lambda e: list(e.path))
                if errors:
                    where = "/".join(str(p) for p in errors[0].path) or "(root)"
                    return Extraction(value, False, f"schema: {where}: {errors[0].message}")
            return Extraction(value, True)
    except json.JSONDecodeError as exc:
        return Extraction(None, False, f"invalid JSON: {exc.msg}")
    except ValueError as exc:
        return Extraction(None, False, str(exc) or f"cannot convert {text[:40]!r} to {kind}")
    return Extraction(text, True)


def _norm(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        stripped = value.strip()
        try:
            number = float(stripped)
        except ValueError:
            return stripped.casefold()
        return number if math.isfinite(number) else stripped.casefold()
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def equals(answer: Any, expected: Any) -> bool:
    """Numbers compare as numbers, strings stripped and case-folded, JSON structurally."""
    a, e = _norm(answer), _norm(expected)
    if isinstance(a, float) and isinstance(e, float):
        return math.isclose(a, e, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == e)


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def score_row(extraction: Extraction, row: Row, metrics: tuple[str, ...]) -> dict[str, Any]:
    """Per-row scores for the metrics asked for.

    0/1 values for share metrics; `answer_num`/`expected_num` pairs for the
    numeric ones (rmse, mae, pearson, spearman are computed over pairs);
    the answer and expected label for f1_macro. A key is absent when the row
    cannot be scored for that metric (no expected, no numeric answer).
    """
    scores: dict[str, Any] = {"format_validity": 1.0 if extraction.valid else 0.0}
    has_expected = row.has_expected
    if has_expected and any(m in metrics for m in ("exact_match", "accuracy")):
        hit = extraction.valid and equals(extraction.answer, row.expected)
        scores["exact_match"] = 1.0 if hit else 0.0
    if has_expected and any(m in metrics for m in ("rmse", "mae", "pearson", "spearman")):
        e = _numeric(row.expected)
        a = _numeric(extraction.answer) if extraction.valid else None
        if e is not None and a is not None:
            scores["answer_num"] = a
            scores["expected_num"] = e
            scores["squared_error"] = (a - e) ** 2
    if has_expected and "f1_macro" in metrics:
        scores["label_expected"] = str(row.expected).strip()
        scores["label_answer"] = str(extraction.answer) if extraction.valid else None
    if has_expected and "contains" in metrics:
        hit = extraction.valid and str(row.expected).strip().casefold() in str(
            extraction.answer).casefold()
        scores["contains"] = 1.0 if hit else 0.0
    if "regex" in metrics and row.pattern is not None:
        hit = extraction.valid and re.search(row.pattern, str(extraction.answer)) is not None
        scores["regex"] = 1.0 if hit else 0.0
    return scores
