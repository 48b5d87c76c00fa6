"""Paired statistics for comparing two runs row by row.

Binary per-row scores (exact_match, format_validity...) get an exact McNemar
test; continuous ones (squared error, absolute error, correlations) get a
paired permutation test. Deltas get a paired bootstrap interval. Every random
draw uses a fixed seed, so the same pair of runs always gives the same numbers.

For runs of 100,000 rows a statistic is computed from totals (`Sums`) or from
a contingency table (`Table`): a resample costs a gather and a sum instead of
copies of every row, and a permutation touches only the rows where A and B
differ, so the time goes mostly to drawing the random numbers. The draws are
those that resampling row by row makes (`paired_continuous`), so both give the
same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from promptctl.metrics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, _resample_indices, bootstrap

PERMUTATIONS = 2000
# Values per chunk of random draws: large enough that numpy's per-call cost vanishes,
# small enough to stay in cache and keep memory flat at any number of rows.
_PERMUTATION_CELLS = 1_000_000
# random() < 0.5 exactly when the top bit of the 64-bit draw behind it is clear.
_HALF = np.uint64(1 << 63)
# Above this many random draws the bootstrap and the permutations run in two threads.
_PARALLEL_CELLS = 50_000_000
# Largest contingency table handled as a table; beyond it correlations resample rows.
MAX_TABLE_CELLS = 1 << 14

if TYPE_CHECKING:
    import numpy.typing as npt

    # numpy.typing costs ~0.1 s to import; annotations alone need it.
    FloatArray = npt.NDArray[np.float64]
    IntArray = npt.NDArray[np.int64]


def mcnemar_exact(n01: int, n10: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs at 1/2."""
    m = n01 + n10
    if m == 0:
        return 1.0
    k = min(n01, n10)
    log_half = m * math.log(0.5)
    logs = [math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) + log_half
            for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return min(1.0, 2.0 * tail)


def paired_binary(a: FloatArray, b: FloatArray, resamples: int = BOOTSTRAP_RESAMPLES,
                  seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Delta of two paired 0/1 vectors, its bootstrap interval and the McNemar p-value.

    Resampling rows of a paired 0/1 table is the same as drawing its four cell
    counts from a multinomial, which keeps this O(resamples) at any n.
    """
    n = int(a.size)
    n01 = int(np.sum((a == 0) & (b == 1)))
    n10 = int(np.sum((a == 1) & (b == 0)))
    if n == 0:
        return {"a": None, "b": None, "delta": None, "ci95": None, "p_value": None,
                "test": "mcnemar_exact", "n": 0, "n01": 0, "n10": 0}
    cells = np.array([n01, n10, n - n01 - n10], dtype=np.float64) / n
    counts = np.random.default_rng(seed).multinomial(n, cells, size=resamples)
    draws = (counts[:, 0] - counts[:, 1]) / n
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"a": float(a.mean()), "b": float(b.mean()), "delta": float((n01 - n10) / n),
            "ci95": [float(lo), float(hi)],
            "p_value": mcnemar_exact(n01, n10), "test": "mcnemar_exact", "n": n,
            "n01": n01, "n10": n10}


def _swaps(rng: np.random.Generator, n: int, permutations: int) -> Iterator[Any]:
    """(k, n) uint64 draws per chunk; a pair is swapped where the draw is below _HALF.

    Exactly the draws of `rng.random((k, n)) < 0.5`, without converting them to floats.
    """
    chunk = max(1, _PERMUTATION_CELLS // max(n, 1))
    done = 0
    while done < permutations:
        k = min(chunk, permutations - done)
        yield rng.bit_generator.random_raw((k, n))
        done += k


def _interval(values: FloatArray) -> list[float] | None:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _result(values: tuple[float, float], ci: list[float] | None, extreme: int, permutations: int,
            n: int) -> dict[str, Any]:
    a, b = values
    observed = b - a
    out: dict[str, Any] = {"a": _finite(a), "b": _finite(b), "delta": None, "ci95": None,
                           "p_value": None, "test": "paired_permutation", "n": n}
    if math.isfinite(observed):
        out.update(delta=observed, ci95=ci, p_value=min(1.0, (extreme + 1) / (permutations + 1)))
    return out


def _empty(n: int = 0) -> dict[str, Any]:
    return {"a": None, "b": None, "delta": None, "ci95": None, "p_value": None,
            "test": "paired_permutation", "n": n}


def _extreme(diffs: FloatArray, observed: float) -> int:
    # Permuted statistics equal to the observed one up to rounding count as extreme.
    tol = 1e-12 * max(1.0, abs(observed))
    return int(np.sum(np.abs(diffs) >= abs(observed) - tol))


def paired_continuous(a: FloatArray, b: FloatArray,
                      statistic: Callable[[FloatArray], FloatArray],
                      resamples: int = BOOTSTRAP_RESAMPLES, permutations: int = PERMUTATIONS,
                      seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Delta statistic(b) - statistic(a) over paired rows, with a bootstrap interval and a
    paired permutation p-value (swapping A and B within random pairs).

    `statistic` maps a (k, n) matrix to k values (e.g. RMSE of each row); with
    (n, 2) inputs (answer, expected pairs for correlations) it gets (k, n, 2).
    This resamples whole rows; `paired_resampling` gives the same numbers faster
    for statistics of totals or of a contingency table.
    """
    n = int(a.shape[0])
    if n == 0:
        return _empty()
    values = (float(statistic(a[None, ...])[0]), float(statistic(b[None, ...])[0]))
    observed = values[1] - values[0]
    lo, hi = bootstrap([a, b], lambda x, y: statistic(y) - statistic(x), resamples, seed)
    extreme = 0
    if math.isfinite(observed):
        for raw in _swaps(np.random.default_rng(seed + 1), n, permutations):
            swap = raw < _HALF
            if a.ndim == 2:
                swap = swap[..., None]
            diffs = statistic(np.where(swap, a, b)) - statistic(np.where(swap, b, a))
            extreme += _extreme(diffs, observed)
    ci = [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None
    return _result(values, ci, extreme, permutations, n)


# --- statistics of totals and of tables, all resampled with one stream of draws -----------


@dataclass(frozen=True)
class Sums:
    """A statistic of column totals of per-row features, e.g. RMSE = sqrt(sum sq / sum count).

    `a` and `b` are (f, n): feature j of row i on each side. `finish` maps a (k, f)
    matrix of totals to k values.
    """

    a: FloatArray
    b: FloatArray
    finish: Callable[[FloatArray], FloatArray]


@dataclass(frozen=True)
class Table:
    """A statistic of a contingency table (confusion matrix, joint counts of answer and
    expected value): each row adds `weight` to `cell`, once per entry.

    `a` and `b` are (rows, cells, weights) entries, `shape` the table's shape, and
    `finish` maps (k, *shape) tables to k values.
    """

    a: tuple[IntArray, IntArray, FloatArray]
    b: tuple[IntArray, IntArray, FloatArray]
    shape: tuple[int, ...]
    finish: Callable[[FloatArray], FloatArray]

    @property
    def cells(self) -> int:
        return int(np.prod(self.shape))


Statistic = Sums | Table


class _Entries:
    """Table entries sorted by cell, so that a table is one gather and one reduceat."""

    def __init__(self, entries: tuple[IntArray, IntArray, FloatArray]) -> None:
        rows, cell, w = entries
        order = np.argsort(cell, kind="stable")
        self.rows, cell, self.w = rows[order], cell[order], w[order]
        self.starts = np.flatnonzero(np.concatenate(([True], cell[1:] != cell[:-1]))) \
            if cell.size else np.zeros(0, dtype=np.int64)
        self.cells = cell[self.starts]

    def tables(self, weights: FloatArray, cells: int) -> FloatArray:
        """(k, cells) tables from (k, n) row weights (resample counts or swap indicators)."""
        out = np.zeros((weights.shape[0], cells))
        if self.rows.size:
            out[:, self.cells] = np.add.reduceat(weights[:, self.rows] * self.w, self.starts,
                                                 axis=1)
        return out


class _Draw:
    """One chunk of bootstrap indices (k, n), and the resample counts per row when needed."""

    def __init__(self, idx: Any, n: int) -> None:
        self.idx = idx
        self.n = n
        self._counts: FloatArray | None = None

    @property
    def counts(self) -> FloatArray:
        if self._counts is None:
            k = self.idx.shape[0]
            flat = (self.idx + (np.arange(k) * self.n)[:, None]).ravel()
            self._counts = np.bincount(flat, minlength=k * self.n).reshape(k, self.n).astype(
                np.float64)
        return self._counts


class _Prepared:
    """Per statistic: the observed totals or tables, and what a permutation changes."""

    def __init__(self, stat: Statistic, n: int) -> None:
        self.stat = stat
        self.n = n
        if isinstance(stat, Sums):
            self.total_a = stat.a.sum(axis=1)
            self.total_b = stat.b.sum(axis=1)
            diff = stat.a - stat.b
            self.moved = np.flatnonzero(np.any(diff != 0, axis=0))
            self.delta = np.ascontiguousarray(diff[:, self.moved].T)
        else:
            ones = np.ones((1, n))
            self.entries = (_Entries(stat.a), _Entries(stat.b))
            self.total_a = self.entries[0].tables(ones, stat.cells)[0]
            self.total_b = self.entries[1].tables(ones, stat.cells)[0]
            rows, cell, w = _net_entries(stat.a, stat.b, stat.cells)
            self.moved, position = np.unique(rows, return_inverse=True)
            self.delta_entries = _Entries((position.ravel(), cell, w))
            self.codes = (_one_cell_per_row(stat.a, n), _one_cell_per_row(stat.b, n))

    def finish(self, totals: FloatArray) -> FloatArray:
        if isinstance(self.stat, Table):
            return self.stat.finish(totals.reshape(-1, *self.stat.shape))
        return self.stat.finish(totals)

    def values(self) -> tuple[float, float]:
        """The statistic on A's rows and on B's."""
        return (float(self.finish(self.total_a[None, :])[0]),
                float(self.finish(self.total_b[None, :])[0]))

    def resampled(self, draw: _Draw) -> FloatArray:
        """statistic(B) - statistic(A) for each resample of the chunk."""
        if isinstance(self.stat, Sums):
            return self.finish(self._sums(self.stat.b, draw)) - self.finish(self._sums(self.stat.a,
                                                                                     draw))
        cells = self.stat.cells
        out = []
        step = max(1, 2_000_000 // cells)
        for start in range(0, draw.idx.shape[0], step):
            tables = []
            for side, codes in zip(self.entries, self.codes, strict=True):
                if codes is not None:
                    # One cell per row: the table is a count of the resampled rows' cells.
                    picked = codes[draw.idx[start:start + step]]
                    k = picked.shape[0]
                    flat = (picked + (np.arange(k) * cells)[:, None]).ravel()
                    tables.append(np.bincount(flat, minlength=k * cells).reshape(k, cells)
                                  .astype(np.float64))
                else:
                    tables.append(side.tables(draw.counts[start:start + step], cells))
            out.append(self.finish(tables[1]) - self.finish(tables[0]))
        return np.concatenate(out)

    def _sums(self, features: FloatArray, draw: _Draw) -> FloatArray:
        """(k, f) totals of resampled rows; a feature equal on every row (a count of one
        sample per row) needs no gathering."""
        k = draw.idx.shape[0]
        out = np.empty((k, features.shape[0]))
        for j, feature in enumerate(features):
            if feature.size and np.all(feature == feature[0]):
                out[:, j] = feature[0] * self.n
            else:
                out[:, j] = np.take(feature, draw.idx).sum(axis=1)
        return out

    def permuted(self, swap: FloatArray) -> FloatArray:
        """statistic(B') - statistic(A') for (k, moved) swap indicators."""
        if isinstance(self.stat, Sums):
            shift = swap @ self.delta
        else:
            shift = self.delta_entries.tables(swap, self.stat.cells)
        return self.finish(self.total_b + shift) - self.finish(self.total_a - shift)


def _one_cell_per_row(entries: tuple[IntArray, IntArray, FloatArray], n: int) -> IntArray | None:
    """Each row's cell when every row has exactly one entry of weight one, else None."""
    rows, cell, w = entries
    if rows.size != n or not np.all(w == 1):
        return None
    out = np.full(n, -1, dtype=np.int64)
    out[rows] = cell
    return out if np.all(out >= 0) else None


def _net_entries(a: tuple[IntArray, IntArray, FloatArray], b: tuple[IntArray, IntArray, FloatArray],
                 cells: int) -> tuple[IntArray, IntArray, FloatArray]:
    """A's entries minus B's, merged by (row, cell), without the zeros: what swapping a
    row moves from one side's table to the other's."""
    keys = np.concatenate([a[0] * cells + a[1], b[0] * cells + b[1]])
    weights = np.concatenate([a[2], -b[2]])
    uniq, inverse = np.unique(keys, return_inverse=True)
    net = np.bincount(inverse.ravel(), weights=weights, minlength=uniq.size)
    keep = net != 0
    return uniq[keep] // cells, uniq[keep] % cells, net[keep]


def _blocks(matrix: Any, cells: int) -> Iterator[Any]:
    """Split (k, n) weights so that k x cells tables stay within a few MB."""
    step = max(1, 2_000_000 // max(cells, 1))
    for start in range(0, matrix.shape[0], step):
        yield matrix[start:start + step]


def paired_resampling(n: int, stats: Mapping[str, Statistic],
                      resamples: int = BOOTSTRAP_RESAMPLES, permutations: int = PERMUTATIONS,
                      seed: int = BOOTSTRAP_SEED) -> dict[str, dict[str, Any]]:
    """Delta (B - A), 95% paired bootstrap interval and paired permutation p-value of each
    statistic over the same n paired rows.

    The draws are those of `paired_continuous` (bootstrap indices from `seed`,
    swaps from `seed + 1`), shared by every statistic, so each result equals
    what `paired_continuous` gives for that statistic alone.
    """
    if n == 0:
        return {name: _empty() for name in stats}
    prepared = {name: _Prepared(stat, n) for name, stat in stats.items()}
    both = {name: p.values() for name, p in prepared.items()}
    observed = {name: b - a for name, (a, b) in both.items()}
    live = {name: p for name, p in prepared.items() if math.isfinite(observed[name])}

    def bootstrap_values() -> dict[str, FloatArray]:
        values: dict[str, list[FloatArray]] = {name: [] for name in stats}
        for idx in _resample_indices(n, np.random.default_rng(seed), resamples):
            draw = _Draw(idx, n)
            for name, p in prepared.items():
                values[name].append(p.resampled(draw))
        return {name: np.concatenate(v) for name, v in values.items()}

    def permutation_counts() -> dict[str, int]:
        extreme = dict.fromkeys(stats, 0)
        if live:
            for raw in _swaps(np.random.default_rng(seed + 1), n, permutations):
                for name, p in live.items():
                    swap = (raw[:, p.moved] < _HALF).astype(np.float64)
                    cells = p.stat.cells if isinstance(p.stat, Table) else 1
                    for block in _blocks(swap, cells):
                        extreme[name] += _extreme(p.permuted(block), observed[name])
        return extreme

    # The two use separate generators, so running them side by side (numpy releases the
    # GIL while drawing) changes nothing in the numbers.
    if n * (resamples + permutations) >= _PARALLEL_CELLS:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(permutation_counts)
            values = bootstrap_values()
            extreme = pending.result()
    else:
        values, extreme = bootstrap_values(), permutation_counts()
    return {name: _result(both[name], _interval(values[name]), extreme[name], permutations, n)
            for name in stats}


# --- finishing functions -----------------------------------------------------------------


def ratio_sqrt(totals: FloatArray) -> FloatArray:
    """sqrt(total 0 / total 1): RMSE from (squared error, count) totals."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.sqrt(totals[:, 0] / totals[:, 1]), dtype=np.float64)


def ratio(totals: FloatArray) -> FloatArray:
    """total 0 / total 1: a mean from (sum, count) totals."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(totals[:, 0] / totals[:, 1], dtype=np.float64)


def _table_corr(tables: FloatArray, xs: FloatArray, ys: FloatArray) -> FloatArray:
    """Pearson correlation of (k, u, w) joint count tables with values xs (k, u), ys (k, w).

    NaN where either margin has a single value (a constant has no correlation).
    """
    rows = tables.sum(axis=2)
    cols = tables.sum(axis=1)
    n = rows.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = xs - ((rows * xs).sum(axis=1) / n)[:, None]
        dy = ys - ((cols * ys).sum(axis=1) / n)[:, None]
        vx = (rows * dx * dx).sum(axis=1)
        vy = (cols * dy * dy).sum(axis=1)
        cov = np.einsum("kuw,ku,kw->k", tables, dx, dy)
        r = np.clip(cov / np.sqrt(vx * vy), -1.0, 1.0)
    constant = ((rows > 0).sum(axis=1) <= 1) | ((cols > 0).sum(axis=1) <= 1)
    return np.asarray(np.where(constant, np.nan, r), dtype=np.float64)


def average_ranks(counts: FloatArray) -> FloatArray:
    """Average rank of each value from its count, values in ascending order (ties share
    the mean of their ranks, as scipy's rankdata 'average')."""
    ends = np.cumsum(counts, axis=-1)
    return np.asarray((2 * ends - counts + 1) / 2, dtype=np.float64)


def pearson_table(xs: FloatArray, ys: FloatArray) -> Callable[[FloatArray], FloatArray]:
    """Pearson correlation of a joint table of answer values `xs` and expected values `ys`."""
    def finish(tables: FloatArray) -> FloatArray:
        k = tables.shape[0]
        return _table_corr(tables, np.broadcast_to(xs, (k, xs.size)),
                           np.broadcast_to(ys, (k, ys.size)))
    return finish


def spearman_table(tables: FloatArray) -> FloatArray:
    """Spearman correlation of joint tables over sorted answer and expected values."""
    return _table_corr(tables, average_ranks(tables.sum(axis=2)), average_ranks(tables.sum(axis=1)))


def f1_macro_table(tables: FloatArray) -> FloatArray:
    """Macro F1 of (k, L + 1, L) confusion tables (answer label or 'none', expected label)
    over the labels that occur in expected or predictions, as metrics.f1_macro."""
    labels = tables.shape[2]
    tp = np.einsum("kii->ki", tables[:, :labels, :])
    pred = tables[:, :labels, :].sum(axis=2)
    true = tables.sum(axis=1)
    denom = pred + true
    present = denom > 0
    f1 = np.where(present, 2 * tp / np.where(present, denom, 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(f1.sum(axis=1) / present.sum(axis=1), dtype=np.float64)


# --- row-wise statistics for paired_continuous ------------------------------------------


def rank_rows(m: FloatArray) -> FloatArray:
    """Average ranks along the last axis without a Python loop per row.

    Values are coded against the sorted distinct values of the whole matrix, then
    ranked by counting, which is O(k (n + distinct)).
    """
    m = np.asarray(m, dtype=np.float64)
    if m.size == 0:
        return m.copy()
    flat = m.reshape(-1, m.shape[-1])
    uniq, codes = np.unique(flat, return_inverse=True)
    codes = codes.reshape(flat.shape)
    k, u = flat.shape[0], uniq.size
    counts = np.bincount((codes + (np.arange(k) * u)[:, None]).ravel(),
                         minlength=k * u).reshape(k, u)
    ranks = np.take_along_axis(average_ranks(counts.astype(np.float64)), codes, axis=1)
    return np.asarray(ranks.reshape(m.shape), dtype=np.float64)
