"""Aggregates checked against independent computations (numpy loops, scipy, hand formulas)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import scipy.stats

from promptctl import stats as S
from promptctl.evalsets import MISSING, Row
from promptctl.metrics import aggregates as M
from promptctl.metrics.registry import score_builtins as score_row
from promptctl.scoring import Extraction


def rng_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    expected = rng.integers(0, 11, size=n).astype(np.float64)
    answers = np.clip(expected + rng.normal(0, 1.5, size=n).round(), 0, 10)
    return answers, expected


def loop_percentile_ci(columns: list[np.ndarray], stat: Any, resamples: int = 200,
                       seed: int = M.BOOTSTRAP_SEED) -> tuple[float, float]:
    """The bootstrap written as a plain loop: one resample at a time, same index stream."""
    n = len(columns[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    values = []
    for i in range(resamples):
        v = stat(*(c[idx[i]] for c in columns))
        if math.isfinite(v):
            values.append(v)
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def assert_json_clean(result: Any) -> None:
    json.dumps(result, allow_nan=False)


def hand_f1_macro(answers: list[str | None], expected: list[str]) -> float:
    """sklearn's macro F1 with labels = union of true and predicted (None adds no class)."""
    classes = sorted(set(expected) | {a for a in answers if a is not None})
    f1s = []
    for c in classes:
        tp = sum(1 for a, e in zip(answers, expected, strict=True) if a == c and e == c)
        fp = sum(1 for a, e in zip(answers, expected, strict=True) if a == c and e != c)
        fn = sum(1 for a, e in zip(answers, expected, strict=True) if a != c and e == c)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(f1s) / len(f1s)


# ---------------------------------------------------------------- point estimates


class TestPointEstimates:
    def test_rmse(self) -> None:
        a, e = rng_data(40)
        result = M.rmse(list((a - e) ** 2))
        assert result["value"] == pytest.approx(math.sqrt(sum((x - y) ** 2 for x, y in
                                                              zip(a, e, strict=True)) / 40))
        assert result["n"] == 40

    def test_rmse_hand_values(self) -> None:
        assert M.rmse([4.0, 0.0, 1.0, 9.0, 1.0])["value"] == pytest.approx(math.sqrt(3.0))

    def test_mae(self) -> None:
        a, e = rng_data(40, seed=1)
        result = M.mae(list(a), list(e))
        assert result["value"] == pytest.approx(sum(abs(x - y) for x, y in
                                                    zip(a, e, strict=True)) / 40)
        assert M.mae([1, 5, -2], [2, 2, 2])["value"] == pytest.approx(8 / 3)

    @pytest.mark.parametrize("seed", [0, 1, 2, 3])
    def test_pearson_vs_scipy(self, seed: int) -> None:
        a, e = rng_data(30, seed)
        result = M.pearson(list(a), list(e))
        assert result["value"] == pytest.approx(scipy.stats.pearsonr(a, e).statistic, abs=1e-12)
        assert result["n"] == 30

    def test_pearson_perfect_is_exactly_bounded(self) -> None:
        x = [0.1 * i for i in range(50)]
        assert M.pearson(x, [3 * v + 1 for v in x])["value"] == pytest.approx(1.0)
        assert M.pearson(x, [-v for v in x])["value"] == pytest.approx(-1.0)
        for value in (M.pearson(x, [3 * v + 1 for v in x])["value"],
                      M.pearson(x, [-v for v in x])["value"]):
            assert -1.0 <= value <= 1.0

    @pytest.mark.parametrize("seed", [0, 1, 2, 3])
    def test_spearman_vs_scipy_with_ties(self, seed: int) -> None:
        a, e = rng_data(30, seed)  # integer scores 0..10: plenty of ties
        assert len(set(a)) < 30 and len(set(e)) < 30
        result = M.spearman(list(a), list(e))
        assert result["value"] == pytest.approx(scipy.stats.spearmanr(a, e).statistic,
                                                abs=1e-12)

    def test_spearman_hand_values(self) -> None:
        assert M.spearman([1, 2, 3, 4], [10, 20, 30, 40])["value"] == pytest.approx(1.0)
        assert M.spearman([1, 2, 3, 4], [1, 4, 9, 100])["value"] == pytest.approx(1.0)
        assert M.spearman([1, 2, 3], [3, 2, 1])["value"] == pytest.approx(-1.0)

    @pytest.mark.parametrize("data", [
        [3.0, 1.0, 2.0], [1.0, 1.0, 1.0], [2.0, 1.0, 2.0, 3.0, 1.0, 2.0], [5.0],
        [0.1, 0.2, 0.1, -7.0, 1e9, 0.2, 0.2], list(np.random.default_rng(5).integers(0, 4, 50)),
    ])
    def test_rankdata_vs_scipy(self, data: list[float]) -> None:
        x = np.asarray(data, dtype=np.float64)
        np.testing.assert_array_equal(M.rankdata(x), scipy.stats.rankdata(x, method="average"))

    def test_rankdata_rows(self) -> None:
        x = np.random.default_rng(6).integers(0, 5, size=(7, 12)).astype(np.float64)
        np.testing.assert_array_equal(M.rankdata(x),
                                      scipy.stats.rankdata(x, method="average", axis=-1))

    def test_rankdata_empty(self) -> None:
        assert M.rankdata(np.array([])).shape == (0,)

    def test_share(self) -> None:
        result = M.share([1.0, 0.0, 1.0, 1.0])
        assert result["value"] == 0.75
        assert result["n"] == 4

    def test_percentiles_vs_numpy(self) -> None:
        lat = [120.0, 80.0, 95.5, 300.0, 101.0, 99.0, 150.0]
        result = M.percentiles(lat)
        assert list(result) == ["p50", "p75", "p90", "p99"]
        for q in (50, 75, 90, 99):
            assert result[f"p{q}"] == pytest.approx(float(np.percentile(lat, q)))
        assert M.percentiles([5.0], (50, 90)) == {"p50": 5.0, "p90": 5.0}
        assert M.percentiles([]) == {}
        assert_json_clean(result)


class TestF1Macro:
    def test_vs_hand_formula(self) -> None:
        expected = ["a", "a", "b", "b", "b", "c", "c", "a", "c", "b"]
        answers: list[str | None] = ["a", "b", "b", "b", "a", "c", None, "a", "b", "b"]
        result = M.f1_macro(answers, expected)
        assert result["value"] == pytest.approx(hand_f1_macro(answers, expected))
        assert result["n"] == 10

    def test_known_value(self) -> None:
        # a: tp 1 fp 0 fn 1 -> 2/3; b: tp 1 fp 1 fn 0 -> 2/3; d (predicted only): 0
        result = M.f1_macro(["a", "b", "b", "d"], ["a", "a", "b", "c"])
        # c: tp 0 fn 1 -> 0 ; classes a, b, c, d
        assert result["value"] == pytest.approx((2 / 3 + 2 / 3 + 0 + 0) / 4)

    def test_none_is_a_miss_and_adds_no_class(self) -> None:
        # With None counted as a class the mean would run over 3 classes, not 2.
        result = M.f1_macro(["a", None, "b"], ["a", "b", "b"])
        # a: tp 1 -> 1.0; b: tp 1, fn 1 -> 2/3
        assert result["value"] == pytest.approx((1.0 + 2 / 3) / 2)

    def test_all_none(self) -> None:
        result = M.f1_macro([None, None], ["a", "b"])
        assert result["value"] == 0.0
        assert result["n"] == 2
        assert_json_clean(result)

    def test_perfect(self) -> None:
        result = M.f1_macro(["x", "y", "x"], ["x", "y", "x"])
        assert result["value"] == 1.0
        assert result["ci95"] == [1.0, 1.0]

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_random_vs_hand(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        classes = ["billing", "technical", "account", "shipping", "other"]
        expected = [classes[i] for i in rng.integers(0, 5, 60)]
        answers: list[str | None] = [
            None if r < 0.1 else (e if r < 0.7 else classes[int(r * 100) % 5])
            for e, r in zip(expected, rng.random(60), strict=True)]
        assert M.f1_macro(answers, expected)["value"] == pytest.approx(
            hand_f1_macro(answers, expected))


# ---------------------------------------------------------------- bootstrap intervals


class TestBootstrap:
    def test_same_input_same_interval(self) -> None:
        a, e = rng_data(50)
        for _ in range(2):
            assert M.rmse(list((a - e) ** 2)) == M.rmse(list((a - e) ** 2))
            assert M.spearman(list(a), list(e)) == M.spearman(list(a), list(e))

    def test_interval_contains_the_estimate(self) -> None:
        a, e = rng_data(60, seed=4)
        labels_e = [str(int(x) % 3) for x in e]
        labels_a: list[str | None] = [str(int(x) % 3) for x in a]
        results = [M.rmse(list((a - e) ** 2)), M.mae(list(a), list(e)),
                   M.pearson(list(a), list(e)), M.spearman(list(a), list(e)),
                   M.share([float(x == y) for x, y in zip(a, e, strict=True)]),
                   M.f1_macro(labels_a, labels_e)]
        for result in results:
            lo, hi = result["ci95"]
            assert lo <= result["value"] <= hi, result
            assert lo < hi, result
            assert result["n"] == 60

    @pytest.mark.parametrize("c", [0.0, 1.0, 4.0, 0.25])
    def test_constant_vector_gives_a_point_interval(self, c: float) -> None:
        result = M.share([c] * 17)
        assert result == {"value": c, "n": 17, "ci95": [c, c]}
        assert M.mae([c + 2] * 9, [c] * 9) == {"value": 2.0, "n": 9, "ci95": [2.0, 2.0]}
        assert M.rmse([c * c] * 5) == {"value": c, "n": 5, "ci95": [c, c]}

    def test_constant_non_dyadic_value(self) -> None:
        result = M.share([0.1] * 10)
        assert result["value"] == pytest.approx(0.1)
        assert result["ci95"] == pytest.approx([0.1, 0.1])

    def test_vectorised_equals_a_plain_loop(self) -> None:
        a, e = rng_data(23, seed=7)
        se = (a - e) ** 2
        k = 200
        assert M.bootstrap([se], M._mean_rows, resamples=k) == pytest.approx(
            loop_percentile_ci([se], lambda x: x.mean(), k), abs=0, rel=1e-12)
        assert M.bootstrap([se], lambda m: np.sqrt(m.mean(axis=-1)), resamples=k) == (
            pytest.approx(loop_percentile_ci([se], lambda x: math.sqrt(x.mean()), k),
                          rel=1e-12))
        assert M.bootstrap([a, e], M._pearson_rows, resamples=k) == pytest.approx(
            loop_percentile_ci([a, e], lambda x, y: scipy.stats.pearsonr(x, y).statistic
                               if len(set(x)) > 1 and len(set(y)) > 1 else math.nan, k),
            rel=1e-9)

        def loop_spearman(x: np.ndarray, y: np.ndarray) -> float:
            if len(set(x)) < 2 or len(set(y)) < 2:
                return math.nan
            return float(scipy.stats.spearmanr(x, y).statistic)

        assert M.bootstrap(
            [a, e], lambda x, y: M._pearson_rows(M.rankdata(x), M.rankdata(y)), resamples=k,
        ) == pytest.approx(loop_percentile_ci([a, e], loop_spearman, k), rel=1e-9)

    def test_public_results_use_the_default_bootstrap(self) -> None:
        a, e = rng_data(23, seed=8)
        k = M.BOOTSTRAP_RESAMPLES
        assert M.mae(list(a), list(e))["ci95"] == pytest.approx(
            list(loop_percentile_ci([np.abs(a - e)], lambda x: x.mean(), k)), rel=1e-12)

    def test_f1_bootstrap_equals_a_plain_loop(self) -> None:
        expected = ["a", "b", "c", "a", "b", "a", "c", "c", "b", "a", "b", "a"]
        answers: list[str | None] = ["a", "b", "a", None, "b", "a", "c", "b", "b", "c", "b",
                                     "a"]
        k = M.BOOTSTRAP_RESAMPLES
        n = len(expected)
        rng = np.random.default_rng(M.BOOTSTRAP_SEED)
        idx = rng.integers(0, n, size=(k, n))
        values = [hand_f1_macro([answers[j] for j in row], [expected[j] for j in row])
                  for row in idx]
        want = np.percentile(values, [2.5, 97.5])
        assert M.f1_macro(answers, expected)["ci95"] == pytest.approx(list(want), rel=1e-12)

    def test_chunking_does_not_change_the_interval(self, monkeypatch: pytest.MonkeyPatch) -> None:
        a, e = rng_data(501, seed=9)
        whole = {name: fn() for name, fn in self._cases(a, e).items()}
        monkeypatch.setattr(S, "_BOOTSTRAP_CHUNK_CELLS", 501 * 7)  # 7 resamples per chunk, 143 chunks
        calls: list[int] = []
        original = S._resample_indices

        def spy(n: int, rng: np.random.Generator, resamples: int) -> Any:
            for chunk in original(n, rng, resamples):
                calls.append(chunk.shape[0])
                yield chunk

        monkeypatch.setattr(S, "_resample_indices", spy)
        chunked = {name: fn() for name, fn in self._cases(a, e).items()}
        assert max(calls) == 7
        assert sum(calls) == len(whole) * M.BOOTSTRAP_RESAMPLES
        assert chunked == whole

    def test_chunk_smaller_than_one_row(self, monkeypatch: pytest.MonkeyPatch) -> None:
        a, e = rng_data(101, seed=10)
        whole = M.mae(list(a), list(e))
        monkeypatch.setattr(S, "_BOOTSTRAP_CHUNK_CELLS", 3)
        assert M.mae(list(a), list(e)) == whole

    def test_a_large_run_holds_one_chunk_of_indices_at_a_time(self) -> None:
        import tracemalloc

        x = [float(i % 2) for i in range(20_000)]
        tracemalloc.start()
        try:
            M.share(x)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # The whole resampling matrix would be 1000 x 20,000 int64 = 160 MB; a chunk is 4 MB
        # and a statistic holds a few arrays of its size.
        assert peak < 40 * 2**20, peak / 2**20
        assert not S._last_indices  # and nothing of it is kept afterwards

    @staticmethod
    def _cases(a: np.ndarray, e: np.ndarray) -> dict[str, Any]:
        la = [str(int(x) % 4) for x in a]
        le = [str(int(x) % 4) for x in e]
        return {
            "rmse": lambda: M.rmse(list((a - e) ** 2)),
            "mae": lambda: M.mae(list(a), list(e)),
            "pearson": lambda: M.pearson(list(a), list(e)),
            "spearman": lambda: M.spearman(list(a), list(e)),
            "share": lambda: M.share([float(x == y) for x, y in zip(a, e, strict=True)]),
            "f1": lambda: M.f1_macro(list(la), le),
        }


# ---------------------------------------------------------------- edge cases and JSON


class TestEdgeCases:
    @pytest.mark.parametrize("result", [
        M.share([]), M.rmse([]), M.mae([], []), M.pearson([], []), M.spearman([], []),
        M.f1_macro([], []),
    ])
    def test_empty(self, result: dict[str, Any]) -> None:
        assert result == {"value": None, "n": 0, "ci95": None}

    def test_correlation_needs_two_points(self) -> None:
        assert M.pearson([3.0], [4.0]) == {"value": None, "n": 1, "ci95": None}
        assert M.spearman([3.0], [4.0]) == {"value": None, "n": 1, "ci95": None}

    def test_single_point_shares(self) -> None:
        assert M.rmse([4.0]) == {"value": 2.0, "n": 1, "ci95": [2.0, 2.0]}
        assert M.share([1.0]) == {"value": 1.0, "n": 1, "ci95": [1.0, 1.0]}

    @pytest.mark.parametrize(("a", "e"), [
        ([5.0, 5.0, 5.0], [1.0, 2.0, 3.0]),
        ([1.0, 2.0, 3.0], [7.0, 7.0, 7.0]),
        ([0.1, 0.1, 0.1], [1.0, 2.0, 4.0]),
        ([1 / 3] * 7, [1, 2, 3, 4, 5, 6, 8]),
        ([0.7] * 11, list(range(11))),
        ([2.0, 2.0], [2.0, 2.0]),
    ])
    def test_constant_inputs_give_none_not_nan(self, a: list[float], e: list[float]) -> None:
        for fn in (M.pearson, M.spearman):
            result = fn(a, e)
            assert result == {"value": None, "n": len(a), "ci95": None}
            assert_json_clean(result)

    def test_two_points_pearson(self) -> None:
        result = M.pearson([1.0, 2.0], [3.0, 5.0])
        assert result["value"] == pytest.approx(1.0)
        assert result["ci95"] == pytest.approx([1.0, 1.0])
        assert_json_clean(result)

    def test_bootstrap_all_non_finite(self) -> None:
        lo, hi = M.bootstrap([np.array([1.0, 1.0])], lambda m: m.mean(axis=-1) * np.nan)
        assert math.isnan(lo) and math.isnan(hi)

    def test_everything_is_strict_json(self) -> None:
        results = [
            M.share([]), M.share([0.0]), M.rmse([]), M.rmse([0.0, 0.0]), M.mae([1], [1]),
            M.pearson([1], [1]), M.pearson([1, 1], [1, 2]), M.pearson([1, 2, 3], [1, 1, 1]),
            M.spearman([1, 1, 1], [1, 2, 3]), M.f1_macro([None], ["a"]),
            M.aggregate(["rmse", "pearson", "spearman", "mae", "f1_macro", "exact_match",
                         "accuracy", "contains", "regex", "format_validity"], []),
            M.aggregate(["pearson", "spearman"], [
                {"answer_num": 1.0, "expected_num": 2.0, "squared_error": 1.0}] * 3),
        ]
        for result in results:
            assert_json_clean(result)


def test_folded_scores_keep_paired_keys_aligned_and_aggregate_the_same() -> None:
    rows = [
        {"format_validity": 1.0, "answer_num": 3.0, "expected_num": 4.0, "squared_error": 1.0},
        {"format_validity": 0.0},  # no numeric answer: absent from the pairs
        {"format_validity": 1.0, "answer_num": 7.0, "expected_num": 7.0, "squared_error": 0.0},
        {"format_validity": 1.0, "answer_num": 1.0, "expected_num": 9.0, "squared_error": 64.0},
    ]
    columns = M.fold_scores(iter(rows))
    assert columns == {"format_validity": [1.0, 0.0, 1.0, 1.0], "answer_num": [3.0, 7.0, 1.0],
                       "expected_num": [4.0, 7.0, 9.0], "squared_error": [1.0, 0.0, 64.0]}
    metrics = ["format_validity", "rmse", "mae", "pearson"]
    assert M.aggregate_columns(metrics, columns) == M.aggregate(metrics, rows)
    assert M.aggregate(["mae"], rows)["mae"]["value"] == pytest.approx((1 + 0 + 8) / 3)
    assert M.fold_scores([{"a": 1}], into=columns)["a"] == [1]


def _repeated(rows: list[dict[str, Any]], k: int) -> M.Folded:
    """Each row's scores as k samples of it, folded with their rows."""
    return M.fold_samples((f"r{i}", scores) for i, scores in enumerate(rows) for _ in range(k))


def test_identical_samples_of_each_row_aggregate_as_the_rows_alone() -> None:
    answers, expected = rng_data(30, seed=3)
    labels = ["a", "b", "c"]
    rows = [{"format_validity": 1.0, "exact_match": float(a == e), "answer_num": a,
             "expected_num": e, "squared_error": (a - e) ** 2,
             "label_answer": labels[int(a) % 3], "label_expected": labels[int(e) % 3]}
            for a, e in zip(answers, expected, strict=True)]
    metrics = ["format_validity", "exact_match", "rmse", "mae", "pearson", "spearman",
               "f1_macro"]
    once = M.aggregate(metrics, rows)
    for k in (1, 7):
        # Values, n and intervals all rest on the 30 rows, however often each was sampled.
        assert M.aggregate_columns(metrics, _repeated(rows, k)) == once, k
    # Counting each sample as a row instead narrows the interval: what the rows prevent.
    pooled = M.aggregate(["exact_match"], [r for r in rows for _ in range(7)])["exact_match"]
    assert pooled["n"] == 210
    width = once["exact_match"]["ci95"][1] - once["exact_match"]["ci95"][0]
    assert pooled["ci95"][1] - pooled["ci95"][0] < width / 2


def test_a_rows_samples_are_averaged_before_the_rows() -> None:
    columns = M.fold_samples([("r1", {"exact_match": 1.0}), ("r1", {"exact_match": 0.0}),
                              ("r1", {"exact_match": 0.0}), ("r1", {"exact_match": 0.0}),
                              ("r2", {"exact_match": 1.0}),  # its other samples failed
                              ("r3", {"answer_num": 1.0, "expected_num": 2.0,
                                      "squared_error": 1.0}),
                              ("r3", {"answer_num": 3.0, "expected_num": 2.0,
                                      "squared_error": 1.0})])
    assert columns.rows == {"exact_match": [0, 0, 0, 0, 1], "answer_num": [2, 2],
                            "expected_num": [2, 2], "squared_error": [2, 2]}
    share = M.aggregate_columns(["exact_match"], columns)["exact_match"]
    assert (share["value"], share["n"]) == (pytest.approx((0.25 + 1.0) / 2), 2)
    # The mean absolute error of r3's samples is 1, though their mean answer is right.
    assert M.aggregate_columns(["mae"], columns)["mae"]["value"] == pytest.approx(1.0)
    assert M.row_count(columns, "exact_match") == 2 and M.row_count(columns, "other") == 0
    assert M.row_count({"a": [1, 2, 3]}, "a") == 3


# ---------------------------------------------------------------- aggregate end to end


def _row(expected: Any = MISSING, pattern: str | None = None) -> Row:
    return Row(id="r", input={}, expected=expected, pattern=pattern)


class TestAggregate:
    def test_numeric_prompt(self) -> None:
        metrics = ("rmse", "mae", "pearson", "spearman", "exact_match", "format_validity")
        cases = [(7.0, 9), (3.0, 3), (None, 5), (10.0, 8), (0.0, 0), (5.0, 4), (None, None)]
        rows = []
        for answer, expected in cases:
            extraction = (Extraction(answer, True) if answer is not None
                          else Extraction(None, False, "pattern did not match"))
            rows.append(score_row(extraction, _row(MISSING if expected is None else expected),
                                  metrics))
        out = M.aggregate(metrics, rows)
        assert list(out) == list(metrics)
        pairs = [(a, e) for a, e in cases if a is not None and e is not None]
        a = np.array([p[0] for p in pairs])
        e = np.array([p[1] for p in pairs], dtype=np.float64)
        assert out["rmse"]["value"] == pytest.approx(math.sqrt(((a - e) ** 2).mean()))
        assert out["rmse"]["value"] == pytest.approx(math.sqrt((4 + 0 + 4 + 0 + 1) / 5))
        assert out["mae"]["value"] == pytest.approx(1.0)
        assert out["pearson"]["value"] == pytest.approx(scipy.stats.pearsonr(a, e).statistic)
        assert out["spearman"]["value"] == pytest.approx(scipy.stats.spearmanr(a, e).statistic)
        for name in ("rmse", "mae", "pearson", "spearman"):
            assert out[name]["n"] == 5
        # exact_match over the 6 rows with expected: the invalid one is a miss.
        assert out["exact_match"] == {"value": pytest.approx(2 / 6), "n": 6,
                                      "ci95": out["exact_match"]["ci95"]}
        # format_validity over every row that got a completion, expected or not.
        assert out["format_validity"]["value"] == pytest.approx(5 / 7)
        assert out["format_validity"]["n"] == 7
        assert_json_clean(out)

    def test_label_prompt(self) -> None:
        metrics = ("accuracy", "f1_macro", "format_validity")
        answers = ["Billing", "technical", None, "Billing", "account", "other"]
        expected = ["billing", "technical", "account", "technical", "account", "other"]
        rows = [score_row(Extraction(a, True) if a is not None
                          else Extraction("nonsense", False, "not one of the labels"),
                          _row(e), metrics) for a, e in zip(answers, expected, strict=True)]
        out = M.aggregate(metrics, rows)
        assert out["accuracy"]["value"] == pytest.approx(4 / 6)
        assert out["accuracy"]["n"] == 6
        folded: list[str | None] = [a.casefold() if a else None for a in answers]
        assert out["f1_macro"]["value"] == pytest.approx(hand_f1_macro(folded, expected))
        # billing tp1 fp1 -> 2/3, technical tp1 fn1 -> 2/3, account tp1 fn1 -> 2/3, other 1.0
        assert out["f1_macro"]["value"] == pytest.approx((3 * 2 / 3 + 1) / 4)
        assert out["f1_macro"]["n"] == 6
        assert out["format_validity"]["value"] == pytest.approx(5 / 6)
        assert_json_clean(out)

    def test_contains_and_regex(self) -> None:
        metrics = ("contains", "regex")
        rows = [
            score_row(Extraction("Paris, France", True), _row("paris"), metrics),
            score_row(Extraction("Lyon", True), _row("paris"), metrics),
            score_row(Extraction("#123", True), _row(pattern=r"#\d+"), metrics),
            score_row(Extraction("123", True), _row(pattern=r"#\d+"), metrics),
            score_row(Extraction("#9", True), _row(pattern=r"^#\d$"), metrics),
        ]
        out = M.aggregate(metrics, rows)
        assert out["contains"]["value"] == 0.5
        assert out["contains"]["n"] == 2
        assert out["regex"]["value"] == pytest.approx(2 / 3)
        assert out["regex"]["n"] == 3

    def test_rows_without_scores_give_empty_metrics(self) -> None:
        rows = [score_row(Extraction(1.0, True), _row(), ("rmse", "exact_match"))] * 3
        out = M.aggregate(["rmse", "exact_match", "format_validity"], rows)
        assert out["rmse"] == {"value": None, "n": 0, "ci95": None}
        assert out["exact_match"] == {"value": None, "n": 0, "ci95": None}
        assert out["format_validity"] == {"value": 1.0, "n": 3, "ci95": [1.0, 1.0]}

    def test_unknown_metrics_are_left_to_others(self) -> None:
        assert M.aggregate(["llm_judge", "similarity", "custom"], [{"format_validity": 1.0}]) == {}

    def test_rows_round_tripped_through_json(self) -> None:
        metrics = ("rmse", "f1_macro", "exact_match")
        rows = [score_row(Extraction(float(a), True), _row(e), metrics)
                for a, e in [(1, 1), (2, 3), (5, 5), (4, 2)]]
        stored = [json.loads(json.dumps(r, allow_nan=False)) for r in rows]
        assert M.aggregate(metrics, stored) == M.aggregate(metrics, rows)
        assert M.aggregate(metrics, rows)["f1_macro"]["value"] == pytest.approx(
            hand_f1_macro(["1", "2", "5", "4"], ["1", "3", "5", "2"]))
