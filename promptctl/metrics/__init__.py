"""Metrics: the registry of metric objects (`registry`, `builtin`, configured kinds) and
the aggregates over per-row scores (`aggregates`)."""

from __future__ import annotations

from promptctl.metrics.aggregates import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    _pearson_rows,
    aggregate,
    aggregate_columns,
    bootstrap,
    f1_macro,
    fold_scores,
    mae,
    pearson,
    percentiles,
    rankdata,
    rmse,
    share,
    spearman,
)

__all__ = ["BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "_pearson_rows", "aggregate", "aggregate_columns",
           "bootstrap", "f1_macro", "fold_scores", "mae", "pearson", "percentiles", "rankdata",
           "rmse", "share", "spearman"]
