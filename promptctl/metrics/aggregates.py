"""Aggregates over per-row scores, with seeded bootstrap confidence intervals.

Pure functions over lists; numpy does the arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from promptctl.metrics.registry import Metric, annotate, builtin
from promptctl.stats import (  # noqa: F401 - the bootstrap's settings, named here too
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    bootstrap,
    f1_macro_rows,
)
from promptctl.stats import pearson_rows as _pearson_rows
from promptctl.stats import rank_rows as rankdata

if TYPE_CHECKING:
    import numpy.typing as npt

    # numpy.typing costs ~0.1 s to import; annotations alone need it.
    FloatArray = npt.NDArray[np.float64]
Result = dict[str, Any]

def _result(value: float | None, n: int, ci: tuple[float, float] | None) -> Result:
    clean = None if value is None or not np.isfinite(value) else float(value)
    interval = None
    if ci is not None and clean is not None and np.isfinite(ci[0]) and np.isfinite(ci[1]):
        interval = [float(ci[0]), float(ci[1])]
    return {"value": clean, "n": n, "ci95": interval}


def _mean_rows(x: FloatArray) -> FloatArray:
    return np.asarray(x.mean(axis=-1), dtype=np.float64)


def share(values: Sequence[float]) -> Result:
    """Mean of 0/1 scores (format_validity, exact_match, accuracy, ...)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return _result(None, 0, None)
    return _result(float(x.mean()), int(x.size), bootstrap([x], _mean_rows))


def rmse(squared_errors: Sequence[float]) -> Result:
    """Root mean squared error from per-row squared errors."""
    x = np.asarray(squared_errors, dtype=np.float64)
    if x.size == 0:
        return _result(None, 0, None)
    return _result(float(np.sqrt(x.mean())), int(x.size),
                   bootstrap([x], lambda m: np.sqrt(m.mean(axis=-1))))


def mae(answers: Sequence[float], expected: Sequence[float]) -> Result:
    """Mean absolute error."""
    x = np.abs(np.asarray(answers, dtype=np.float64) - np.asarray(expected, dtype=np.float64))
    if x.size == 0:
        return _result(None, 0, None)
    return _result(float(x.mean()), int(x.size), bootstrap([x], _mean_rows))


def pearson(answers: Sequence[float], expected: Sequence[float]) -> Result:
    """Pearson correlation of answers with expected values."""
    a = np.asarray(answers, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    if a.size < 2:
        return _result(None, int(a.size), None)
    value = float(_pearson_rows(a, b))
    return _result(value, int(a.size), bootstrap([a, b], _pearson_rows))


def spearman(answers: Sequence[float], expected: Sequence[float]) -> Result:
    """Spearman rank correlation (Pearson on average ranks)."""
    a = np.asarray(answers, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    if a.size < 2:
        return _result(None, int(a.size), None)
    value = float(_pearson_rows(rankdata(a), rankdata(b)))
    return _result(value, int(a.size),
                   bootstrap([a, b], lambda x, y: _pearson_rows(rankdata(x), rankdata(y))))


def f1_macro(answers: Sequence[str | None], expected: Sequence[str]) -> Result:
    """Macro-averaged F1 over the labels that occur in expected or predictions.

    An unreadable answer (None) is a miss for its true class and no class's
    prediction.
    """
    classes = sorted({*expected, *(a for a in answers if a is not None)})
    if not expected:
        return _result(None, 0, None)
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    e = np.asarray([index[x] for x in expected], dtype=np.int64)
    a = np.asarray([index[x] if x is not None else k for x in answers], dtype=np.int64)

    def stat(ea: Any, aa: Any) -> FloatArray:
        return f1_macro_rows(ea, aa, k)

    value = float(stat(e, a)[0])
    return _result(value, len(expected), bootstrap([e.astype(np.float64), a.astype(np.float64)],
                                                   lambda x, y: stat(x.astype(np.int64),
                                                                     y.astype(np.int64))))


def fold_scores(rows: Iterable[dict[str, Any]], into: dict[str, list[Any]] | None = None
                ) -> dict[str, list[Any]]:
    """Per-row score dicts as one list per key, in row order; a row without a key adds
    nothing to its list. Keys that go together (answer_num, expected_num and
    squared_error; label_answer and label_expected) stay aligned."""
    columns: dict[str, list[Any]] = {} if into is None else into
    for scores in rows:
        for key, value in scores.items():
            columns.setdefault(key, []).append(value)
    return columns


def aggregate(metrics: Sequence[Any], rows: Sequence[dict[str, Any]]) -> dict[str, Result]:
    """All requested metrics over the per-row score dicts of the rows that got a completion."""
    return aggregate_columns(metrics, fold_scores(rows))


def aggregate_columns(metrics: Sequence[Any], columns: dict[str, list[Any]]) -> dict[str, Result]:
    """`aggregate` over scores already folded into columns (see `fold_scores`): a large run
    keeps a list of numbers per metric instead of a dict per row. `metrics` are names of
    built-in metrics or `Metric` objects (configured ones)."""
    out: dict[str, Result] = {}
    for item in metrics:
        metric = item if isinstance(item, Metric) else builtin(str(item))
        if metric is not None:
            out[metric.name] = annotate(metric, metric.aggregate(columns))
    return out


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 75, 90, 99)) -> dict[str, float]:
    """Latency percentiles such as p50/p90 (empty when there are no values)."""
    if not values:
        return {}
    x = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(x, list(qs)), strict=True)}
