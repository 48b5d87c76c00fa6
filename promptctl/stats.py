"""Paired statistics for comparing two runs row by row.

Binary per-row scores (exact_match, format_validity...) get an exact McNemar
test; continuous ones (squared error, absolute error, correlations) get a
paired permutation test. Deltas get a paired bootstrap interval. Every random
draw uses a fixed seed, so the same pair of runs always gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from promptctl.metrics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, bootstrap

PERMUTATIONS = 2000
if TYPE_CHECKING:
    import numpy.typing as npt

    # numpy.typing costs ~0.1 s to import; annotations alone need it.
    FloatArray = npt.NDArray[np.float64]


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
    delta = (n01 - n10) / n if n else 0.0
    ci: list[float] | None = None
    if n:
        cells = np.array([n01, n10, n - n01 - n10], dtype=np.float64) / n
        counts = np.random.default_rng(seed).multinomial(n, cells, size=resamples)
        draws = (counts[:, 0] - counts[:, 1]) / n
        lo, hi = np.percentile(draws, [2.5, 97.5])
        ci = [float(lo), float(hi)]
    return {"delta": float(delta), "ci95": ci, "p_value": mcnemar_exact(n01, n10),
            "test": "mcnemar_exact", "n": n, "n01": n01, "n10": n10}


def paired_continuous(a: FloatArray, b: FloatArray,
                      statistic: Callable[[FloatArray], FloatArray],
                      resamples: int = BOOTSTRAP_RESAMPLES, permutations: int = PERMUTATIONS,
                      seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Delta statistic(b) - statistic(a) over paired rows, with a bootstrap interval and a
    paired permutation p-value (swapping A and B within random pairs).

    `statistic` maps a (k, n) matrix to k values (e.g. RMSE of each row); with
    (n, 2) inputs (answer, expected pairs for correlations) it gets (k, n, 2).
    """
    n = int(a.size)
    if n == 0:
        return {"delta": None, "ci95": None, "p_value": None, "test": "paired_permutation", "n": 0}
    observed = float(statistic(b[None, :])[0] - statistic(a[None, :])[0])
    lo, hi = bootstrap([a, b], lambda x, y: statistic(y) - statistic(x), resamples, seed)
    rng = np.random.default_rng(seed + 1)
    extreme = 0
    done = 0
    chunk = max(1, 2_000_000 // n)
    tol = 1e-12 * max(1.0, abs(observed))
    while done < permutations:
        k = min(chunk, permutations - done)
        swap = rng.random((k, n)) < 0.5
        if a.ndim == 2:
            swap = swap[..., None]
        pa = np.where(swap, b, a)
        pb = np.where(swap, a, b)
        diffs = statistic(pb) - statistic(pa)
        extreme += int(np.sum(np.abs(diffs) >= abs(observed) - tol))
        done += k
    p_value = (extreme + 1) / (permutations + 1)
    ci = [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None
    return {"delta": observed, "ci95": ci, "p_value": min(1.0, p_value),
            "test": "paired_permutation", "n": n}
