"""Repeated samples (`eval --repeat K`): stability, pass@k, pass^k and self-consistency.

At temperature 0 a model should answer the same way every time; these figures
measure how far it does not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from promptctl.metrics.aggregates import share
from promptctl.scoring import equals


def _groups(samples: list[Mapping[str, Any]]) -> list[int]:
    """Per sample the index of its answer among the row's distinct answers, answers being the
    same when `equals` says so (7 and 7.0, "Paris" and "paris"); unreadable answers are one
    answer of their own."""
    heads: list[Mapping[str, Any] | None] = []
    out = []
    for r in samples:
        for i, head in enumerate(heads):
            if (head is None and not r.get("valid")) or (
                    head is not None and r.get("valid") and equals(r.get("answer"),
                                                                   head.get("answer"))):
                out.append(i)
                break
        else:
            heads.append(r if r.get("valid") else None)
            out.append(len(heads) - 1)
    return out


def _hit(row: Mapping[str, Any], keys: Sequence[str]) -> bool:
    """Whether the sample passed: its score under the first of `keys` it holds (the pass/fail
    metric's key, then former keys), else the exact_match test."""
    scores = row.get("scores") or {}
    for key in keys:
        if key in scores:
            return bool(scores[key])
    return bool(row.get("valid")) and equals(row.get("answer"), row.get("expected"))


def analyze(rows: Iterable[Mapping[str, Any]], metric: str = "exact_match",
            score_keys: Sequence[str] = ("exact_match",)) -> dict[str, Any] | None:
    """Stability figures over the eval rows of a run with several samples per row.

    Returns None when every row was sampled once. Error rows are left out;
    a row left with a single answer tells nothing about stability and is not
    counted in the agreement figures, and pass@k and pass^k count only rows
    with all k samples (fewer would understate pass@k and overstate pass^k).
    pass@k, pass^k and the majority vote are scored with the pass/fail `metric` (its
    score under the first of `score_keys` a sample holds), and say which.
    """
    by_row: dict[str, list[Mapping[str, Any]]] = {}
    sent: Counter[str] = Counter()
    for row in rows:
        if row["kind"] == "eval":
            sent[row["row_id"]] += 1
            if row.get("error") is None:
                by_row.setdefault(row["row_id"], []).append(row)
    # k is the samples asked for per row, failed requests included.
    k = max(sent.values(), default=0)
    if k < 2 or not by_row:
        return None
    agreement, stable, any_hit, all_hit, majority_hit = [], [], [], [], []
    flaky = []
    for row_id, samples in by_row.items():
        samples.sort(key=lambda r: r["sample"])
        keys = _groups(samples)
        counts = Counter(keys)
        top = max(counts.values())
        # Ties go to the answer seen first, so the vote is deterministic.
        winner = next(key for key in keys if counts[key] == top)
        vote = samples[keys.index(winner)]
        readable = bool(vote.get("valid"))
        if len(samples) > 1:
            agreement.append(top / len(keys))
            stable.append(1.0 if len(counts) == 1 else 0.0)
        if len(counts) > 1:
            flaky.append({"row_id": row_id, "answers": [r.get("answer") if r.get("valid") else None
                                                        for r in samples],
                          "agreement": top / len(keys),
                          "majority": vote.get("answer") if readable else None,
                          "expected": samples[0].get("expected")})
        if samples[0].get("has_expected"):
            if len(samples) == k:
                hits = [_hit(r, score_keys) for r in samples]
                any_hit.append(1.0 if any(hits) else 0.0)
                all_hit.append(1.0 if all(hits) else 0.0)
            # The majority answer scored as the metric scored the sample that gave it.
            majority_hit.append(1.0 if readable and _hit(vote, score_keys) else 0.0)
    return {
        "k": k,
        "rows": len(agreement),
        "metric": metric,
        "mean_agreement": share(agreement),
        "unstable_share": share([1.0 - s for s in stable]),
        "pass_at_k": share(any_hit),
        "pass_hat_k": share(all_hit),
        "majority_vote": share(majority_hit),
        "flaky_rows": flaky,
    }
