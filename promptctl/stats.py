"""Paired statistics for comparing two runs row by row.

Binary per-row scores (exact_match, format_validity...) get an exact McNemar
test; continuous ones (squared error, absolute error, correlations) get a
paired permutation test. Deltas get a paired bootstrap interval. Every random
draw uses a fixed seed, so the same pair of runs always gives the same numbers.

For runs of 100,000 rows a statistic is computed from totals (`Sums`) or from
a contingency table (`Table`), and rows that contribute the same are drawn
together: a bootstrap resample is a count of each kind of row (a multinomial),
a permutation a count of swapped rows of each type (binomials). Scores on a
scale give a few hundred kinds, so the draws no longer grow with the number of
rows; their distribution is exactly that of resampling and swapping row by row
(`paired_continuous`, which correlations of many distinct values still use).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20230411
# Resamples drawn per chunk so memory stays bounded for very large runs.
# 500,000 cells is 4 MB per matrix; a statistic such as spearman holds several at once.
_BOOTSTRAP_CHUNK_CELLS = 500_000
PERMUTATIONS = 2000
# Values per chunk of random draws: large enough that numpy's per-call cost vanishes,
# small enough to stay in cache and keep memory flat at any number of rows.
_PERMUTATION_CELLS = 1_000_000
# random() < 0.5 exactly when the top bit of the 64-bit draw behind it is clear.
_HALF = np.uint64(1 << 63)
# Values per chunk of resample or swap counts.
_CHUNK_CELLS = 1_000_000
# Kinds of at least this many rows are resampled by a binomial draw of their count (about
# 20 times the cost of drawing one row), smaller ones by drawing their rows.
_MULTINOMIAL_ROWS = 16
# Above this cost (in draws of one row) a statistic's bootstrap and permutations run in
# two threads.
_PARALLEL_CELLS = 50_000_000
# Largest contingency table handled as a table; beyond it correlations resample rows.
MAX_TABLE_CELLS = 1 << 14

if TYPE_CHECKING:
    import numpy.typing as npt

    # numpy.typing costs ~0.1 s to import; annotations alone need it.
    FloatArray = npt.NDArray[np.float64]
    IntArray = npt.NDArray[np.int64]


# --- the bootstrap every interval uses -------------------------------------------------


def _resample_indices(n: int, seed: int, resamples: int) -> Any:
    """The resampled row indices, chunk by chunk. Every metric of a run draws the same
    indices (same seed, same n): a matrix that fits one chunk is kept for the next
    metric, which then costs a gather instead of half a million random draws."""
    per_chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // max(n, 1))
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


def clustered_table(rows: IntArray, cell: IntArray, cells: int,
                    finish: Callable[[FloatArray], FloatArray]) -> Callable[[FloatArray], FloatArray]:
    """A statistic of a contingency table whose entries come in rows of several samples
    (`eval --repeat`), for `bootstrap` over the rows: sample i adds 1 to `cell[i]` and
    belongs to row `rows[i]` (0 .. rows - 1). The statistic takes (k, rows) resampled row
    indices and returns `finish` of each resample's table: a row's samples move together."""
    clusters = int(rows.max()) + 1 if rows.size else 0
    entries = _Entries((np.asarray(rows, dtype=np.int64), np.asarray(cell, dtype=np.int64),
                        np.ones(rows.size)))

    def statistic(drawn: FloatArray) -> FloatArray:
        idx = np.asarray(drawn, dtype=np.int64)
        k = idx.shape[0]
        weights = np.bincount((idx + clusters * np.arange(k)[:, None]).ravel(),
                              minlength=k * clusters).reshape(k, clusters).astype(np.float64)
        return np.concatenate([finish(entries.tables(block, cells))
                               for block in _blocks(weights, cells)])

    return statistic


def pearson_rows(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pearson correlation along the last axis (the rows of a resampling matrix).

    The form of `_table_corr` for rows; the table form weighs each distinct value by its count.
    """
    # A constant row has no correlation (NaN, as scipy): test equality exactly, since the
    # centred values of e.g. [0.1, 0.1, 0.1] are rounding noise, not zeros.
    constant = (a == a[..., :1]).all(axis=-1) | (b == b[..., :1]).all(axis=-1)
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.clip((a * b).sum(axis=-1) / denom, -1.0, 1.0)
    return np.asarray(np.where(constant, np.nan, r), dtype=np.float64)


def _f1_per_label(tp: Any, pred: Any, true: Any) -> tuple[Any, Any]:
    """Per label its F1 from true positives, predictions and true counts, and whether the
    label occurs in predictions or expected values (macro F1 averages over those)."""
    denom = pred + true
    present = denom > 0
    return np.where(present, 2 * tp / np.where(present, denom, 1), 0.0), present


def f1_macro_rows(expected: Any, answers: Any, labels: int) -> FloatArray:
    """Macro F1 of each row of label codes: `expected` in [0, labels), `answers` in
    [0, labels], where `labels` stands for no readable answer (a miss for its true label and
    no label's prediction). The row form of `f1_macro_table`."""
    ea = np.atleast_2d(expected)
    aa = np.atleast_2d(answers)
    k = labels
    out = np.empty(ea.shape[0])
    for r in range(ea.shape[0]):
        tp = np.bincount(ea[r][ea[r] == aa[r]], minlength=k + 1)[:k]
        pred = np.bincount(aa[r], minlength=k + 1)[:k]
        true = np.bincount(ea[r], minlength=k + 1)[:k]
        f1, present = _f1_per_label(tp, pred, true)
        out[r] = f1[present].mean() if present.any() else np.nan
    return out



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
    This resamples and swaps row by row; `paired_resampling` draws from the same
    distributions by kind of row, much faster, for statistics of totals or of a
    contingency table.
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


# --- statistics of totals and of tables, resampled by kind of row -------------------------


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


def _group(sig: Any) -> tuple[IntArray, IntArray]:
    """Columns of `sig` (c, n) that are equal in every entry form one kind: the kind of
    each column and the first column of each kind, kinds in lexicographic order."""
    n = sig.shape[1]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.lexsort(sig[::-1]) if sig.shape[0] else np.arange(n)
    ordered = sig[:, order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.any(ordered[:, 1:] != ordered[:, :-1], axis=0, out=new[1:])
    kind = np.empty(n, dtype=np.int64)
    kind[order] = np.cumsum(new) - 1
    return kind, order[new]


class _RowEntries:
    """Sparse per-row vectors: entries merged by (row, column), zeros left out, sorted by
    row then column, so that each row's entries are one slice."""

    def __init__(self, n: int, rows: IntArray, cols: IntArray, w: FloatArray, width: int) -> None:
        uniq, inverse = np.unique(rows.astype(np.int64) * width + cols, return_inverse=True)
        total = np.bincount(inverse.ravel(), weights=w, minlength=uniq.size)
        keep = total != 0
        self.rows, self.cols = np.divmod(uniq[keep], width)
        self.w = total[keep]
        self.length = np.bincount(self.rows, minlength=n)
        self.start = np.cumsum(self.length) - self.length

    def group(self) -> tuple[IntArray, tuple[IntArray, IntArray, FloatArray]]:
        """Rows with the same entries as one kind: each row's kind and each kind's entries
        (kind, column, weight)."""
        n = self.length.size
        most = int(self.length.max(initial=0))
        # Row i is column i: its columns, then its weights' bits; -1 pads shorter rows.
        sig = np.full((2 * most, n), -1, dtype=np.int64)
        pos = np.arange(self.rows.size) - self.start[self.rows]
        sig[pos, self.rows] = self.cols
        sig[most + pos, self.rows] = self.w.view(np.int64)
        kind, first = _group(sig)
        lengths = self.length[first]
        kinds = np.repeat(np.arange(first.size), lengths)
        within = np.arange(kinds.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        picked = self.start[first][kinds] + within
        return kind, (kinds, self.cols[picked], self.w[picked])


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
        """(k, cells) tables from (k, rows) weights (how often each kind of row is drawn)."""
        out = np.zeros((weights.shape[0], cells))
        if self.rows.size:
            out[:, self.cells] = np.add.reduceat(weights[:, self.rows] * self.w, self.starts,
                                                 axis=1)
        return out


class _Resamples:
    """A chunk of k bootstrap resamples of n rows: `counts` (k, big kinds) of the kinds
    drawn by a multinomial, and `picks`, the rows drawn one at a time from the pool of
    the other kinds' rows (positions in the pool), `pooled[r]` of them for resample r."""

    def __init__(self, counts: FloatArray, picks: IntArray, pooled: IntArray) -> None:
        self.k = pooled.size
        self.counts = counts
        self.picks = picks
        self.pooled = pooled
        # With no kind drawn by the multinomial, every resample picks its n rows.
        self.square = counts.shape[1] == 0
        self._segment: IntArray | None = None

    @property
    def segment(self) -> IntArray:
        """The resample of each pick."""
        if self._segment is None:
            self._segment = np.repeat(np.arange(self.k), self.pooled)
        return self._segment

    def pool_sums(self, values: FloatArray) -> FloatArray:
        """(k,) totals of a value of each pool row over each resample's picks."""
        taken = np.take(values, self.picks)
        if self.square:
            return np.asarray(taken.reshape(self.k, -1).sum(axis=1), dtype=np.float64)
        return np.asarray(np.bincount(self.segment, weights=taken, minlength=self.k),
                          dtype=np.float64)

    def pool_counts(self, codes: IntArray, size: int) -> FloatArray:
        """(k, size) counts of the picks' codes (a code in [0, size) per pool row)."""
        flat = np.take(codes, self.picks) + self.segment * size
        return np.bincount(flat, minlength=self.k * size).reshape(self.k, size).astype(np.float64)


class _Draws:
    """Bootstrap resamples of rows grouped into kinds (`kind` of each row).

    Kinds of at least _MULTINOMIAL_ROWS rows get their counts from a multinomial
    over the kinds (one binomial each); the draws that fall on the rows of smaller
    kinds (the pool) pick one of those rows each, uniformly. Together this is exactly
    drawing n rows with replacement.
    """

    def __init__(self, kind: IntArray) -> None:
        self.n = kind.size
        self.sizes = np.bincount(kind)
        self.big = np.flatnonzero(self.sizes >= _MULTINOMIAL_ROWS)
        # The pool's rows in the order of their kinds, so that the draws do not depend on
        # the order of the rows.
        by_kind = np.argsort(kind, kind="stable")
        self.pool = by_kind[self.sizes[kind[by_kind]] < _MULTINOMIAL_ROWS]

    def chunks(self, rng: np.random.Generator, resamples: int) -> Iterator[_Resamples]:
        n, big, pool = self.n, self.big, self.pool
        shares = np.append(self.sizes[big], pool.size) / n
        chunk = max(1, _CHUNK_CELLS // max(big.size + pool.size, 1))
        done = 0
        while done < resamples:
            k = min(chunk, resamples - done)
            if big.size:
                drawn = rng.multinomial(n, shares if pool.size else shares[:-1], size=k)
                counts = drawn[:, :big.size].astype(np.float64)
                pooled = drawn[:, big.size] if pool.size else np.zeros(k, dtype=np.int64)
            else:
                counts = np.zeros((k, 0))
                pooled = np.full(k, n, dtype=np.int64)
            picks = rng.integers(0, pool.size, size=int(pooled.sum())) if pool.size \
                else np.zeros(0, dtype=np.int64)
            yield _Resamples(counts, picks, pooled)
            done += k

    def cost(self) -> int:
        """Roughly the cost of one resample, in draws of one row."""
        return self.pool.size + 20 * self.big.size


_ALL_BITS = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
# Set bits of each byte value (np.bitwise_count needs numpy 2).
_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)


def _swap_counts(rng: np.random.Generator, types: IntArray, permutations: int) -> Iterator[FloatArray]:
    """How many of the types[j] rows of each type swap sides, as (k, types) chunks of
    `permutations` permutations: Binomial(types[j], 1/2), drawn as the set bits among
    types[j] random bits (one bit for a single row, one 64-bit word up to 64 rows),
    above that by a binomial draw. `types` must be in ascending order."""
    single = int(np.searchsorted(types, 1, side="right"))
    word = int(np.searchsorted(types, 64, side="right"))
    masks = _ALL_BITS >> (np.uint64(64) - types[single:word].astype(np.uint64))
    chunk = max(1, _CHUNK_CELLS // max(types.size, 1))
    done = 0
    while done < permutations:
        k = min(chunk, permutations - done)
        out = np.empty((k, types.size))
        if single:
            raw = rng.bit_generator.random_raw((k, -(-single // 64)))
            out[:, :single] = np.unpackbits(raw.view(np.uint8), axis=1, count=single)
        if word > single:
            kept = rng.bit_generator.random_raw((k, word - single)) & masks
            out[:, single:word] = _BYTE_BITS[kept.view(np.uint8)].reshape(k, -1, 8).sum(axis=2)
        if types.size > word:
            out[:, word:] = rng.binomial(types[word:], 0.5, size=(k, types.size - word))
        yield out
        done += k


class _Prepared:
    """One statistic with its rows grouped into kinds.

    For the bootstrap, rows contributing the same to A and to B are one kind: a
    resample is a count per kind. For the permutations, rows whose swap moves the
    same amount from one side to the other are one type: a permutation is the
    number of swapped rows of each type.
    """

    def __init__(self, stat: Statistic, n: int) -> None:
        self.stat = stat
        if isinstance(stat, Sums):
            self.total_a = stat.a.sum(axis=1)
            self.total_b = stat.b.sum(axis=1)
            self.kind, first = _group(np.vstack([stat.a, stat.b]))
            self.draws = _Draws(self.kind)
            big = first[self.draws.big]
            self.big = (np.ascontiguousarray(stat.a[:, big].T),
                        np.ascontiguousarray(stat.b[:, big].T))
            pool = self.draws.pool
            self.pool = (stat.a[:, pool], stat.b[:, pool])
            # A feature equal on every pool row (a count of one sample per row) needs no
            # gathering: its total is the number of picks times the value.
            self.constant = tuple([bool(f.size) and bool(np.all(f == f[0])) for f in side]
                                  for side in self.pool)
            diff = stat.a - stat.b
            moved = diff[:, np.any(diff != 0, axis=0)]
            swap_type, first = _group(moved)
            types = np.bincount(swap_type)
            order = np.argsort(types, kind="stable")
            self.types = types[order]
            self.shifts = np.ascontiguousarray(moved[:, first[order]].T)
        else:
            cells = stat.cells
            ones = np.ones((1, n))
            self.total_a = _Entries(stat.a).tables(ones, cells)[0]
            self.total_b = _Entries(stat.b).tables(ones, cells)[0]
            both = _RowEntries(n, np.concatenate([stat.a[0], stat.b[0]]),
                               np.concatenate([stat.a[1], stat.b[1] + cells]),
                               np.concatenate([stat.a[2], stat.b[2]]), 2 * cells)
            self.kind, (kinds, col, w) = both.group()
            self.draws = _Draws(self.kind)
            on_a = col < cells
            self.entries = (_Entries((kinds[on_a], col[on_a], w[on_a])),
                            _Entries((kinds[~on_a], col[~on_a] - cells, w[~on_a])))
            rows, col, w = _net_entries(stat.a, stat.b, cells)
            moved, position = np.unique(rows, return_inverse=True)
            swap_type, (typ, col, w) = _RowEntries(moved.size, position.ravel(), col, w,
                                                   cells).group()
            types = np.bincount(swap_type)
            order = np.argsort(types, kind="stable")
            self.types = types[order]
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            self.shift_entries = _Entries((rank[typ], col, w))

    def finish(self, totals: FloatArray) -> FloatArray:
        if isinstance(self.stat, Table):
            return self.stat.finish(totals.reshape(-1, *self.stat.shape))
        return self.stat.finish(totals)

    def values(self) -> tuple[float, float]:
        """The statistic on A's rows and on B's."""
        return (float(self.finish(self.total_a[None, :])[0]),
                float(self.finish(self.total_b[None, :])[0]))

    def resampled(self, res: _Resamples) -> FloatArray:
        """statistic(B) - statistic(A) for each resample of the chunk."""
        if isinstance(self.stat, Sums):
            sides = []
            for big, pool, constant in zip(self.big, self.pool, self.constant, strict=True):
                totals = res.counts @ big
                if pool.shape[1]:
                    for j, feature in enumerate(pool):
                        totals[:, j] += res.pooled * feature[0] if constant[j] \
                            else res.pool_sums(feature)
                sides.append(totals)
            return self.finish(sides[1]) - self.finish(sides[0])
        kinds = self.draws.sizes.size
        counts = np.zeros((res.k, kinds))
        counts[:, self.draws.big] = res.counts
        if self.draws.pool.size:
            counts += res.pool_counts(self.kind[self.draws.pool], kinds)
        cells = self.stat.cells
        side_a, side_b = self.entries
        return np.concatenate([self.finish(side_b.tables(block, cells))
                               - self.finish(side_a.tables(block, cells))
                               for block in _blocks(counts, cells)])

    def permuted(self, swapped: FloatArray) -> FloatArray:
        """statistic(B') - statistic(A') for (k, types) counts of swapped rows."""
        if isinstance(self.stat, Sums):
            shift = swapped @ self.shifts
            return self.finish(self.total_b + shift) - self.finish(self.total_a - shift)
        cells = self.stat.cells
        out = []
        for block in _blocks(swapped, cells):
            shift = self.shift_entries.tables(block, cells)
            out.append(self.finish(self.total_b + shift) - self.finish(self.total_a - shift))
        return np.concatenate(out)

    def cost(self, resamples: int, permutations: int) -> int:
        """Roughly what the bootstrap and the permutations cost, in draws of one row."""
        return resamples * self.draws.cost() + permutations * self.types.size


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

    Rows are resampled, and A and B swapped within random rows, as in
    `paired_continuous`, but drawn per kind of row rather than per row: a resample
    draws how many rows of each kind it holds, a permutation how many rows of each
    type it swaps, so the cost follows the number of distinct rows, not n. Each statistic draws from
    `seed` (bootstrap) and `seed + 1` (permutations) on its own, so its numbers do
    not depend on the others.
    """
    if n == 0:
        return {name: _empty() for name in stats}
    prepared = {name: _Prepared(stat, n) for name, stat in stats.items()}
    both = {name: p.values() for name, p in prepared.items()}
    observed = {name: b - a for name, (a, b) in both.items()}
    live = {name: p for name, p in prepared.items() if math.isfinite(observed[name])}

    def bootstrap_values(p: _Prepared) -> FloatArray:
        rng = np.random.default_rng(seed)
        return np.concatenate([p.resampled(chunk) for chunk in p.draws.chunks(rng, resamples)])

    def permutation_count(p: _Prepared, observed: float) -> int:
        rng = np.random.default_rng(seed + 1)
        return sum(_extreme(p.permuted(swapped), observed)
                   for swapped in _swap_counts(rng, p.types, permutations))

    values: dict[str, FloatArray] = {}
    extreme = dict.fromkeys(stats, 0)
    for name, p in live.items():
        # The two use separate generators, so running them side by side (numpy releases
        # the GIL while drawing) changes nothing in the numbers.
        if p.cost(resamples, permutations) >= _PARALLEL_CELLS:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = pool.submit(permutation_count, p, observed[name])
                values[name] = bootstrap_values(p)
                extreme[name] = pending.result()
        else:
            values[name] = bootstrap_values(p)
            extreme[name] = permutation_count(p, observed[name])
    return {name: _result(both[name], _interval(values[name]) if name in values else None,
                          extreme[name], permutations, n)
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
    f1, present = _f1_per_label(tp, pred, true)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(f1.sum(axis=1) / present.sum(axis=1), dtype=np.float64)


# --- row-wise statistics for paired_continuous ------------------------------------------


# Draws of one row a figure of `paired_bounded` may spend (bootstrap and permutations).
_BOUNDED_CELLS = 10_000_000
_BOUNDED_MIN_RESAMPLES = 100


def paired_bounded(a: FloatArray, b: FloatArray, statistic: Callable[[FloatArray], FloatArray],
                   cells: int = _BOUNDED_CELLS, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """`paired_continuous` within a budget of `cells` row draws, for per-row figures that
    have no totals to resample by kind (a percentile of latencies): as many rows as there
    are distinct values, so a run of 100,000 rows would cost 300 million draws.

    Up to `cells` / PERMUTATIONS rows it is `paired_continuous`. Beyond, the permutation
    test is left out (`p_value` None) and the bootstrap draws `cells` / n resamples (at
    least 100): the interval stays a paired percentile bootstrap, computed from fewer
    resamples, so its ends move a little more from one seed to another.
    """
    n = int(a.shape[0])
    if n * PERMUTATIONS <= cells:
        return paired_continuous(a, b, statistic, seed=seed)
    values = (float(statistic(a[None, ...])[0]), float(statistic(b[None, ...])[0]))
    resamples = min(BOOTSTRAP_RESAMPLES, max(_BOUNDED_MIN_RESAMPLES, cells // n))
    lo, hi = bootstrap([a, b], lambda x, y: statistic(y) - statistic(x), resamples, seed)
    out = _result(values, [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None, 0,
                  PERMUTATIONS, n)
    out["p_value"] = None
    return out


def paired_mean_bounded(a: FloatArray, b: FloatArray, cells: int = _BOUNDED_CELLS,
                        seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """`paired_bounded` for the mean per row (tokens, cost), where resampling is not needed
    beyond the bound: the bootstrap distribution of a mean of thousands of paired
    differences is the normal one (central limit theorem), so the interval is the mean
    difference +- 1.96 standard errors, at the cost of one pass instead of millions of
    draws. Up to the bound it is `paired_continuous`, as every other figure."""
    n = int(a.shape[0])
    if n * PERMUTATIONS <= cells:
        return paired_continuous(a, b, mean_rows, seed=seed)
    d = b - a
    delta = float(d.mean())
    half = 1.959963984540054 * float(d.std(ddof=1)) / math.sqrt(n)
    out = _result((float(a.mean()), float(b.mean())),
                  [delta - half, delta + half] if math.isfinite(half) else None, 0,
                  PERMUTATIONS, n)
    out["p_value"] = None
    return out


def mean_rows(m: FloatArray) -> FloatArray:
    """The mean of each row of a (k, n) matrix: a per-row figure's statistic (tokens, cost)."""
    return np.asarray(m.mean(axis=-1), dtype=np.float64)


def percentile_rows(q: float) -> Callable[[FloatArray], FloatArray]:
    """The `q`th percentile of each row of a (k, n) matrix (numpy's linear interpolation, as
    a run's latency percentiles are computed): p50 and p90 of a resample."""
    def statistic(m: FloatArray) -> FloatArray:
        return np.asarray(np.percentile(m, q, axis=-1), dtype=np.float64)

    return statistic


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
