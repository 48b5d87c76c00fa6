"""Aggregates over per-row scores, with seeded bootstrap confidence intervals.

Pure functions over lists; numpy does the arithmetic. With `eval --repeat K` a row has K
samples: given `rows` (the row of each value), an aggregate averages a row's samples first
and resamples rows, so a metric's `n` and interval rest on the rows, not on K times as many
independent observations.
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
    clustered_table,
    f1_macro_rows,
    f1_macro_table,
)
from promptctl.stats import pearson_rows as _pearson_rows
from promptctl.stats import rank_rows as rankdata

if TYPE_CHECKING:
    import numpy.typing as npt

    # numpy.typing costs ~0.1 s to import; annotations alone need it.
    FloatArray = npt.NDArray[np.float64]
Result = dict[str, Any]
Rows = Sequence[int] | None


class Folded(dict[str, list[Any]]):
    """Score columns (`fold_scores`) that also know, per key, the row each value came from
    (an index, in row order): a row's samples (`eval --repeat`) are one unit of its metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[int]] = {}


def rows_of(columns: dict[str, list[Any]], key: str) -> Rows:
    """The row of each value of column `key`, or None when every value is a row of its own."""
    if isinstance(columns, Folded):
        return columns.rows.get(key, [])
    return None


def row_count(columns: dict[str, list[Any]], key: str) -> int:
    """How many rows have a value under `key`."""
    rows = rows_of(columns, key)
    return len(columns.get(key, [])) if rows is None else len(set(rows))


def by_row(values: Sequence[float] | FloatArray, rows: Rows) -> FloatArray:
    """Each row's mean over its samples' values, rows in order (`values` as they are when
    every value is a row of its own)."""
    x = np.asarray(values, dtype=np.float64)
    if rows is None:
        return x
    _, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    inverse = inverse.ravel()
    sums = np.bincount(inverse, weights=x)
    counts = np.bincount(inverse)
    return np.asarray(sums / counts, dtype=np.float64)


def _result(value: float | None, n: int, ci: tuple[float, float] | None) -> Result:
    clean = None if value is None or not np.isfinite(value) else float(value)
    interval = None
    if ci is not None and clean is not None and np.isfinite(ci[0]) and np.isfinite(ci[1]):
        interval = [float(ci[0]), float(ci[1])]
    return {"value": clean, "n": n, "ci95": interval}


def _mean_rows(x: FloatArray) -> FloatArray:
    return np.asarray(x.mean(axis=-1), dtype=np.float64)


def share(values: Sequence[float], rows: Rows = None) -> Result:
    """Mean of 0/1 scores (format_validity, exact_match, accuracy, ...) or of any per-row
    score; with `rows`, the mean over rows of each row's mean."""
    x = by_row(values, rows)
    if x.size == 0:
        return _result(None, 0, None)
    return _result(float(x.mean()), int(x.size), bootstrap([x], _mean_rows))


def rmse(squared_errors: Sequence[float], rows: Rows = None) -> Result:
    """Root mean squared error from per-row squared errors (with `rows`, each row's mean
    squared error over its samples)."""
    x = by_row(squared_errors, rows)
    if x.size == 0:
        return _result(None, 0, None)
    return _result(float(np.sqrt(x.mean())), int(x.size),
                   bootstrap([x], lambda m: np.sqrt(m.mean(axis=-1))))


def mae(answers: Sequence[float], expected: Sequence[float], rows: Rows = None) -> Result:
    """Mean absolute error (with `rows`, each row's mean absolute error over its samples)."""
    x = by_row(np.abs(np.asarray(answers, dtype=np.float64)
                      - np.asarray(expected, dtype=np.float64)), rows)
    if x.size == 0:
        return _result(None, 0, None)
    return _result(float(x.mean()), int(x.size), bootstrap([x], _mean_rows))


def pearson(answers: Sequence[float], expected: Sequence[float], rows: Rows = None) -> Result:
    """Pearson correlation of answers with expected values (with `rows`, of each row's mean
    answer with its expected value)."""
    a = by_row(answers, rows)
    b = by_row(expected, rows)
    if a.size < 2:
        return _result(None, int(a.size), None)
    value = float(_pearson_rows(a, b))
    return _result(value, int(a.size), bootstrap([a, b], _pearson_rows))


def spearman(answers: Sequence[float], expected: Sequence[float], rows: Rows = None) -> Result:
    """Spearman rank correlation (Pearson on average ranks; with `rows`, of each row's mean
    answer with its expected value)."""
    a = by_row(answers, rows)
    b = by_row(expected, rows)
    if a.size < 2:
        return _result(None, int(a.size), None)
    value = float(_pearson_rows(rankdata(a), rankdata(b)))
    return _result(value, int(a.size),
                   bootstrap([a, b], lambda x, y: _pearson_rows(rankdata(x), rankdata(y))))


def f1_macro(answers: Sequence[str | None], expected: Sequence[str], rows: Rows = None) -> Result:
    """Macro-averaged F1 over the labels that occur in expected or predictions.

    An unreadable answer (None) is a miss for its true class and no class's
    prediction. With `rows`, F1 is over every sample, and the interval resamples rows with
    all their samples (a label cannot be averaged over a row's samples).
    """
    classes = sorted({*expected, *(a for a in answers if a is not None)})
    if not expected:
        return _result(None, 0, None)
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    e = np.asarray([index[x] for x in expected], dtype=np.int64)
    a = np.asarray([index[x] if x is not None else k for x in answers], dtype=np.int64)

    if rows is not None:
        _, row = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
        row = row.ravel()
        clusters = int(row.max()) + 1

        def finish(tables: FloatArray) -> FloatArray:
            return f1_macro_table(tables.reshape(-1, k + 1, k))

        stat_rows = clustered_table(row, a * k + e, (k + 1) * k, finish)
        everyone = np.arange(clusters, dtype=np.float64)
        return _result(float(stat_rows(everyone[None, :])[0]), clusters,
                       bootstrap([everyone], stat_rows))

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


def fold_samples(samples: Iterable[tuple[str, dict[str, Any]]]) -> Folded:
    """`fold_scores` of (row id, scores) pairs in row order, several samples of a row
    (`eval --repeat`) one after another: each value remembers its row (see `Folded`)."""
    columns = Folded()
    index: dict[str, int] = {}
    for row_id, scores in samples:
        row = index.setdefault(row_id, len(index))
        for key, value in scores.items():
            columns.setdefault(key, []).append(value)
            columns.rows.setdefault(key, []).append(row)
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
