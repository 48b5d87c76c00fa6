"""Paired statistics against independent computations on hand-made data."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats as sp

import promptctl.stats as S
from promptctl.metrics import BOOTSTRAP_SEED, _pearson_rows, f1_macro, rankdata
from promptctl.stats import (
    Sums,
    Table,
    f1_macro_table,
    mcnemar_exact,
    paired_binary,
    paired_continuous,
    paired_resampling,
    pearson_table,
    rank_rows,
    ratio,
    ratio_sqrt,
    spearman_table,
)


def binomial_two_sided(n01: int, n10: int) -> float:
    """The exact McNemar p-value written out: 2 * P(X <= min) for X ~ Binomial(n01 + n10, 1/2)."""
    m = n01 + n10
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(n01, n10) + 1)) / 2 ** m
    return min(1.0, 2 * tail)


# --- McNemar -----------------------------------------------------------------------------


@pytest.mark.parametrize(("n01", "n10"), [
    (0, 0), (1, 0), (0, 1), (3, 0), (5, 5), (7, 2), (2, 7), (10, 1), (1, 25), (30, 45),
    (120, 80), (400, 455), (0, 60),
])
def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_pairs(n01: int, n10: int) -> None:
    expected = binomial_two_sided(n01, n10)
    assert mcnemar_exact(n01, n10) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    if n01 + n10:
        assert mcnemar_exact(n01, n10) == pytest.approx(
            sp.binomtest(n01, n01 + n10, 0.5).pvalue, rel=1e-9, abs=1e-300)


def test_mcnemar_with_huge_counts_stays_finite() -> None:
    # The log-space sum must not overflow where comb(m, i) / 2**m would.
    p = mcnemar_exact(50_000, 50_400)
    assert 0 < p < 1
    assert p == pytest.approx(sp.binomtest(50_000, 100_400, 0.5).pvalue, rel=1e-6)


def test_paired_binary_counts_delta_and_p_value() -> None:
    # 10 rows: 6 agree, 3 pass->fail (A=1, B=0), 1 fail->pass.
    a = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 0], dtype=float)
    b = np.array([1, 0, 0, 1, 1, 0, 0, 1, 1, 0], dtype=float)
    r = paired_binary(a, b)
    assert (r["n"], r["n01"], r["n10"]) == (10, 1, 3)
    assert r["a"] == pytest.approx(0.7) and r["b"] == pytest.approx(0.5)
    assert r["delta"] == pytest.approx(-0.2)
    assert r["p_value"] == pytest.approx(binomial_two_sided(1, 3))  # 0.625
    assert r["test"] == "mcnemar_exact"


def test_paired_binary_bootstrap_is_the_multinomial_of_the_paired_table() -> None:
    rng = np.random.default_rng(7)
    a = (rng.random(300) < 0.6).astype(float)
    b = np.where(rng.random(300) < 0.15, 1 - a, a)
    r = paired_binary(a, b)
    # Independent computation: resampling rows = multinomial draws of the cell counts.
    n01 = int(((a == 0) & (b == 1)).sum())
    n10 = int(((a == 1) & (b == 0)).sum())
    counts = np.random.default_rng(BOOTSTRAP_SEED).multinomial(
        300, np.array([n01, n10, 300 - n01 - n10]) / 300, size=1000)
    lo, hi = np.percentile((counts[:, 0] - counts[:, 1]) / 300, [2.5, 97.5])
    assert r["ci95"] == [pytest.approx(lo), pytest.approx(hi)]
    assert r["ci95"][0] <= r["delta"] <= r["ci95"][1]
    # A fixed seed gives a fixed interval; another seed another one.
    assert paired_binary(a, b)["ci95"] == r["ci95"]
    assert paired_binary(a, b, seed=1)["ci95"] != r["ci95"]


def test_paired_binary_identical_sides_give_zero_and_p_one() -> None:
    a = np.array([1, 0, 1, 1, 0, 1], dtype=float)
    r = paired_binary(a, a.copy())
    assert r["delta"] == 0 and r["p_value"] == 1.0 and r["ci95"] == [0.0, 0.0]


def test_paired_binary_with_no_rows_has_no_delta() -> None:
    r = paired_binary(np.array([]), np.array([]))
    assert r["delta"] is None and r["p_value"] is None and r["n"] == 0


# --- the row-resampling reference ---------------------------------------------------------


def reference(a: np.ndarray, b: np.ndarray, statistic: Any, resamples: int = 1000,
              permutations: int = 2000, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Paired bootstrap and permutation test spelled out row by row, one resample at a time."""
    n = a.shape[0]
    observed = float(statistic(b[None])[0] - statistic(a[None])[0])
    rng = np.random.default_rng(seed)
    draws = []
    chunk = max(1, 2_000_000 // n)  # metrics.bootstrap draws its indices in chunks this size
    while len(draws) < resamples:
        idx = rng.integers(0, n, size=(min(chunk, resamples - len(draws)), n))
        for row in idx:
            draws.append(float(statistic(b[row][None])[0] - statistic(a[row][None])[0]))
    draws_arr = np.array(draws)
    lo, hi = np.percentile(draws_arr[np.isfinite(draws_arr)], [2.5, 97.5])
    rng = np.random.default_rng(seed + 1)
    extreme = 0
    for _ in range(permutations):
        swap = rng.random(n) < 0.5
        if a.ndim == 2:
            swap = swap[:, None]
        pa, pb = np.where(swap, b, a), np.where(swap, a, b)
        diff = float(statistic(pb[None])[0] - statistic(pa[None])[0])
        extreme += abs(diff) >= abs(observed) - 1e-12 * max(1.0, abs(observed))
    return {"delta": observed, "ci95": [float(lo), float(hi)],
            "p_value": (extreme + 1) / (permutations + 1)}


def rmse_rows(m: np.ndarray) -> np.ndarray:
    return np.asarray(np.sqrt(m.mean(axis=-1)))


def pearson_rows(m: np.ndarray) -> np.ndarray:
    return _pearson_rows(m[..., 0], m[..., 1])


def spearman_rows(m: np.ndarray) -> np.ndarray:
    return _pearson_rows(rankdata(m[..., 0]), rankdata(m[..., 1]))


def scores_data(n: int, changed: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer scores 0..10: expected, A's answers, B's answers (B changes some of A's)."""
    rng = np.random.default_rng(seed)
    expected = rng.integers(0, 11, n).astype(float)
    xa = np.clip(expected + rng.integers(-2, 3, n), 0, 10)
    xb = xa.copy()
    move = rng.random(n) < changed
    xb[move] = np.clip(expected[move] + rng.integers(-2, 3, int(move.sum())), 0, 10)
    return expected, xa, xb


def test_paired_continuous_matches_the_row_by_row_reference() -> None:
    e, xa, xb = scores_data(60, 0.3)
    sa, sb = (xa - e) ** 2, (xb - e) ** 2
    got = paired_continuous(sa, sb, rmse_rows)
    ref = reference(sa, sb, rmse_rows)
    assert got["delta"] == pytest.approx(ref["delta"], abs=1e-12)
    assert got["ci95"] == pytest.approx(ref["ci95"], abs=1e-12)
    assert got["p_value"] == ref["p_value"]
    assert 0.01 < got["p_value"] < 1  # a p-value that the test can get wrong
    assert got["a"] == pytest.approx(math.sqrt(sa.mean()))
    assert got["b"] == pytest.approx(math.sqrt(sb.mean()))


def test_paired_continuous_is_seeded() -> None:
    e, xa, xb = scores_data(80, 0.4)
    sa, sb = (xa - e) ** 2, (xb - e) ** 2
    first = paired_continuous(sa, sb, rmse_rows)
    assert paired_continuous(sa, sb, rmse_rows) == first
    other = paired_continuous(sa, sb, rmse_rows, seed=5)
    assert other["delta"] == first["delta"] and other["ci95"] != first["ci95"]


def test_paired_continuous_identical_sides_give_zero_and_p_one() -> None:
    e, xa, _ = scores_data(50, 0)
    sa = (xa - e) ** 2
    r = paired_continuous(sa, sa.copy(), rmse_rows)
    assert r["delta"] == 0 and r["p_value"] == 1.0 and r["ci95"] == [0.0, 0.0]


def rmse_sums(a: np.ndarray, b: np.ndarray) -> Sums:
    return Sums(np.vstack([a, np.ones(a.size)]), np.vstack([b, np.ones(b.size)]), ratio_sqrt)


@pytest.mark.parametrize("method", ["rows", "kinds"])
def test_permutation_p_value_is_close_to_the_exact_one_on_few_rows(method: str) -> None:
    # With 12 rows every one of the 2**12 swap patterns can be enumerated.
    a = np.array([4.0, 1, 0, 9, 1, 0, 4, 0, 1, 1, 0, 16])
    b = np.array([1.0, 0, 0, 1, 1, 0, 0, 0, 4, 0, 0, 4])
    observed = math.sqrt(b.mean()) - math.sqrt(a.mean())
    hits = 0
    for pattern in itertools.product((False, True), repeat=a.size):
        swap = np.array(pattern)
        pa, pb = np.where(swap, b, a), np.where(swap, a, b)
        hits += abs(math.sqrt(pb.mean()) - math.sqrt(pa.mean())) >= abs(observed) - 1e-12
    exact = hits / 2 ** a.size
    if method == "rows":
        got = paired_continuous(a, b, rmse_rows)["p_value"]
    else:
        got = paired_resampling(a.size, {"rmse": rmse_sums(a, b)})["rmse"]["p_value"]
    # 2000 random permutations: within four standard errors of the exact p-value.
    assert abs(got - exact) < 4 * math.sqrt(exact * (1 - exact) / 2000) + 1e-3
    assert 0.01 < exact < 0.5


def test_permutation_p_value_with_many_rows_of_a_type_is_close_to_the_exact_one() -> None:
    # Three types of changed rows (150, 100 and 80 rows, each more than 64, so each count
    # of swapped rows is a binomial draw) and unchanged rows: the permutation distribution
    # is that of three independent binomial counts, enumerated here.
    sizes, a_sq, b_sq = [150, 100, 80, 70], [1.0, 4.0, 0.0, 1.0], [0.0, 0.0, 9.0, 1.0]
    a = np.repeat(a_sq, sizes)
    b = np.repeat(b_sq, sizes)
    n = a.size
    shifts = [x - y for x, y in zip(a_sq[:3], b_sq[:3], strict=True)]
    grids = np.meshgrid(*[np.arange(m + 1) for m in sizes[:3]], indexing="ij")
    probability = np.ones(grids[0].shape)
    shift = np.zeros(grids[0].shape)
    for s, m, d in zip(grids, sizes[:3], shifts, strict=True):
        probability *= sp.binom.pmf(s, m, 0.5)
        shift += s * d
    observed = math.sqrt(b.sum() / n) - math.sqrt(a.sum() / n)
    permuted = np.sqrt((b.sum() + shift) / n) - np.sqrt((a.sum() - shift) / n)
    exact = float(probability[np.abs(permuted) >= abs(observed) - 1e-12].sum())
    got = paired_resampling(n, {"rmse": rmse_sums(a, b)})["rmse"]["p_value"]
    assert abs(got - exact) < 4 * math.sqrt(exact * (1 - exact) / 2000) + 1e-3
    assert 0.01 < exact < 0.5


def test_swapped_counts_are_binomial() -> None:
    types = np.array([1, 1, 2, 5, 64, 65, 300])
    draws = np.concatenate(list(S._swap_counts(np.random.default_rng(3), types, 40_000)))
    assert draws.shape == (40_000, types.size)
    assert np.all(draws == np.round(draws)) and np.all(draws >= 0) and np.all(draws <= types)
    for j, m in enumerate(types):
        column = draws[:, j]
        assert abs(column.mean() - m / 2) < 4 * math.sqrt(m / 4 / 40_000), m
        assert column.var() == pytest.approx(m / 4, rel=0.05), m
    # The whole distribution of a small count, and no dependence between types.
    pmf = np.bincount(draws[:, 3].astype(int), minlength=6) / 40_000
    assert pmf == pytest.approx(sp.binom.pmf(np.arange(6), 5, 0.5), abs=0.01)
    corr = np.corrcoef(draws.T)
    assert np.all(np.abs(corr[np.triu_indices(types.size, 1)]) < 4 / math.sqrt(40_000))


@pytest.mark.parametrize("multinomial_rows", [1, 3, 10 ** 9])
def test_bootstrap_by_kind_is_close_to_the_exact_bootstrap(
        multinomial_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Six rows of four kinds: every resample (a composition of 6 among the kinds) is
    # enumerated with its multinomial probability. Kinds of at least `multinomial_rows`
    # rows are drawn by the multinomial, the others row by row: all of one, the other, or both.
    monkeypatch.setattr(S, "_MULTINOMIAL_ROWS", multinomial_rows)
    sq_a, sq_b, sizes = [0.0, 4.0, 1.0, 9.0], [1.0, 0.0, 1.0, 4.0], [3, 1, 1, 1]
    a, b = np.repeat(sq_a, sizes), np.repeat(sq_b, sizes)
    n = a.size
    values, weights = [], []
    for c in itertools.product(range(n + 1), repeat=4):
        if sum(c) != n:
            continue
        values.append(math.sqrt(np.dot(c, sq_b) / n) - math.sqrt(np.dot(c, sq_a) / n))
        weights.append(math.factorial(n) / math.prod(math.factorial(x) for x in c)
                       * math.prod((s / n) ** x for s, x in zip(sizes, c, strict=True)))
    values_arr, weights_arr = np.array(values), np.array(weights)
    assert weights_arr.sum() == pytest.approx(1.0)
    lo, hi = paired_resampling(n, {"rmse": rmse_sums(a, b)})["rmse"]["ci95"]
    # Each end of the interval sits at its quantile of the exact distribution, within
    # four standard errors of a quantile estimated from 1000 resamples.
    tol = 4 * math.sqrt(0.025 * 0.975 / 1000)
    for end, q in ((lo, 0.025), (hi, 0.975)):
        assert weights_arr[values_arr < end - 1e-12].sum() <= q + tol
        assert weights_arr[values_arr <= end + 1e-12].sum() >= q - tol


def test_a_constant_side_has_no_correlation_and_no_delta() -> None:
    e = np.arange(10, dtype=float)
    a = np.stack([np.full(10, 5.0), e], axis=1)
    b = np.stack([e, e], axis=1)
    r = paired_continuous(a, b, pearson_rows)
    assert r["delta"] is None and r["p_value"] is None and r["a"] is None and r["b"] == 1.0


# --- totals and tables, drawn by kind of row, against row resampling ---------------------


def sums_of(values_a: np.ndarray, values_b: np.ndarray, finish: Any) -> Sums:
    ones = np.ones(values_a.size)
    return Sums(np.vstack([values_a, ones]), np.vstack([values_b, ones]), finish)


def joint_table(e: np.ndarray, xa: np.ndarray, xb: np.ndarray,
                finish: Any) -> tuple[Table, np.ndarray, np.ndarray]:
    ux = np.unique(np.concatenate([xa, xb]))
    uy = np.unique(e)
    rows = np.arange(e.size)
    cells = [np.searchsorted(ux, x) * uy.size + np.searchsorted(uy, e) for x in (xa, xb)]
    ones = np.ones(e.size)
    fin = finish(ux, uy) if finish is pearson_table else finish
    return Table((rows, cells[0], ones), (rows, cells[1], ones), (ux.size, uy.size), fin), ux, uy


def four_statistics(e: np.ndarray, xa: np.ndarray, xb: np.ndarray) -> dict[str, Any]:
    return {
        "rmse": sums_of((xa - e) ** 2, (xb - e) ** 2, ratio_sqrt),
        "mae": sums_of(abs(xa - e), abs(xb - e), ratio),
        "pearson": joint_table(e, xa, xb, pearson_table)[0],
        "spearman": joint_table(e, xa, xb, spearman_table)[0],
    }


@pytest.mark.parametrize("n", [40, 700])
def test_totals_and_tables_agree_with_row_resampling(n: int) -> None:
    e, xa, xb = scores_data(n, 0.25, seed=n)
    got = paired_resampling(n, four_statistics(e, xa, xb))
    pairs_a, pairs_b = np.stack([xa, e], axis=1), np.stack([xb, e], axis=1)
    want = {
        "rmse": paired_continuous((xa - e) ** 2, (xb - e) ** 2, rmse_rows),
        "mae": paired_continuous(abs(xa - e), abs(xb - e), lambda m: m.mean(axis=-1)),
        "pearson": paired_continuous(pairs_a, pairs_b, pearson_rows),
        "spearman": paired_continuous(pairs_a, pairs_b, spearman_rows),
    }
    for name, w in want.items():
        g = got[name]
        assert g["delta"] == pytest.approx(w["delta"], abs=1e-12), name
        assert g["a"] == pytest.approx(w["a"], abs=1e-12), name
        assert g["b"] == pytest.approx(w["b"], abs=1e-12), name
        assert g["n"] == n
        # Other draws of the same distributions: the ends of the two intervals are within
        # a few standard errors of each other (a 2.5% quantile of 1000 draws has one of
        # about 0.09 standard deviations, the interval spans about four).
        width = w["ci95"][1] - w["ci95"][0]
        assert g["ci95"] == pytest.approx(w["ci95"], abs=0.15 * width), name
        p = w["p_value"]
        assert abs(g["p_value"] - p) < 4 * math.sqrt(2 * p * (1 - p) / 2000) + 2 / 2001, name
    assert any(0.01 < got[k]["p_value"] < 0.9 for k in got)  # not all at the floor


def test_resampling_by_kind_is_seeded_and_ignores_the_order_of_rows() -> None:
    e, xa, xb = scores_data(700, 0.25, seed=7)
    first = paired_resampling(700, four_statistics(e, xa, xb))
    assert paired_resampling(700, four_statistics(e, xa, xb)) == first
    other = paired_resampling(700, four_statistics(e, xa, xb), seed=5)
    assert all(other[k]["delta"] == first[k]["delta"] for k in first)
    assert all(other[k]["ci95"] != first[k]["ci95"] for k in first)
    # Rows of the same kind are drawn as one: shuffled rows give the very same numbers
    # (integer scores, so every total is exact in any order).
    order = np.random.default_rng(1).permutation(700)
    assert paired_resampling(700, four_statistics(e[order], xa[order], xb[order])) == first


def test_two_threads_give_the_numbers_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    e, xa, xb = scores_data(500, 0.3)
    stat = {"rmse": sums_of((xa - e) ** 2, (xb - e) ** 2, ratio_sqrt)}
    monkeypatch.setattr(S, "_PARALLEL_CELLS", 0)
    parallel = paired_resampling(500, stat)
    monkeypatch.setattr(S, "_PARALLEL_CELLS", 10 ** 18)
    assert paired_resampling(500, stat) == parallel


def test_rows_with_several_samples_move_together(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each row is a cluster: (sum of squared errors, number of samples).
    rng = np.random.default_rng(11)
    n = 50
    count_a = rng.integers(1, 4, n).astype(float)
    count_b = rng.integers(1, 4, n).astype(float)
    sq_a = rng.integers(0, 5, n) * count_a
    sq_b = rng.integers(0, 3, n) * count_b
    stat = {"rmse": Sums(np.vstack([sq_a, count_a]), np.vstack([sq_b, count_b]), ratio_sqrt)}
    r = paired_resampling(n, stat)["rmse"]
    assert r["a"] == pytest.approx(math.sqrt(sq_a.sum() / count_a.sum()))
    assert r["b"] == pytest.approx(math.sqrt(sq_b.sum() / count_b.sum()))

    def interval(idx: np.ndarray) -> list[float]:
        draws = (np.sqrt(sq_b[idx].sum(1) / count_b[idx].sum(1))
                 - np.sqrt(sq_a[idx].sum(1) / count_a[idx].sum(1)))
        return list(np.percentile(draws, [2.5, 97.5]))

    # Every kind drawn row by row: the independent cluster bootstrap with the same draws
    # (positions in the pool of rows, which lists the rows kind by kind).
    monkeypatch.setattr(S, "_MULTINOMIAL_ROWS", 10 ** 9)
    by_rows = paired_resampling(n, stat)["rmse"]
    pool = S._Prepared(stat["rmse"], n).draws.pool
    assert sorted(pool) == list(range(n))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    assert by_rows["ci95"] == pytest.approx(interval(pool[rng.integers(0, n, size=(1000, n))]),
                                            abs=1e-12)
    # Every kind drawn by the multinomial: the distinct clusters in order, with the same
    # multinomial counts.
    monkeypatch.setattr(S, "_MULTINOMIAL_ROWS", 1)
    kinds = sorted(set(zip(sq_a, count_a, sq_b, count_b, strict=True)))
    sizes = np.array([sum(1 for k in zip(sq_a, count_a, sq_b, count_b, strict=True) if k == kind)
                      for kind in kinds])
    counts = np.random.default_rng(BOOTSTRAP_SEED).multinomial(n, sizes / n, size=1000)
    totals = counts @ np.array(kinds)
    draws = np.sqrt(totals[:, 2] / totals[:, 3]) - np.sqrt(totals[:, 0] / totals[:, 1])
    by_kinds = paired_resampling(n, stat)["rmse"]
    assert by_kinds["ci95"] == pytest.approx(list(np.percentile(draws, [2.5, 97.5])), abs=1e-12)
    # Independent cluster permutation, swapping row by row: the same p-value up to
    # Monte Carlo error.
    rng = np.random.default_rng(BOOTSTRAP_SEED + 1)
    swap = rng.random((2000, n)) < 0.5
    tb = np.where(swap, sq_a, sq_b).sum(1) / np.where(swap, count_a, count_b).sum(1)
    ta = np.where(swap, sq_b, sq_a).sum(1) / np.where(swap, count_b, count_a).sum(1)
    extreme = np.sum(np.abs(np.sqrt(tb) - np.sqrt(ta)) >= abs(r["delta"]) - 1e-12)
    p = (extreme + 1) / 2001
    for result in (r, by_rows, by_kinds):
        assert result["p_value"] == r["p_value"]  # the permutations do not change
        assert abs(result["p_value"] - p) < 4 * math.sqrt(2 * p * (1 - p) / 2000) + 2 / 2001
    assert 0.01 < p < 0.9


def test_identical_sides_through_totals_give_zero_and_p_one() -> None:
    e, xa, _ = scores_data(200, 0)
    r = paired_resampling(200, {"rmse": sums_of((xa - e) ** 2, (xa - e) ** 2, ratio_sqrt),
                                "spearman": joint_table(e, xa, xa, spearman_table)[0]})
    for name in r:
        assert r[name]["delta"] == 0 and r[name]["p_value"] == 1.0, name
        assert r[name]["ci95"] == [0.0, 0.0], name


def test_no_rows() -> None:
    r = paired_resampling(0, {"rmse": sums_of(np.array([]), np.array([]), ratio_sqrt)})
    assert r["rmse"]["delta"] is None and r["rmse"]["n"] == 0


# --- finishing functions against scipy and metrics ---------------------------------------


def test_table_correlations_match_scipy() -> None:
    e, xa, _ = scores_data(300, 0)
    for finish, reference_fn in ((pearson_table, sp.pearsonr), (spearman_table, sp.spearmanr)):
        table, ux, uy = joint_table(e, xa, xa, finish)
        counts = np.zeros(table.cells)
        np.add.at(counts, table.a[1], 1)
        got = table.finish(counts.reshape(1, *table.shape))[0]
        assert got == pytest.approx(reference_fn(xa, e).statistic, abs=1e-12)


def test_average_ranks_match_scipy() -> None:
    m = np.array([[3.0, 1, 2, 2, 5, 1], [0.5, 0.5, 0.5, 0.1, 9, 9]])
    assert rank_rows(m) == pytest.approx(sp.rankdata(m, axis=1))
    assert rank_rows(m[0]) == pytest.approx(sp.rankdata(m[0]))
    rng = np.random.default_rng(0)
    big = rng.integers(0, 30, (7, 200)).astype(float)
    assert rank_rows(big) == pytest.approx(sp.rankdata(big, axis=1))


def test_f1_macro_table_matches_metrics() -> None:
    labels = ["neg", "neu", "pos"]
    rng = np.random.default_rng(2)
    expected = [labels[i] for i in rng.integers(0, 3, 90)]
    answers: list[str | None] = [labels[i] if i < 3 else None for i in rng.integers(0, 4, 90)]
    size = len(labels)
    table = np.zeros((size + 1, size))
    for x, y in zip(answers, expected, strict=True):
        table[size if x is None else labels.index(x), labels.index(y)] += 1
    assert f1_macro_table(table[None])[0] == pytest.approx(f1_macro(answers, expected)["value"])


def test_tables_of_rows_with_several_samples_match_pooled_resampling(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Spearman over every sample, rows resampled and swapped whole, against a plain loop."""
    rng = np.random.default_rng(4)
    n = 25
    samples_a = [[(int(rng.integers(0, 5)), y) for _ in range(int(rng.integers(1, 4)))]
                 for y in rng.integers(0, 5, n)]
    samples_b = [[(min(4, x + int(rng.random() < 0.3)), y) for x, y in row] for row in samples_a]

    def entries(samples: list[list[tuple[int, int]]]) -> tuple[Any, Any, Any]:
        rows = [i for i, row in enumerate(samples) for _ in row]
        cells = [x * 5 + y for row in samples for x, y in row]
        return np.array(rows), np.array(cells), np.ones(len(rows))

    table = Table(entries(samples_a), entries(samples_b), (5, 5), spearman_table)
    got = paired_resampling(n, {"s": table})["s"]

    def spearman(rows: list[list[tuple[int, int]]]) -> float:
        pts = np.array([p for row in rows for p in row], dtype=float)
        return float(_pearson_rows(rankdata(pts[:, 0]), rankdata(pts[:, 1])))

    assert got["a"] == pytest.approx(spearman(samples_a))
    assert got["b"] == pytest.approx(spearman(samples_b))
    # Every kind of row drawn row by row: the loop's resamples with the same draws
    # (positions in the pool of rows, which lists the rows kind by kind).
    monkeypatch.setattr(S, "_MULTINOMIAL_ROWS", 10 ** 9)
    by_rows = paired_resampling(n, {"s": table})["s"]
    pool = S._Prepared(table, n).draws.pool
    assert sorted(pool) == list(range(n))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = [spearman([samples_b[i] for i in idx]) - spearman([samples_a[i] for i in idx])
             for idx in pool[rng.integers(0, n, size=(1000, n))]]
    finite = np.array(draws)[np.isfinite(draws)]
    want = list(np.percentile(finite, [2.5, 97.5]))
    assert by_rows["ci95"] == pytest.approx(want, abs=1e-12)
    assert got["ci95"] == pytest.approx(want, abs=0.15 * (want[1] - want[0]))
    # Swapping row by row in the loop: the same p-value up to Monte Carlo error.
    rng = np.random.default_rng(BOOTSTRAP_SEED + 1)
    observed = spearman(samples_b) - spearman(samples_a)
    extreme = 0
    for swap in rng.random((2000, n)) < 0.5:
        pb = [samples_a[i] if s else samples_b[i] for i, s in enumerate(swap)]
        pa = [samples_b[i] if s else samples_a[i] for i, s in enumerate(swap)]
        extreme += abs(spearman(pb) - spearman(pa)) >= abs(observed) - 1e-12
    p = (extreme + 1) / 2001
    assert abs(got["p_value"] - p) < 4 * math.sqrt(2 * p * (1 - p) / 2000) + 2 / 2001
    assert 0.01 < p < 0.99


def test_mean_figures_beyond_the_bound_use_the_normal_interval_the_bootstrap_converges_to() -> None:
    from promptctl.stats import mean_rows, paired_bounded, paired_mean_bounded

    rng = np.random.default_rng(7)
    a = rng.gamma(2.0, 50.0, size=20_000)  # skewed, as token counts are
    b = a + rng.normal(3.0, 40.0, size=a.size)
    normal = paired_mean_bounded(a, b)
    boot = paired_bounded(a, b, mean_rows)
    assert normal["delta"] == pytest.approx(float((b - a).mean()))
    assert normal["p_value"] is None and normal["n"] == a.size
    lo, hi = normal["ci95"]
    blo, bhi = boot["ci95"]
    # The bootstrap's ends move by a few percent of the width from seed to seed.
    width = hi - lo
    assert abs(lo - blo) < 0.1 * width and abs(hi - bhi) < 0.1 * width
    # Below the bound it is the ordinary paired figure, permutation p-value included.
    small = paired_mean_bounded(a[:100], b[:100])
    assert small["p_value"] is not None
