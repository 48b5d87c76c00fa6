"""The built-in metrics: a per-row scorer each, and one registration line each.

A metric's aggregate is one of the pure functions of `aggregates`; rows that cannot be
scored for a metric (no expected value, no numeric answer) leave its keys out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from promptctl.errors import InputError
from promptctl.metrics.aggregates import f1_macro, mae, pearson, rmse, rows_of, share, spearman
from promptctl.metrics.registry import (
    PAIRED_BINARY,
    PAIRED_CORRELATION,
    PAIRED_F1,
    PAIRED_MAE,
    PAIRED_RMSE,
    Columns,
    Metric,
    Result,
    ScoreContext,
    Scores,
    register,
)
from promptctl.scoring import answer_text, class_name, equals, numeric
from promptctl.toolcalls import (
    TOOL_OUTPUT_TYPES,
    arguments_match,
    calls_match,
    expected_calls,
    names_match,
)

if TYPE_CHECKING:
    from promptctl.evalsets import Row

NUMERIC_TYPES = frozenset({"number", "integer"})
# The values of a share of rows (0/1 per row, or macro F1), of an error and of a correlation.
SHARE = (0.0, 1.0)
ERROR = (0.0, None)
CORRELATION = (-1.0, 1.0)


def _share_of(key: str) -> Callable[[Columns], Result]:
    def aggregate(columns: Columns) -> Result:
        return share(columns.get(key, []), rows_of(columns, key))

    return aggregate


def _of_pairs(fn: Callable[[Sequence[float], Sequence[float], Sequence[int] | None], Result]
              ) -> Callable[[Columns], Result]:
    def aggregate(columns: Columns) -> Result:
        # answer_num and expected_num are kept together: one column's rows are the other's.
        return fn(columns.get("answer_num", []), columns.get("expected_num", []),
                  rows_of(columns, "answer_num"))

    return aggregate


def format_validity(ctx: ScoreContext) -> Scores:
    return {"format_validity": 1.0 if ctx.extraction.valid else 0.0}


def exact_match(ctx: ScoreContext) -> Scores:
    calls = ctx.extraction.calls
    if calls is not None:  # a tool call answer: the same tools, with equal arguments
        hit = ctx.extraction.valid and calls_match(calls, expected_calls(ctx.row.expected))
    else:
        hit = ctx.extraction.valid and equals(ctx.extraction.answer, ctx.row.expected)
    return {"exact_match": 1.0 if hit else 0.0}


# Tool call answers (output.type tool_call: the first call, or none; tool_calls: every call,
# in order) against the calls a row expects (null or [] for none). See toolcalls.py.


def tool_name(ctx: ScoreContext) -> Scores:
    """1 when the calls name the expected tools in order; no call is right only where none
    is expected."""
    calls = ctx.extraction.calls
    if calls is None:
        return {}
    return {"tool_name": 1.0 if names_match(calls, expected_calls(ctx.row.expected)) else 0.0}


def _arguments_score(key: str, subset: bool) -> Callable[[ScoreContext], Scores]:
    def score(ctx: ScoreContext) -> Scores:
        calls = ctx.extraction.calls
        if calls is None:
            return {}
        match = arguments_match(calls, expected_calls(ctx.row.expected), subset=subset)
        return {} if match is None else {key: 1.0 if match else 0.0}

    return score


def tool_call_validity(ctx: ScoreContext) -> Scores:
    """1 when every call names a declared tool with arguments that are JSON and fit its
    parameters; a row without a call is not counted."""
    calls = ctx.extraction.calls
    if not calls:
        return {}
    return {"tool_call_validity": 1.0 if all(c.problem is None for c in calls) else 0.0}


def selected(called: Sequence[str], expected: Sequence[str], strict: bool) -> float:
    """1 when every expected tool was called (in order, under `strict`) and no tool that is
    not expected was, else 0."""
    if any(name not in expected for name in called):
        return 0.0
    if not strict:
        return 1.0 if set(expected) <= set(called) else 0.0
    position = 0
    for name in called:  # the expected tools, in order, as a subsequence of the calls
        if position < len(expected) and name == expected[position]:
            position += 1
    return 1.0 if position == len(expected) else 0.0


def tool_selection(ctx: ScoreContext) -> Scores:
    """An agent row's tool calls against its `expected_tools` (`tools_order: strict`: in
    that order); a row without expected_tools, or not an agent's, is not scored."""
    expected = ctx.row.expected_tools
    if ctx.tools_called is None or expected is None:
        return {}
    strict = ctx.row.tools_order == "strict"
    return {"tool_selection": selected(ctx.tools_called, expected, strict)}


def accuracy(ctx: ScoreContext) -> Scores:
    """exact_match of a label answer, kept under the metric's own name."""
    return {"accuracy": exact_match(ctx)["exact_match"]}


def numeric_pair(ctx: ScoreContext) -> Scores:
    """The answer and expected value as numbers (rmse, mae, pearson and spearman read them)."""
    e = numeric(ctx.row.expected)
    a = numeric(ctx.extraction.answer) if ctx.extraction.valid else None
    if e is None or a is None:
        return {}
    return {"answer_num": a, "expected_num": e, "squared_error": (a - e) ** 2}


def labels(ctx: ScoreContext) -> Scores:
    answer = class_name(ctx.extraction.answer) if ctx.extraction.valid else None
    return {"label_expected": class_name(ctx.row.expected), "label_answer": answer}


def contains(ctx: ScoreContext) -> Scores:
    hit = ctx.extraction.valid and str(ctx.row.expected).strip().casefold() in answer_text(
        ctx.extraction).casefold()
    return {"contains": 1.0 if hit else 0.0}


def regex(ctx: ScoreContext) -> Scores:
    row = ctx.row
    if row.pattern is None:
        return {}
    try:
        found = re.search(row.pattern, answer_text(ctx.extraction)) is not None
    except re.error as exc:
        raise InputError(f"pattern of row {row.id} is not a valid regular expression: {exc}",
                         line=row.line, fix="fix or quote the row's pattern") from None
    return {"regex": 1.0 if ctx.extraction.valid and found else 0.0}


def _abs_error(scores: Scores, number: Callable[[Any], str]) -> str:
    a, e = scores.get("answer_num"), scores.get("expected_num")
    if isinstance(a, int | float) and isinstance(e, int | float):
        return f"abs error {number(abs(a - e))}"
    return "abs error -"


def _label_right(scores: Scores, number: Callable[[Any], str]) -> str:
    if "label_expected" not in scores:
        return "f1_macro -"
    return f"label {'right' if scores.get('label_answer') == scores['label_expected'] else 'wrong'}"


def _no_row_value(scores: Scores, number: Callable[[Any], str]) -> None:
    return None


def _check_pattern(row: Row) -> None:
    if row.pattern is None:
        raise InputError(f"metric regex needs a pattern in every row; row {row.id!r} has none",
                         line=row.line, fix='add "pattern": "..." to the row, or drop regex from '
                         "metrics")


def _rmse(columns: Columns) -> Result:
    return rmse(columns.get("squared_error", []), rows_of(columns, "squared_error"))


def _f1(columns: Columns) -> Result:
    return f1_macro(columns.get("label_answer", []), columns.get("label_expected", []),
                    rows_of(columns, "label_expected"))


register(Metric("format_validity", format_validity, _share_of("format_validity"),
                PAIRED_BINARY, "format_validity", value_range=SHARE))
register(Metric("exact_match", exact_match, _share_of("exact_match"), PAIRED_BINARY,
                "exact_match", needs_expected=True, compares_answer=True, value_range=SHARE))
register(Metric("accuracy", accuracy, _share_of("accuracy"), PAIRED_BINARY, "accuracy",
                output_types=frozenset({"label"}), needs_expected=True, compares_answer=True,
                value_range=SHARE, former_keys=("exact_match",)))
NUMERIC_HELPERS = frozenset({"answer_num", "expected_num", "squared_error"})
LABEL_HELPERS = frozenset({"label_answer", "label_expected"})

register(Metric("rmse", numeric_pair, _rmse, PAIRED_RMSE, "squared_error", higher_is_better=False,
                output_types=NUMERIC_TYPES, needs_expected=True, row_text=_abs_error,
                helper_keys=NUMERIC_HELPERS, compares_answer=True, value_range=ERROR))
register(Metric("mae", numeric_pair, _of_pairs(mae), PAIRED_MAE, "answer_num",
                higher_is_better=False, output_types=NUMERIC_TYPES, needs_expected=True,
                row_text=_abs_error, helper_keys=NUMERIC_HELPERS, compares_answer=True,
                value_range=ERROR))
register(Metric("pearson", numeric_pair, _of_pairs(pearson), PAIRED_CORRELATION, "answer_num",
                output_types=NUMERIC_TYPES, needs_expected=True, row_text=_no_row_value,
                helper_keys=NUMERIC_HELPERS, compares_answer=True, value_range=CORRELATION))
register(Metric("spearman", numeric_pair, _of_pairs(spearman), PAIRED_CORRELATION, "answer_num",
                output_types=NUMERIC_TYPES, needs_expected=True, row_text=_no_row_value,
                helper_keys=NUMERIC_HELPERS, compares_answer=True, value_range=CORRELATION))
register(Metric("f1_macro", labels, _f1, PAIRED_F1, "label_answer",
                output_types=frozenset({"label"}), needs_expected=True, row_text=_label_right,
                helper_keys=LABEL_HELPERS, compares_answer=True, value_range=SHARE))
register(Metric("contains", contains, _share_of("contains"), PAIRED_BINARY, "contains",
                needs_expected=True, value_range=SHARE))
register(Metric("regex", regex, _share_of("regex"), PAIRED_BINARY, "regex",
                check_row=_check_pattern, check_examples=False, value_range=SHARE))
TOOL_TYPES = frozenset(TOOL_OUTPUT_TYPES)
register(Metric("tool_name", tool_name, _share_of("tool_name"), PAIRED_BINARY, "tool_name",
                output_types=TOOL_TYPES, needs_expected=True, value_range=SHARE))
register(Metric("tool_args", _arguments_score("tool_args", subset=False), _share_of("tool_args"),
                PAIRED_BINARY, "tool_args", output_types=TOOL_TYPES, needs_expected=True, value_range=SHARE))
register(Metric("tool_args_subset", _arguments_score("tool_args_subset", subset=True),
                _share_of("tool_args_subset"), PAIRED_BINARY, "tool_args_subset",
                output_types=TOOL_TYPES, needs_expected=True, value_range=SHARE))
register(Metric("tool_call_validity", tool_call_validity, _share_of("tool_call_validity"),
                PAIRED_BINARY, "tool_call_validity", output_types=TOOL_TYPES, value_range=SHARE))
register(Metric("tool_selection", tool_selection, _share_of("tool_selection"), PAIRED_BINARY,
                "tool_selection", value_range=SHARE, targets=frozenset({"agent"})))
