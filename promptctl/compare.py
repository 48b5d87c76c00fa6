"""Comparing runs: a paired diff of two runs, the history of a prompt, choosing runs by ref or model.

Rows are paired by row id. With `--repeat K` a row's samples stay together: a
resample or a permutation moves whole rows, so K samples of one row are not
counted as K independent observations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptctl.gitinfo import find_repo
from promptctl.metrics import registry
from promptctl.metrics.registry import Stored, stored
from promptctl.results import (
    SIGNIFICANCE,
    DiffResult,
    Flipped,
    FlippedRow,
    HistoryPoint,
    HistoryResult,
    MetricDelta,
    PartRun,
    PartSearch,
    RunBrief,
    SampleCounts,
    UsageDelta,
    UsageDiff,
    interval,
    verdict,
)
from promptctl.runs import best, covers_evalset, row_errors, stands_for_version
from promptctl.stats import (
    MAX_TABLE_CELLS,
    Statistic,
    Sums,
    Table,
    f1_macro_table,
    paired_binary,
    paired_bounded,
    paired_continuous,
    paired_mean_bounded,
    paired_resampling,
    pearson_rows,
    pearson_table,
    percentile_rows,
    rank_rows,
    ratio,
    ratio_sqrt,
    spearman_table,
)
from promptctl.store import RowRecord, RunRecord, ScoreColumns, Store

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[Any]

CORRELATIONS = ("pearson", "spearman")
FLIPPED_LIMIT = 20


# --- loading both runs ----------------------------------------------------------------------


@dataclass
class _Side:
    """One run's eval rows: per sample its row (an index into `ids`), success and scores.

    Samples with the same scores (from the store, one shared dict) are read once:
    `distinct` holds each distinct score dict, `code` each sample's index into it.
    """

    run: RunRecord
    ids: list[str]
    row: Any
    ok: Any
    distinct: list[dict[str, Any]]
    code: Any
    _columns: dict[str, FloatArray] = field(default_factory=dict)

    @cached_property
    def index(self) -> dict[str, int]:
        return dict(zip(self.ids, range(len(self.ids)), strict=True))

    @property
    def max_samples(self) -> int:
        import numpy as np

        return int(np.bincount(self.row).max(initial=0)) if self.row.size else 0

    def column(self, key: str) -> FloatArray:
        """Per sample the score `key` as a float; NaN where missing or the request failed."""
        import numpy as np

        if key not in self._columns:
            values = map(dict.get, self.distinct, repeat(key), repeat(math.nan))
            try:
                known = np.fromiter(values, dtype=np.float64, count=len(self.distinct))
            except (TypeError, ValueError):  # a null score, or one another writer left as text
                known = np.array([_score(s.get(key)) for s in self.distinct], dtype=np.float64)
            out = known[self.code]
            out[~self.ok] = math.nan
            self._columns[key] = out
        return self._columns[key]

    def key_of(self, keys: Sequence[str]) -> str:
        """The first of `keys` this side's scores hold (a metric's key, then the keys runs
        stored by older versions kept it under), else the first."""
        return next((k for k in keys if any(k in d for d in self.distinct)), keys[0])

    def scores(self) -> Iterator[dict[str, Any]]:
        """Each sample's score dict ({} where the request failed)."""
        return map(self.distinct.__getitem__, self.code.tolist())

    def per_row(self, values: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Sum and count per row of the finite per-sample values."""
        import numpy as np

        keep = np.isfinite(values)
        size = len(self.ids)
        return (np.bincount(self.row[keep], weights=values[keep], minlength=size),
                np.bincount(self.row[keep], minlength=size).astype(np.float64))


def _score(value: Any) -> float:
    """A stored score as a number: NaN (missing) for None and for anything not a number."""
    try:
        return float(value) if isinstance(value, bool | int | float) else math.nan
    except OverflowError:  # an integer beyond any float
        return math.nan


def _side(run: RunRecord, cols: ScoreColumns) -> _Side:
    import numpy as np

    ids, scores = cols["row_id"], cols["scores"]
    # The same object (dict or None) is the same scores.
    _, first, code = np.unique(np.fromiter(map(id, scores), dtype=np.uint64, count=len(scores)),
                               return_index=True, return_inverse=True)
    distinct = [scores[i] if scores[i] is not None else {} for i in first.tolist()]
    ok = np.array(cols["ok"], dtype=bool)
    if not any(cols["sample"]):  # one sample per row: (row id, sample) is the store's key
        return _Side(run, ids, np.arange(len(ids)), ok, distinct, code)
    index: dict[str, int] = {}
    row = np.fromiter((index.setdefault(r, len(index)) for r in ids), dtype=np.int64,
                      count=len(ids))
    return _Side(run, list(index), row, ok, distinct, code)


@dataclass
class _Pairs:
    """Row ids in both runs: A's and B's row index of each, and which have an answer on both."""

    a: Any
    b: Any
    answered: Any


def _pairs(sa: _Side, sb: _Side) -> _Pairs:
    import numpy as np

    if sa.ids == sb.ids:  # the same eval set in the same order: the usual case
        ia = ib = np.arange(len(sa.ids))
    else:
        common = [(i, sb.index[r]) for i, r in enumerate(sa.ids) if r in sb.index]
        ia = np.array([c[0] for c in common], dtype=np.int64)
        ib = np.array([c[1] for c in common], dtype=np.int64)
    ok_a = np.bincount(sa.row[sa.ok], minlength=len(sa.ids)) > 0
    ok_b = np.bincount(sb.row[sb.ok], minlength=len(sb.ids)) > 0
    return _Pairs(ia, ib, ok_a[ia] & ok_b[ib])


# --- one metric -----------------------------------------------------------------------------


@dataclass
class _Plan:
    """How one metric is tested: on which pairs (a mask over common rows), with what."""

    name: str
    mask: Any
    statistic: Statistic | None = None
    binary: tuple[FloatArray, FloatArray] | None = None
    fallback: tuple[FloatArray, FloatArray, str] | None = None


def _sums_plan(name: str, pairs: _Pairs, a: tuple[FloatArray, FloatArray],
               b: tuple[FloatArray, FloatArray], finish: Any, binary: bool = False) -> _Plan:
    """A statistic of (sum, count) totals per row; McNemar when every count is one 0/1 score."""
    import numpy as np


    sum_a, n_a = a[0][pairs.a], a[1][pairs.a]
    sum_b, n_b = b[0][pairs.b], b[1][pairs.b]
    mask = pairs.answered & (n_a > 0) & (n_b > 0)
    if binary and np.all(n_a[mask] == 1) and np.all(n_b[mask] == 1):
        return _Plan(name, mask, binary=(sum_a[mask], sum_b[mask]))
    return _Plan(name, mask, statistic=Sums(np.vstack([sum_a[mask], n_a[mask]]),
                                            np.vstack([sum_b[mask], n_b[mask]]), finish))


def _codes(values: Sequence[FloatArray]) -> tuple[FloatArray, list[Any]]:
    """Sorted distinct values of several arrays, and each array coded against them."""
    import numpy as np

    uniq = np.unique(np.concatenate(values)) if values else np.array([])
    return uniq, [np.searchsorted(uniq, v) for v in values]


def _entries(side: _Side, where: Any, keep: Any, cell: Any) -> tuple[Any, Any, Any]:
    import numpy as np

    rows = where[side.row[keep]]
    inside = rows >= 0
    return rows[inside], cell[inside], np.ones(int(inside.sum()))


def _correlation_plan(name: str, pairs: _Pairs, sa: _Side, sb: _Side) -> _Plan:
    """Pearson or Spearman of answer against expected over every numeric sample of the pairs.

    As a table of joint counts when the values are few (scores on a scale), else
    on the rows' mean answer and expected value.
    """
    import numpy as np


    xa, ya, xb, yb = sa.column("answer_num"), sa.column("expected_num"), \
        sb.column("answer_num"), sb.column("expected_num")
    ka, kb = np.isfinite(xa) & np.isfinite(ya), np.isfinite(xb) & np.isfinite(yb)
    count_a = np.bincount(sa.row[ka], minlength=len(sa.ids))[pairs.a]
    count_b = np.bincount(sb.row[kb], minlength=len(sb.ids))[pairs.b]
    mask = pairs.answered & (count_a > 0) & (count_b > 0)
    n = int(mask.sum())
    ux, (cxa, cxb) = _codes([xa[ka], xb[kb]])
    uy, (cya, cyb) = _codes([ya[ka], yb[kb]])
    if ux.size * uy.size <= MAX_TABLE_CELLS:
        where_a = np.full(len(sa.ids), -1)
        where_a[pairs.a[mask]] = np.arange(n)
        where_b = np.full(len(sb.ids), -1)
        where_b[pairs.b[mask]] = np.arange(n)
        finish = pearson_table(ux, uy) if name == "pearson" else spearman_table
        return _Plan(name, mask, statistic=Table(
            _entries(sa, where_a, ka, cxa * uy.size + cya),
            _entries(sb, where_b, kb, cxb * uy.size + cyb), (ux.size, uy.size), finish))

    def means(side: _Side, keep: Any, x: FloatArray, y: FloatArray, rows: Any) -> FloatArray:
        sx, c = side.per_row(np.where(keep, x, np.nan))
        sy, _ = side.per_row(np.where(keep, y, np.nan))
        return np.stack([sx[rows] / c[rows], sy[rows] / c[rows]], axis=1)

    return _Plan(name, mask, fallback=(means(sa, ka, xa, ya, pairs.a[mask]),
                                       means(sb, kb, xb, yb, pairs.b[mask]), name))


def _f1_plan(pairs: _Pairs, sa: _Side, sb: _Side) -> _Plan | None:
    """Macro F1 from the confusion table of (answer label or none, expected label)."""
    import numpy as np


    def labels(side: _Side) -> tuple[list[Any], list[Any], Any]:
        answers, expected, keep = [], [], np.zeros(side.code.size, dtype=bool)
        for i, s in enumerate(side.scores()):
            if side.ok[i] and "label_expected" in s:
                keep[i] = True
                answers.append(s.get("label_answer"))
                expected.append(s["label_expected"])
        return answers, expected, keep

    ans_a, exp_a, ka = labels(sa)
    ans_b, exp_b, kb = labels(sb)
    names = sorted({*exp_a, *exp_b, *(x for x in ans_a + ans_b if x is not None)})
    size = len(names)
    if (size + 1) * size > MAX_TABLE_CELLS or size == 0:
        return None
    code = {label: i for i, label in enumerate(names)}
    count_a = np.bincount(sa.row[ka], minlength=len(sa.ids))[pairs.a]
    count_b = np.bincount(sb.row[kb], minlength=len(sb.ids))[pairs.b]
    mask = pairs.answered & (count_a > 0) & (count_b > 0)
    n = int(mask.sum())

    def entries(side: _Side, rows: Any, keep: Any, answers: list[Any],
                expected: list[Any]) -> tuple[Any, Any, Any]:
        where = np.full(len(side.ids), -1)
        where[rows] = np.arange(n)
        cell = np.array([(size if x is None else code[x]) * size + code[e]
                         for x, e in zip(answers, expected, strict=True)], dtype=np.int64)
        return _entries(side, where, keep, cell)

    return _Plan("f1_macro", mask, statistic=Table(
        entries(sa, pairs.a[mask], ka, ans_a, exp_a), entries(sb, pairs.b[mask], kb, ans_b, exp_b),
        (size + 1, size), f1_macro_table))


def _plans(metrics: Sequence[Stored], pairs: _Pairs, sa: _Side, sb: _Side) -> list[_Plan]:
    """How each metric is tested, by the paired statistic the registry names for it."""
    import numpy as np


    plans: list[_Plan] = []
    cache: dict[tuple[str, ...], tuple[tuple[FloatArray, FloatArray],
                                      tuple[FloatArray, FloatArray]]] = {}

    def totals(*keys: str) -> tuple[tuple[FloatArray, FloatArray], tuple[FloatArray, FloatArray]]:
        """Per row of each side the sum and count of its samples' score under the first of
        `keys` that side holds (a run stored by an older version may keep a former key)."""
        if keys not in cache:
            if keys == ("abs_error",):
                va = abs(sa.column("answer_num") - sa.column("expected_num"))
                vb = abs(sb.column("answer_num") - sb.column("expected_num"))
            else:
                va, vb = sa.column(sa.key_of(keys)), sb.column(sb.key_of(keys))
            cache[keys] = (sa.per_row(va), sb.per_row(vb))
        return cache[keys]

    def zero_one(key: str) -> bool:
        values = np.concatenate([sa.column(key), sb.column(key)])
        values = values[np.isfinite(values)]
        return bool(np.all((values == 0) | (values == 1)))

    for m in metrics:
        keys = (m.key, *m.former_keys)
        if m.paired == registry.PAIRED_BINARY:
            plans.append(_sums_plan(m.name, pairs, *totals(*keys), ratio, binary=True))
        elif m.paired == registry.PAIRED_MEAN:
            # A judge that answers pass/fail is a 0/1 score: McNemar's test, as for exact_match.
            plans.append(_sums_plan(m.name, pairs, *totals(*keys), ratio, binary=zero_one(m.key)))
        elif m.paired == registry.PAIRED_RMSE:
            plans.append(_sums_plan(m.name, pairs, *totals(*keys), ratio_sqrt))
        elif m.paired == registry.PAIRED_MAE:
            plans.append(_sums_plan(m.name, pairs, *totals("abs_error"), ratio))
        elif m.paired == registry.PAIRED_CORRELATION:
            plans.append(_correlation_plan(m.name, pairs, sa, sb))
        elif m.paired == registry.PAIRED_F1:
            plan = _f1_plan(pairs, sa, sb)
            if plan is not None:
                plans.append(plan)
    return plans


def _run_plans(plans: list[_Plan]) -> dict[str, dict[str, Any]]:
    """Test every plan; plans over the same pairs share one stream of random draws."""
    import numpy as np


    out: dict[str, dict[str, Any]] = {}
    groups: dict[bytes, list[_Plan]] = {}
    for plan in plans:
        n = int(plan.mask.sum())
        if plan.binary is not None:
            out[plan.name] = paired_binary(*plan.binary)
        elif plan.fallback is not None:
            a, b, kind = plan.fallback

            def stat(m: FloatArray, kind: str = kind) -> FloatArray:
                if kind == "spearman":
                    return pearson_rows(rank_rows(m[..., 0]), rank_rows(m[..., 1]))
                return pearson_rows(m[..., 0], m[..., 1])

            out[plan.name] = paired_continuous(a if n >= 3 else a[:0], b if n >= 3 else b[:0],
                                               stat) | {"n": n}
        else:
            groups.setdefault(np.packbits(plan.mask).tobytes() + bytes([n % 256]), []).append(plan)
    for group in groups.values():
        n = int(group[0].mask.sum())
        stats = {p.name: p.statistic for p in group if p.statistic is not None}
        small = [p.name for p in group if p.name in CORRELATIONS and n < 3]
        results = paired_resampling(n, {k: v for k, v in stats.items() if k not in small})
        for name in small:
            results[name] = {"a": None, "b": None, "delta": None, "ci95": None, "p_value": None,
                             "test": "paired_permutation", "n": n}
        out.update(results)
    return out


# --- flipped rows and warnings ----------------------------------------------------------------


def _pass_fail(metrics: Sequence[Stored]) -> list[Stored]:
    """The pass/fail metrics both runs have, in the order a flipped row is judged by: the
    first whose rows both runs scored names the row's change (exact_match and accuracy
    before the others, format_validity, which every row has, last)."""
    binary = [m for m in metrics if m.paired == registry.PAIRED_BINARY]
    validity = stored("format_validity", None)
    if validity is not None and all(m.name != validity.name for m in binary):
        binary.append(validity)  # scored on every answered row, asked for or not
    first = {"exact_match": 0, "accuracy": 1, "format_validity": 3}
    return sorted(binary, key=lambda m: first.get(m.name, 2))


def _flipped(store: Store, sa: _Side, sb: _Side, pairs: _Pairs,
             metrics: Sequence[Stored]) -> Flipped:
    import numpy as np

    regressed: list[tuple[int, str, float, float]] = []
    improved: list[tuple[int, str, float, float]] = []
    for metric in _pass_fail(metrics):
        keys = (metric.key, *metric.former_keys)
        # Each flipped row is labelled with the metric's own name, whatever key it is kept under.
        key = metric.name
        (hit_a, n_a) = sa.per_row(sa.column(sa.key_of(keys)))
        (hit_b, n_b) = sb.per_row(sb.column(sb.key_of(keys)))
        n_a, n_b = n_a[pairs.a], n_b[pairs.b]
        if not (np.any(n_a > 0) and np.any(n_b > 0)):
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            share_a, share_b = hit_a[pairs.a] / n_a, hit_b[pairs.b] / n_b
        scored = pairs.answered & (n_a > 0) & (n_b > 0)
        for i in np.flatnonzero(scored & (share_a > share_b)):
            regressed.append((int(i), key, float(share_a[i]), float(share_b[i])))
        for i in np.flatnonzero(scored & (share_a < share_b)):
            improved.append((int(i), key, float(share_a[i]), float(share_b[i])))
        break
    error_up: list[tuple[int, str, float, float]] = []
    err_a = sa.per_row(abs(sa.column("answer_num") - sa.column("expected_num")))
    err_b = sb.per_row(abs(sb.column("answer_num") - sb.column("expected_num")))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_a = err_a[0][pairs.a] / err_a[1][pairs.a]
        mean_b = err_b[0][pairs.b] / err_b[1][pairs.b]
    rising = np.flatnonzero(pairs.answered & np.isfinite(mean_a) & np.isfinite(mean_b)
                            & (mean_b > mean_a))
    order = rising[np.argsort(-(mean_b[rising] - mean_a[rising]), kind="stable")][:FLIPPED_LIMIT]
    error_up = [(int(i), "mae", float(mean_a[i]), float(mean_b[i])) for i in order]

    wanted = {sa.ids[pairs.a[i]] for i, *_ in regressed + improved + error_up}
    columns = ("input", "answer", "completion", "error")
    details_a = _details(store.rows_by_id(sa.run["id"], wanted, columns=columns)) if wanted else {}
    details_b = _details(store.rows_by_id(sb.run["id"], wanted, columns=columns)) if wanted else {}
    repeated = max(sa.max_samples, sb.max_samples) > 1

    def entry(item: tuple[int, str, float, float], *, error: bool = False) -> FlippedRow:
        i, key, va, vb = item
        row_id = sa.ids[pairs.a[i]]
        ra, rb = details_a.get(row_id, {}), details_b.get(row_id, {})
        error_a = error_b = pass_a = pass_b = None
        if error:
            error_a, error_b = va, vb
        elif repeated:
            pass_a, pass_b = va, vb
        return FlippedRow(row_id=row_id, input=ra.get("input"), expected=ra.get("expected"),
                          answer_a=ra.get("answer"), answer_b=rb.get("answer"),
                          completion_a=ra.get("completion"), completion_b=rb.get("completion"),
                          metric=None if error else key, pass_a=pass_a, pass_b=pass_b,
                          error_a=error_a, error_b=error_b)

    return Flipped(pass_to_fail=tuple(entry(r) for r in regressed),
                   fail_to_pass=tuple(entry(r) for r in improved),
                   biggest_error_increases=tuple(entry(r, error=True) for r in error_up))


def _details(rows: list[RowRecord]) -> dict[str, Mapping[str, Any]]:
    """The first answered sample of each row id (else its first sample)."""
    out: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        if r["row_id"] not in out or (out[r["row_id"]].get("error") is not None
                                      and r.get("error") is None):
            out[r["row_id"]] = r
    return out


def _warnings(sa: _Side, sb: _Side, pairs: _Pairs) -> list[str]:
    run_a, run_b = sa.run, sb.run
    out = []
    if run_a["evalset_version"] != run_b["evalset_version"]:
        out.append("A and B used different eval set versions: only rows with the same id are "
                   "paired, and an edited row compares different questions")
    if run_a["model"] != run_b["model"]:
        out.append(f"different models: {run_a['model']} vs {run_b['model']}")
    elif (run_a.get("base_url") or None) != (run_b.get("base_url") or None):
        out.append(f"different servers for {run_a['model']}: {run_a.get('base_url') or '-'} vs "
                   f"{run_b.get('base_url') or '-'}")
    for side, run in (("A", run_a), ("B", run_b)):
        if run["git_dirty"]:
            out.append(f"{side} ({run['id']}) ran on a dirty work tree: its commit does not "
                       "reproduce it")
        if run["status"] != "complete":
            out.append(f"{side} ({run['id']}) is {run['status']}")
        elif not covers_evalset(run):
            summary = run.get("summary") or {}
            out.append(f"{side} ({run['id']}) is a partial run: it answered "
                       f"{summary.get('n', 0)} of the eval set's rows, so it stands for no version")
    fa = set((run_a.get("summary") or {}).get("system_fingerprints") or [])
    fb = set((run_b.get("summary") or {}).get("system_fingerprints") or [])
    if run_a["model"] == run_b["model"] and fa and fb and fa != fb:
        out.append(f"the server reported different system fingerprints ({', '.join(sorted(fa))} "
                   f"vs {', '.join(sorted(fb))}): the model behind the name may have changed")
    only_a, only_b = len(sa.ids) - pairs.a.size, len(sb.ids) - pairs.b.size
    if only_a or only_b:
        out.append(f"{only_a} row(s) only in A and {only_b} only in B are not compared")
    excluded = int(pairs.a.size - pairs.answered.sum())
    if excluded:
        out.append(f"{excluded} row(s) with a failed request on either side are not compared "
                   "(errors are not wrong answers)")
    ka, kb = sa.max_samples, sb.max_samples
    if ka != kb:
        out.append(f"A has {ka} sample(s) per row and B {kb}: each row's samples are pooled")
    return out


# --- tokens, cost and latency ---------------------------------------------------------------


def run_price(run: Mapping[str, Any]) -> tuple[float, float] | None:
    """The (input, output) USD per million tokens a run's cost was computed at, as its summary
    keeps it; None when its price was unknown or the run was stored before prices were kept."""
    price = (run.get("summary") or {}).get("price_per_mtok")
    if not isinstance(price, Mapping):
        return None
    pair: list[float] = []
    for value in (price.get("input"), price.get("output")):
        if not isinstance(value, int | float) or isinstance(value, bool) \
                or not math.isfinite(value) or value < 0:
            return None
        pair.append(float(value))
    return pair[0], pair[1]


@dataclass
class _Usage:
    """Per row of one side (an index into its `ids`): its answered samples' prompt and
    completion tokens summed (NaN when one of them has none recorded), the mean latency of
    those not answered from the cache (NaN when there are none), and whether one was."""

    prompt: FloatArray
    completion: FloatArray
    latency: FloatArray
    cached: Any


def _floats(values: Sequence[Any]) -> FloatArray:
    """Numbers or None (`UsageColumns`) as floats, None as NaN."""
    import numpy as np

    return np.array(values, dtype=np.float64).reshape(len(values))


def _usage_side(store: Store, side: _Side) -> _Usage:
    import numpy as np

    cols = store.usage_columns(side.run["id"], kind="eval")
    size = len(side.ids)
    ids = side.ids
    if len(cols["row_id"]) == side.row.size and \
            cols["row_id"] == [ids[i] for i in side.row.tolist()]:
        # The usual case: both queries read the run's rows in the same order, so the row
        # of each sample is known without a dictionary lookup per sample.
        where = np.asarray(side.row, dtype=np.int64)
    else:
        where = np.fromiter((side.index.get(r, -1) for r in cols["row_id"]), dtype=np.int64,
                            count=len(cols["row_id"]))
    ok = np.array(cols["ok"], dtype=bool) & (where >= 0)
    cached = np.array(cols["cached"], dtype=bool)

    def summed(values: Sequence[Any]) -> FloatArray:
        v = _floats(values)
        known = ok & np.isfinite(v)
        total = np.bincount(where[known], weights=v[known], minlength=size).astype(np.float64)
        total[np.bincount(where[ok & ~known], minlength=size) > 0] = np.nan
        return total

    latency = _floats(cols["latency_ms"])
    fresh = ok & ~cached & np.isfinite(latency)
    total = np.bincount(where[fresh], weights=latency[fresh], minlength=size).astype(np.float64)
    count = np.bincount(where[fresh], minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    return _Usage(summed(cols["prompt_tokens"]), summed(cols["completion_tokens"]), mean,
                  np.bincount(where[ok & cached], minlength=size) > 0)


def _figure(a: FloatArray, b: FloatArray, statistic: Any, empty: str) -> UsageDelta:
    """A paired figure over the rows where both sides have a value (`statistic` None: the
    mean per row); `empty` says why there is none when no row has."""
    import numpy as np

    keep = np.isfinite(a) & np.isfinite(b)
    t = paired_mean_bounded(a[keep], b[keep]) if statistic is None else \
        paired_bounded(a[keep], b[keep], statistic)
    return UsageDelta(a=t["a"], b=t["b"], delta=t["delta"], ci95=interval(t["ci95"]),
                      p_value=t["p_value"], n=t["n"], unknown=None if t["n"] else empty)


def _unknown(why: str) -> UsageDelta:
    return UsageDelta(a=None, b=None, delta=None, ci95=None, p_value=None, n=0, unknown=why)


def _usage(store: Store, sa: _Side, sb: _Side, pairs: _Pairs) -> UsageDiff:
    """Tokens, cost and latency per row of B against A over the rows both answered."""
    import numpy as np

    ua, ub = _usage_side(store, sa), _usage_side(store, sb)
    ia, ib = pairs.a[pairs.answered], pairs.b[pairs.answered]
    no_tokens = "no paired row has its tokens recorded on both sides"
    prompt = _figure(ua.prompt[ia], ub.prompt[ib], None, no_tokens)
    completion = _figure(ua.completion[ia], ub.completion[ib], None, no_tokens)
    total = _figure(ua.prompt[ia] + ua.completion[ia], ub.prompt[ib] + ub.completion[ib],
                    None, no_tokens)
    price_a, price_b = run_price(sa.run), run_price(sb.run)
    if price_a is None or price_b is None:
        missing = [f"{side} ({run['model']})" for side, run, price in
                   (("A", sa.run, price_a), ("B", sb.run, price_b)) if price is None]
        cost = _unknown(f"no price for {' and '.join(missing)}: add the model to pricing: in "
                        "promptctl.yaml and run it again (runs stored before promptctl kept "
                        "prices have none)")
    else:
        cost = _figure((ua.prompt[ia] * price_a[0] + ua.completion[ia] * price_a[1]) / 1e6,
                       (ub.prompt[ib] * price_b[0] + ub.completion[ib] * price_b[1]) / 1e6,
                       None, no_tokens)
    la, lb = ua.latency[ia], ub.latency[ib]
    cached = (ua.cached[ia] | ub.cached[ib]) & ~(np.isfinite(la) & np.isfinite(lb))
    no_latency = ("every paired row was answered from the cache on one side or the other"
                  if cached.any() else "no paired row has its latency recorded on both sides")
    return UsageDiff(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total,
                     cost_usd=cost,
                     latency_p50_ms=_figure(la, lb, percentile_rows(50), no_latency),
                     latency_p90_ms=_figure(la, lb, percentile_rows(90), no_latency),
                     latency_cached_excluded=int(cached.sum()))


def _run_brief(run: RunRecord) -> RunBrief:
    return RunBrief(id=run["id"], created_at=run["created_at"], status=run["status"],
                    prompt_name=run["prompt_name"], prompt_path=run["prompt_path"],
                    prompt_version=run["prompt_version"], git_commit=run.get("git_commit"),
                    git_dirty=run.get("git_dirty"), git_branch=run.get("git_branch"),
                    model=run["model"], endpoint=run["endpoint"],
                    evalset_path=run.get("evalset_path"),
                    evalset_version=run.get("evalset_version"), metrics=run.get("metrics"),
                    summary=run.get("summary"))


def compare_runs(store: Store, a_ref: str, b_ref: str, *,
                 significance: float = SIGNIFICANCE) -> DiffResult:
    """Paired comparison of run B against run A (B - A), by row id.

    Per metric: A and B on the paired rows, the delta, a 95% paired bootstrap
    interval of the delta and a p-value (exact McNemar for 0/1 scores, paired
    permutation otherwise), and the verdict at `significance` (`results.verdict`);
    the run-level values as `a_run` and `b_run`. Then the tokens, cost and latency per
    paired row (`usage`, see `UsageDiff`), the rows that flipped and the warnings that
    make a comparison suspect.
    """
    run_a, run_b = store.get_run(a_ref), store.get_run(b_ref)
    cols_a, cols_b = store.score_columns_of([run_a["id"], run_b["id"]], kind="eval")
    sa, sb = _side(run_a, cols_a), _side(run_b, cols_b)
    pairs = _pairs(sa, sb)
    metrics_a, metrics_b = run_a.get("metrics") or {}, run_b.get("metrics") or {}
    known = [stored(m, metrics_b[m]) for m in metrics_b if m in metrics_a]
    described = {s.name: s for s in known if s is not None}
    tested = _run_plans(_plans(list(described.values()), pairs, sa, sb))
    metrics: dict[str, MetricDelta] = {}
    for name, how in described.items():
        if name not in tested:
            continue
        t = tested[name]
        direction = None
        if t["delta"] is not None:
            worse = t["delta"] < 0 if how.higher_is_better else t["delta"] > 0
            direction = "same" if t["delta"] == 0 else ("worse" if worse else "better")
        metrics[name] = MetricDelta(
            a=t["a"], b=t["b"], delta=t["delta"], ci95=interval(t["ci95"]), p_value=t["p_value"],
            test=t["test"], n=t["n"], n01=t.get("n01"), n10=t.get("n10"),
            a_run=(metrics_a[name] or {}).get("value"), b_run=(metrics_b[name] or {}).get("value"),
            higher_is_better=how.higher_is_better, direction=direction,
            verdict=verdict(t["delta"], t["ci95"], t["p_value"],
                            higher_is_better=how.higher_is_better, significance=significance))
    answered = int(pairs.answered.sum())
    return DiffResult(
        a=_run_brief(run_a), b=_run_brief(run_b), significance=significance, metrics=metrics,
        paired_rows=answered, only_in_a=len(sa.ids) - int(pairs.a.size),
        only_in_b=len(sb.ids) - int(pairs.b.size),
        errors_excluded=int(pairs.a.size) - answered,
        samples=SampleCounts(a=sa.max_samples, b=sb.max_samples),
        flipped=_flipped(store, sa, sb, pairs, list(described.values())),
        warnings=tuple(_warnings(sa, sb, pairs)),
        usage=_usage(store, sa, sb, pairs),
    )


# --- history ----------------------------------------------------------------------------------


def history(store: Store, prompt: str, *, model: str | None = None,
            root: Path | None = None) -> HistoryResult:
    """One entry per (prompt version, model): the run that stands for it (see `selection`),
    newest version first.

    Versions are ordered by when they came to be: the commit date of a clean run (parents
    before children when dates tie), the run's own time for a run on a dirty work tree or
    outside git. With `root`, each entry gets the commit's date, author and subject from git.
    """
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    parts: list[RunRecord] = []
    wanted = ("id", "created_at", "status", "prompt_version", "model", "git_commit", "git_dirty",
              "evalset_version", "metrics", "summary", "options", "n_planned", "coverage", "errors")
    for run in store.list_runs(prompt, columns=wanted):
        if model is not None and run["model"] != model:
            continue
        if stands_for_version(run):
            groups.setdefault((run["prompt_version"], run["model"]), []).append(run)
        elif (run.get("options") or {}).get("subset"):
            parts.append(run)
    chosen = [r for r in (best(g) for g in groups.values()) if r is not None]
    repo = find_repo(root) if root is not None else None
    facts = repo.commit_facts({r["git_commit"] for r in chosen if r["git_commit"]}) \
        if repo is not None else {}
    depths = _depths(facts)
    entries: list[HistoryPoint] = []
    directions: dict[str, bool] = {}
    order: dict[str, tuple[float, int, str]] = {}
    for run in chosen:
        fact = facts.get(run.get("git_commit") or "", {})
        summary = run.get("summary") or {}
        entries.append(HistoryPoint(
            run=run["id"], created_at=run["created_at"],
            prompt_version=run["prompt_version"], model=run["model"],
            git_commit=run["git_commit"], git_dirty=run["git_dirty"],
            date=fact.get("date"), author=fact.get("author"), subject=fact.get("subject"),
            evalset_version=run["evalset_version"],
            metrics={k: (v or {}).get("value") for k, v in (run["metrics"] or {}).items()},
            n=summary.get("n"), errors=row_errors(run), cost_per_row=cost_per_row(store, run),
        ))
        for name, result in (run["metrics"] or {}).items():
            how = stored(name, result if isinstance(result, dict) else None)
            if how is not None:
                directions.setdefault(name, how.higher_is_better)
        order[run["id"]] = _order_key(run, fact, depths)
    entries.sort(key=lambda e: order[e.run], reverse=True)
    warnings = []
    for m in sorted({e.model for e in entries}):
        sets = {e.evalset_version for e in entries if e.model == m}
        if len(sets) > 1:
            warnings.append(f"{m}: the versions were evaluated on {len(sets)} different eval set "
                            "versions, so their metrics are not strictly comparable")
    return HistoryResult(prompt=prompt, model=model, versions=tuple(entries),
                         warnings=tuple(warnings), higher_is_better=directions,
                         searches=part_searches(parts))


def part_searches(runs: Iterable[RunRecord]) -> tuple[PartSearch, ...]:
    """Runs on parts of the eval set, grouped by the search that made them (newest search
    first, its runs in the order they were made). Runs stored before a search was recorded
    with them are grouped by model, as one search whose id is unknown."""
    grouped: dict[tuple[str | None, str], list[PartRun]] = {}
    for run in sorted(runs, key=lambda r: r["id"]):  # ids sort by time
        options: Mapping[str, Any] = run.get("options") or {}
        found = options.get("search")
        search: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        metrics = {k: {"value": (v or {}).get("value"), "n": (v or {}).get("n")}
                   for k, v in (run.get("metrics") or {}).items()}
        part = str(options["subset"]).removeprefix("tune:")
        key = (str(search["id"]) if search.get("id") else None, run["model"])
        grouped.setdefault(key, []).append(PartRun(
            run=run["id"], created_at=run["created_at"], status=run["status"], part=part,
            candidate=search.get("candidate"), origin=search.get("origin"),
            prompt_version=run["prompt_version"], model=run["model"],
            git_commit=run.get("git_commit"), git_dirty=run.get("git_dirty"), metrics=metrics,
            n=(run.get("summary") or {}).get("n"), errors=row_errors(run)))
    searches = [PartSearch(search=k[0], model=k[1], started_at=v[0].created_at, runs=tuple(v))
                for k, v in grouped.items()]
    searches.sort(key=lambda s: s.runs[0].run, reverse=True)
    return tuple(searches)


def cost_per_row(store: Store, run: Mapping[str, Any]) -> float | None:
    """What one eval row of a run cost in USD (its samples summed, cached answers priced as
    if sent): the eval rows' tokens at the run's price over its rows. A run stored before
    prices were kept falls back on its cost when it scored no few-shot examples (the cost
    is then the eval rows' alone); None when the price is unknown."""
    summary = run.get("summary") or {}
    rows = summary.get("rows", summary.get("n"))
    if not isinstance(rows, int) or isinstance(rows, bool) or rows <= 0:
        return None
    price = run_price(run)
    tokens = summary.get("tokens") or {}
    # The summary's tokens are the eval rows' when no few-shot example was scored; else the
    # store sums the eval rows' (a query per run, which history of many runs avoids).
    if summary.get("fewshot_n") == 0 and all(
            type(tokens.get(k)) is int for k in ("prompt", "completion")):
        eval_tokens: tuple[int, int] = (tokens["prompt"], tokens["completion"])
        few_shot = 0
    else:
        totals = store.run_totals(run["id"])
        eval_tokens = (totals["eval"]["prompt_tokens"], totals["eval"]["completion_tokens"])
        few_shot = totals["fewshot"]["n"]
    if price is not None:
        return (eval_tokens[0] * price[0] + eval_tokens[1] * price[1]) / 1e6 / rows
    cost = summary.get("cost_usd")
    if few_shot == 0 and isinstance(cost, int | float) and not isinstance(cost, bool) \
            and math.isfinite(cost):
        return float(cost) / rows
    return None


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _order_key(run: RunRecord, fact: dict[str, Any],
               depths: dict[str, int]) -> tuple[float, int, str]:
    if run["git_dirty"] or "time" not in fact:
        return (_epoch(run["created_at"]), 0, run["id"])
    return (float(fact["time"]), depths.get(run["git_commit"] or "", 0), run["id"])


def _depths(facts: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Per commit, the longest chain of parents among these commits: it orders commits
    made within the same second (a rebase, a script) parents first."""
    depth: dict[str, int] = {}
    for start in facts:
        stack = [start]
        while stack:
            sha = stack[-1]
            if sha in depth:
                stack.pop()
                continue
            parents = [p for p in facts[sha].get("parents", ()) if p in facts]
            todo = [p for p in parents if p not in depth]
            if todo:
                stack.extend(todo)
                continue
            depth[sha] = 1 + max((depth[p] for p in parents), default=-1)
            stack.pop()
    return depth
