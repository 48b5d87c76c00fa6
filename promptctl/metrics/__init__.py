"""Metrics: the registry of metric objects (`registry`), the built-in metrics (`builtin`),
the kinds of configured metrics (`kinds`: llm_judge, similarity, custom) and the aggregates
over per-row scores (`aggregates`).

Importing the package registers every built-in metric and kind, so the registry never has
to import the modules that register into it.
"""

from __future__ import annotations

from promptctl.metrics import builtin as builtin  # noqa: F401 - registers the built-ins
from promptctl.metrics import kinds as kinds  # noqa: F401 - registers the configured kinds
from promptctl.metrics.aggregates import (
    aggregate,
    aggregate_columns,
    f1_macro,
    fold_scores,
    mae,
    pearson,
    percentiles,
    rmse,
    share,
    spearman,
)
from promptctl.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, bootstrap
from promptctl.stats import pearson_rows as _pearson_rows
from promptctl.stats import rank_rows as rankdata

__all__ = ["BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "_pearson_rows", "aggregate",
           "aggregate_columns", "bootstrap", "f1_macro", "fold_scores", "mae", "pearson",
           "percentiles", "rankdata", "rmse", "share", "spearman"]
