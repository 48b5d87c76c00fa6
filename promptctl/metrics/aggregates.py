"""Aggregates over per-row scores, with seeded bootstrap confidence intervals.

Pure functions over lists; numpy does the arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from promptctl.metrics.registry import Metric, annotate, builtin

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20230411
# Resamples drawn per chunk so memory stays bounded for very large runs.
# 500,000 cells is 4 MB per matrix; a statistic such as spearman holds several at once.
_CHUNK_CELLS = 500_000

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


def _resample_indices(n: int, seed: int, resamples: int) -> Any:
    """The resampled row indices, chunk by chunk. Every metric of a run draws the same
    indices (same seed, same n): a matrix that fits one chunk is kept for the next
    metric, which then costs a gather instead of half a million random draws."""
    per_chunk = max(1, _CHUNK_CELLS // max(n, 1))
    key = (n, seed, resamples, per_chunk)
    if _last_indices and _last_indices[0] == key:
        yield from _last_indices[1]
        return
    rng = np.random.default_rng(seed)
    if per_chunk >= resamples:
        chunk = rng.integers(0, n, size=(resamples, n))
        _last_indices[:] = [key, [chunk]]
        yield chunk
        return
    # Larger runs draw chunk after chunk and keep none: holding them all would be the
    # whole resampling matrix (400 MB at 50,000 rows).
    _last_indices.clear()
    done = 0
    while done < resamples:
        k = min(per_chunk, resamples - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


_last_indices: list[Any] = []


def bootstrap(
    columns: Sequence[FloatArray],
    statistic: Callable[..., FloatArray],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """95% percentile interval of a row-wise statistic.

    `statistic` takes each column resampled as a (k, n) matrix and returns k
    values; the same row indices are used for every column, which keeps pairs
    paired.
    """
    n = len(columns[0])
    values = np.concatenate([statistic(*(c[idx] for c in columns))
                             for idx in _resample_indices(n, seed, resamples)])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


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


def _pearson_rows(a: FloatArray, b: FloatArray) -> FloatArray:
    # A constant row has no correlation (NaN, as scipy): test equality exactly, since the
    # centred values of e.g. [0.1, 0.1, 0.1] are rounding noise, not zeros.
    constant = (a == a[..., :1]).all(axis=-1) | (b == b[..., :1]).all(axis=-1)
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.clip((a * b).sum(axis=-1) / denom, -1.0, 1.0)
    return np.asarray(np.where(constant, np.nan, r), dtype=np.float64)


def rankdata(x: FloatArray) -> FloatArray:
    """Ranks along the last axis, ties given their average rank (as scipy's 'average')."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    flat = x.reshape(-1, x.shape[-1])
    out = np.empty_like(flat)
    for i, row in enumerate(flat):
        order = np.argsort(row, kind="mergesort")
        sorted_row = row[order]
        starts = np.concatenate(([True], sorted_row[1:] != sorted_row[:-1]))
        group = np.cumsum(starts) - 1
        first = np.flatnonzero(starts)
        counts = np.diff(np.append(first, row.size))
        avg = first + (counts - 1) / 2.0 + 1.0
        ranks = np.empty(row.size)
        ranks[order] = avg[group]
        out[i] = ranks
    return out.reshape(x.shape)


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
        ea = np.atleast_2d(ea)
        aa = np.atleast_2d(aa)
        out = np.empty(ea.shape[0])
        for r in range(ea.shape[0]):
            tp = np.bincount(ea[r][ea[r] == aa[r]], minlength=k + 1)[:k]
            pred = np.bincount(aa[r], minlength=k + 1)[:k]
            true = np.bincount(ea[r], minlength=k + 1)[:k]
            denom = pred + true
            present = denom > 0
            f1 = np.where(present, 2 * tp / np.where(present, denom, 1), 0.0)
            out[r] = f1[present].mean() if present.any() else np.nan
        return out

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
