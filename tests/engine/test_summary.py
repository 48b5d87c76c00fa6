"""Scorer usage in a run's summary: what a resume spent is added to what the first process spent."""

from __future__ import annotations

from promptctl.engine.summary import add_usage


def test_usage_of_two_processes_is_summed_by_model() -> None:
    first = {"gpt-4o": {"requests": 4, "cached": 1, "errors": 1, "prompt_tokens": 400,
                        "completion_tokens": 8, "cost_usd": 0.25}}
    resume = {"gpt-4o": {"requests": 1, "cached": 2, "errors": 0, "prompt_tokens": 100,
                         "completion_tokens": 2, "cost_usd": 0.5},
              "local/e5": {"requests": 3, "cached": 0, "errors": 0, "prompt_tokens": 30,
                           "completion_tokens": 0, "cost_usd": None}}
    total = add_usage(first, resume)
    assert total["gpt-4o"] == {"requests": 5, "cached": 3, "errors": 1, "prompt_tokens": 500,
                               "completion_tokens": 10, "cost_usd": 0.75}
    # An unknown price stays unknown: a sum with it would understate the cost.
    assert total["local/e5"]["cost_usd"] is None
    assert add_usage(None, {}) == {}
    assert add_usage({"m": {"cost_usd": None}}, {"m": {"cost_usd": 1.0}})["m"]["cost_usd"] is None
    # What was paid adds up the same way, an unknown amount staying unknown.
    paid = add_usage({"m": {"spent_usd": 0.0}}, {"m": {"spent_usd": 0.25}}, {"m": {"spent_usd": 0.5}})
    assert paid["m"]["spent_usd"] == 0.75
    assert add_usage({"m": {"spent_usd": None}}, {"m": {"spent_usd": 0.0}})["m"]["spent_usd"] is None
