"""Metrics: the registry of metric objects (`registry`, `builtin`, configured kinds) and
the aggregates over per-row scores (`aggregates`).

The aggregates (numpy) load on first use, so validating a prompt's metric names does not
pay for numpy.
"""

from __future__ import annotations

from typing import Any

_AGGREGATES = ("BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "_pearson_rows", "aggregate",
               "aggregate_columns", "bootstrap", "f1_macro", "fold_scores", "mae", "pearson",
               "percentiles", "rankdata", "rmse", "share", "spearman")
__all__ = list(_AGGREGATES)


def __getattr__(name: str) -> Any:
    if name in _AGGREGATES:
        from promptctl.metrics import aggregates

        return getattr(aggregates, name)
    raise AttributeError(f"module 'promptctl.metrics' has no attribute {name!r}")
