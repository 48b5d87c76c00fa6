"""Cost against quality: the Pareto front, and the tokens, cost and latency deltas of
compare_runs and the cost per row of history, on stores written by hand."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from promptctl import compare_runs, history
from promptctl.metrics import aggregate
from promptctl.results import pareto_front
from promptctl.store.sqlite import SQLiteStore

# --- the Pareto front -------------------------------------------------------------------------


def test_pareto_front_keeps_the_points_no_other_dominates() -> None:
    points: list[tuple[float | None, float | None]] = [
        (1.0, 0.5),   # cheapest: on the front
        (2.0, 0.4),   # dearer and worse than the first
        (2.0, 0.7),   # on the front
        (3.0, 0.7),   # as good as the third, dearer: dominated
        (5.0, 0.9),   # on the front
        (4.0, 0.6),   # dominated by (2.0, 0.7)
    ]
    assert pareto_front(points, higher_is_better=True) == [True, False, True, False, True, False]


def test_pareto_front_of_a_lower_is_better_metric() -> None:
    # rmse: lower is better, so the cheap point with the large error stays on the front and
    # the dear one with a larger error does not.
    points: list[tuple[float | None, float | None]] = [(1.0, 3.0), (2.0, 1.0), (3.0, 2.0),
                                                       (0.5, 4.0)]
    assert pareto_front(points, higher_is_better=False) == [True, True, False, True]
    # Read as higher is better, the cheapest point is also the best: it dominates the rest.
    assert pareto_front(points, higher_is_better=True) == [False, False, False, True]


def test_pareto_front_ties() -> None:
    # The same cost and value twice: neither dominates the other, both stay.
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)], higher_is_better=True) == [True, True]
    # The same cost, one better: the worse one is dominated.
    assert pareto_front([(1.0, 0.5), (1.0, 0.6)], higher_is_better=True) == [False, True]
    # The same value, one cheaper: the dearer one is dominated.
    assert pareto_front([(2.0, 0.5), (1.0, 0.5)], higher_is_better=True) == [False, True]
    # Duplicates of a dominated point stay dominated.
    assert pareto_front([(2.0, 0.5), (2.0, 0.5), (1.0, 0.9)],
                        higher_is_better=True) == [False, False, True]


def test_pareto_front_leaves_out_unknown_costs_and_values() -> None:
    # An unknown cost is not a cost of 0: the point is off the front and dominates nothing.
    points: list[tuple[float | None, float | None]] = [
        (None, 1.0), (2.0, 0.5), (math.nan, 0.9), (3.0, None), (4.0, 0.8)]
    assert pareto_front(points, higher_is_better=True) == [False, True, False, False, True]
    assert pareto_front([], higher_is_better=True) == []


# --- tokens, cost and latency of a diff ----------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "results.db")


def put_run(store: SQLiteStore, run_id: str, rows: dict[str, list[dict[str, Any]]], *,
            price: tuple[float, float] | None, version: str = "v1", model: str = "m",
            created: str = "2026-01-01T00:00:00.000Z") -> None:
    """A complete run whose row `id` has one sample per dict of `rows[id]`: its prompt and
    completion tokens (`p`, `c`), latency (`ms`) and `cached`; every answer right."""
    store.create_run({
        "id": run_id, "created_at": created, "status": "running", "prompt_name": "p",
        "prompt_path": "prompts/p.yaml", "prompt_version": version, "prompt_source": "x",
        "git_commit": None, "git_dirty": False, "git_branch": None, "model": model,
        "endpoint": "openai", "base_url": "https://api.openai.com/v1", "params": {},
        "evalset_path": "e.jsonl", "evalset_version": "e1", "n_planned": len(rows)})
    records, scored = [], []
    for position, (row_id, samples) in enumerate(rows.items()):
        for k, s in enumerate(samples):
            scores = {"exact_match": 1.0, "format_validity": 1.0}
            records.append({
                "run_id": run_id, "kind": "eval", "position": position, "row_id": row_id,
                "sample": k, "input": {"q": row_id}, "expected": 1, "messages": [],
                "created_at": created, "cached": s.get("cached", False), "attempts": 1,
                "completion": "Answer: 1", "answer": 1, "valid": True, "scores": scores,
                "prompt_tokens": s["p"], "completion_tokens": s["c"], "latency_ms": s["ms"]})
            scored.append(scores)
    store.write_rows(records)
    summary: dict[str, Any] = {"n": len(records), "rows": len(rows), "errors": 0,
                               "system_fingerprints": []}
    if price is not None:
        summary["price_per_mtok"] = {"input": price[0], "output": price[1]}
    store.update_run(run_id, status="complete", coverage="full", errors=0, summary=summary,
                     metrics=aggregate(("exact_match", "format_validity"), scored))


A_ROWS = {f"r{i}": [{"p": 10, "c": c, "ms": ms}]
          for i, (c, ms) in enumerate(zip([1, 2, 3, 4, 5, 3], [100, 200, 300, 400, 500, 9999],
                                          strict=True), 1)}
B_ROWS = {f"r{i}": [{"p": 20, "c": c, "ms": ms, "cached": i == 6}]
          for i, (c, ms) in enumerate(zip([2, 4, 6, 8, 10, 6], [150, 250, 350, 450, 1000, 1],
                                          strict=True), 1)}


def test_diff_reports_tokens_cost_and_latency_per_paired_row(store: SQLiteStore) -> None:
    put_run(store, "a", A_ROWS, price=(1.0, 2.0))
    put_run(store, "b", B_ROWS, price=(2.0, 4.0), version="v2")
    usage = compare_runs(store, "a", "b").usage
    assert usage is not None
    # Tokens: A 10 + mean(1, 2, 3, 4, 5, 3) = 3; B 20 + 6, over all six rows.
    assert (usage.prompt_tokens.a, usage.prompt_tokens.b, usage.prompt_tokens.delta) == (10, 20, 10)
    assert usage.prompt_tokens.ci95 == (10, 10) and usage.prompt_tokens.n == 6
    assert usage.completion_tokens.a == pytest.approx(3)
    assert usage.completion_tokens.b == pytest.approx(6)
    assert usage.total_tokens.delta == pytest.approx(13)
    # Cost at each run's own price: A (10 * 1 + 3 * 2) / 1e6, B (20 * 2 + 6 * 4) / 1e6.
    assert usage.cost_usd.a == pytest.approx(16e-6)
    assert usage.cost_usd.b == pytest.approx(64e-6)
    assert usage.cost_usd.delta == pytest.approx(48e-6)
    assert usage.cost_usd.unknown is None
    lo, hi = usage.cost_usd.ci95 or (0, 0)
    assert 0 < lo <= 48e-6 <= hi
    # Latency leaves out r6 (a cache hit on B): A 100..500 and B 150, 250, 350, 450, 1000.
    assert usage.latency_cached_excluded == 1
    assert usage.latency_p50_ms.n == 5
    assert (usage.latency_p50_ms.a, usage.latency_p50_ms.b) == (300, 350)
    assert usage.latency_p50_ms.delta == pytest.approx(50)
    # p90 by linear interpolation: A 400 + 0.6 * 100, B 450 + 0.6 * 550.
    assert usage.latency_p90_ms.a == pytest.approx(460)
    assert usage.latency_p90_ms.b == pytest.approx(780)
    assert usage.latency_p90_ms.delta == pytest.approx(320)
    # The interval is of the difference of the percentiles over resampled rows.
    lo, hi = usage.latency_p90_ms.ci95 or (0, 0)
    assert lo <= 320 <= hi and hi > lo
    again = compare_runs(store, "a", "b").usage
    assert again == usage  # seeded: the same runs give the same numbers


def test_a_resampled_percentile_interval_is_the_bootstrap_of_the_difference() -> None:
    from promptctl.stats import BOOTSTRAP_SEED, bootstrap, paired_continuous, percentile_rows

    rng = np.random.default_rng(1)
    a, b = rng.gamma(2.0, 100.0, 40), rng.gamma(2.0, 130.0, 40)
    p90 = percentile_rows(90)
    t = paired_continuous(a, b, p90)
    assert t["delta"] == pytest.approx(np.percentile(b, 90) - np.percentile(a, 90))
    assert t["ci95"] == pytest.approx(list(bootstrap([a, b], lambda x, y: p90(y) - p90(x),
                                                     seed=BOOTSTRAP_SEED)))


def test_an_unknown_price_is_an_unknown_cost_never_zero(store: SQLiteStore) -> None:
    put_run(store, "a", A_ROWS, price=(1.0, 2.0))
    put_run(store, "b", B_ROWS, price=None, model="mystery", version="v2")
    usage = compare_runs(store, "a", "b").usage
    assert usage is not None
    assert usage.cost_usd.a is None and usage.cost_usd.b is None and usage.cost_usd.delta is None
    assert usage.cost_usd.unknown is not None and "B (mystery)" in usage.cost_usd.unknown
    assert "A (" not in usage.cost_usd.unknown
    assert usage.prompt_tokens.delta == 10  # tokens are known all the same
    document = compare_runs(store, "a", "b").to_json()["usage"]
    assert document["cost_usd"]["a"] is None and document["cost_usd"]["unknown"]


def test_repeated_samples_sum_their_tokens_and_average_their_latency(store: SQLiteStore) -> None:
    put_run(store, "a", {"r1": [{"p": 5, "c": 1, "ms": 100}], "r2": [{"p": 5, "c": 1, "ms": 300}]},
            price=(1.0, 1.0))
    put_run(store, "b", {"r1": [{"p": 5, "c": 1, "ms": 100}, {"p": 5, "c": 3, "ms": 200}],
                         "r2": [{"p": 5, "c": 2, "ms": 500}, {"p": 5, "c": 2, "ms": 9, "cached": True}]},
            price=(1.0, 1.0), version="v2")
    usage = compare_runs(store, "a", "b").usage
    assert usage is not None
    # r1 costs 10 + 4 tokens on B, r2 10 + 4; on A 5 + 1 each.
    assert usage.total_tokens.a == 6 and usage.total_tokens.b == 14
    # B's latency per row: r1 mean(100, 200) = 150, r2 500 (its cached sample left out).
    assert usage.latency_p50_ms.b == pytest.approx((150 + 500) / 2)
    assert usage.latency_cached_excluded == 0


def test_latency_of_runs_answered_from_the_cache_is_unknown(store: SQLiteStore) -> None:
    put_run(store, "a", A_ROWS, price=(1.0, 2.0))
    cached = {k: [{**s, "cached": True} for s in v] for k, v in A_ROWS.items()}
    put_run(store, "b", cached, price=(1.0, 2.0), version="v2")
    usage = compare_runs(store, "a", "b").usage
    assert usage is not None
    assert usage.latency_cached_excluded == 6
    assert usage.latency_p50_ms.delta is None and usage.latency_p50_ms.n == 0
    assert "cache" in (usage.latency_p50_ms.unknown or "")
    assert usage.cost_usd.delta == 0  # the same answers cost the same, cached or not


def test_history_gives_each_version_its_cost_per_row(store: SQLiteStore) -> None:
    put_run(store, "a", A_ROWS, price=(1.0, 2.0))
    put_run(store, "b", B_ROWS, price=None, version="v2", created="2026-01-02T00:00:00.000Z")
    found = history(store, "p")
    costs = {v.run: v.cost_per_row for v in found.versions}
    # A's eval rows: 60 prompt and 18 completion tokens over 6 rows.
    assert costs["a"] == pytest.approx((60 * 1 + 18 * 2) / 1e6 / 6)
    assert costs["b"] is None
    assert found.higher_is_better == {"exact_match": True, "format_validity": True}
    assert found.to_json()["versions"][0]["cost_per_row"] is None


def test_large_runs_keep_a_paired_interval_within_a_budget_of_draws() -> None:
    from promptctl.stats import BOOTSTRAP_SEED, bootstrap, paired_bounded, percentile_rows

    rng = np.random.default_rng(2)
    a, b = rng.gamma(2.0, 100.0, 300), rng.gamma(2.0, 130.0, 300)
    p50 = percentile_rows(50)
    small = paired_bounded(a, b, p50)  # within the budget: with its permutation test
    assert small["p_value"] is not None
    # Over a budget of 30,000 draws: no permutation test, 100 resamples of the rows.
    big = paired_bounded(a, b, p50, cells=30_000)
    assert big["p_value"] is None and big["n"] == 300
    assert big["delta"] == pytest.approx(np.percentile(b, 50) - np.percentile(a, 50))
    assert big["ci95"] == pytest.approx(list(bootstrap([a, b], lambda x, y: p50(y) - p50(x),
                                                       resamples=100, seed=BOOTSTRAP_SEED)))
    assert big == paired_bounded(a, b, p50, cells=30_000)
