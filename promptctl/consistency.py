"""Repeated samples (`eval --repeat K`): stability, pass@k, pass^k and self-consistency.

At temperature 0 a model should answer the same way every time; these figures
measure how far it does not.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from promptctl.metrics import share
from promptctl.scoring import equals

INVALID = "<invalid>"


def _key(row: dict[str, Any]) -> str:
    if not row.get("valid"):
        return INVALID
    return json.dumps(row.get("answer"), sort_keys=True, ensure_ascii=False)


def analyze(rows: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """Stability figures over the eval rows of a run with several samples per row.

    Returns None when no row has more than one sample. Error rows are left out.
    """
    by_row: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["kind"] == "eval" and row.get("error") is None:
            by_row.setdefault(row["row_id"], []).append(row)
    if not any(len(samples) > 1 for samples in by_row.values()):
        return None
    agreement, stable, any_hit, all_hit, majority_hit = [], [], [], [], []
    flaky = []
    for row_id, samples in by_row.items():
        samples.sort(key=lambda r: r["sample"])
        keys = [_key(r) for r in samples]
        counts = Counter(keys)
        top = max(counts.values())
        # Ties go to the answer seen first, so the vote is deterministic.
        winner = next(k for k in keys if counts[k] == top)
        agreement.append(top / len(keys))
        stable.append(1.0 if len(counts) == 1 else 0.0)
        if len(counts) > 1:
            flaky.append({"row_id": row_id, "answers": [r.get("answer") if r.get("valid") else None
                                                        for r in samples],
                          "agreement": top / len(keys)})
        if samples[0].get("has_expected"):
            hits = [bool((r.get("scores") or {}).get("exact_match")) for r in samples]
            any_hit.append(1.0 if any(hits) else 0.0)
            all_hit.append(1.0 if all(hits) else 0.0)
            vote = samples[keys.index(winner)]
            majority_hit.append(1.0 if winner != INVALID and equals(vote.get("answer"),
                                                                    vote.get("expected")) else 0.0)
    k = max(len(s) for s in by_row.values())
    return {
        "k": k,
        "rows": len(by_row),
        "mean_agreement": share(agreement),
        "unstable_share": share([1.0 - s for s in stable]),
        "pass_at_k": share(any_hit),
        "pass_hat_k": share(all_hit),
        "majority_exact_match": share(majority_hit),
        "flaky_rows": flaky,
    }
