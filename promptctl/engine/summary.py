"""A run's summary, aggregated from its stored rows: metrics, few-shot metrics, tokens,
cost, latency, consistency."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from promptctl.config import Price
from promptctl.consistency import analyze
from promptctl.engine.gateway import cost_of
from promptctl.metrics.aggregates import aggregate_columns, fold_samples, fold_scores, percentiles
from promptctl.metrics.registry import Metric
from promptctl.store import Store
from promptctl.target import Target


def add_usage(*usages: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Scorer usage by model (`Services.usage`), summed: a resumed run adds what its first
    process spent to what the resume spent."""
    out: dict[str, dict[str, Any]] = {}
    for usage in usages:
        for model, counts in (usage or {}).items():
            into = out.setdefault(model, {})
            for key, value in counts.items():
                if key.endswith("_usd") and (value is None or (key in into and into[key] is None)):
                    into[key] = None
                else:
                    into[key] = into.get(key, 0) + value
    return out


def summarize(store: Store, run_id: str, target: Target, price: Price | None,
              repeat: int = 1, scorers: dict[str, dict[str, Any]] | None = None
              ) -> dict[str, Any]:
    """Aggregate a run from its stored rows: metrics, few-shot metrics, tokens, cost, latency,
    and what the target's kind adds (a pipeline's steps); `scorers` is what the judges' and
    embeddings' requests cost (reported apart)."""
    # Aggregated by the store and from score columns: no run-sized list of row dicts, so
    # memory stays flat as eval sets grow.
    totals = store.run_totals(run_id)
    ev, fs = totals["eval"], totals["fewshot"]
    counts = {"n": ev["n"], "errors": ev["errors"], "cached": ev["cached"],
              "retries": ev["retries"] + fs["retries"], "fewshot_n": fs["n"],
              "fewshot_errors": fs["errors"], "fewshot_cached": fs["cached"],
              "no_text": ev["no_text"] + fs["no_text"]}
    tokens = {"prompt": ev["prompt_tokens"] + fs["prompt_tokens"],
              "completion": ev["completion_tokens"] + fs["completion_tokens"]}
    spent = {"prompt": ev["spent_prompt_tokens"] + fs["spent_prompt_tokens"],
             "completion": ev["spent_completion_tokens"] + fs["spent_completion_tokens"]}
    folded = {kind: _fold(store, run_id, kind, repeat) for kind in ("eval", "fewshot")}
    scores = {kind: columns for kind, (columns, _) in folded.items()}
    # The eval set's rows the run holds: with --repeat K each has K samples, and the metrics
    # rest on the rows (`n` counts the answers stored, failed ones included).
    counts["rows"] = folded["eval"][1] if folded["eval"][1] is not None else ev["n"]
    latencies = store.answered_column(run_id, "latency_ms")
    fingerprints = {f for f in store.answered_column(run_id, "system_fingerprint") if f}
    models = {m for m in store.answered_column(run_id, "response_model") if m}
    extra = target.summary_extra(lambda: store.iter_rows(run_id, kind="eval"))
    more = dict(extra.get("summary") or {})
    spent = more.pop("spent_tokens", spent)
    if isinstance(more.get("samples"), dict):
        more["samples"] = _priced_samples(more["samples"], price)
    cost = cost_of(price, tokens["prompt"], tokens["completion"])
    # Nothing sent costs nothing, whether the price is known or not.
    sent = ev["n"] - ev["errors"] - ev["cached"] + fs["n"] - fs["errors"] - fs["cached"]
    spent_cost = 0.0 if sent == 0 and not any(spent.values()) \
        else cost_of(price, spent["prompt"], spent["completion"])
    saved = None if cost is None or spent_cost is None else max(0.0, cost - spent_cost)
    consistency = None
    if repeat > 1:
        vote = _vote_metric(target.metric_objects)
        consistency = analyze(store.iter_rows(run_id, kind="eval"), vote.name,
                              (vote.key, *vote.former_keys)) if vote is not None \
            else analyze(store.iter_rows(run_id, kind="eval"))
    failed = scoring_errors(store, run_id) if target.configured_metrics else {}
    failed.update(extra.get("step_scoring_errors") or {})
    summary: dict[str, Any] = {
        **counts, "tokens": tokens,
        # cost_usd is what the run's answers cost (cached or not), the price of the
        # target on this eval set; spent_usd is what this run paid, saved_usd what the
        # cache saved it (the difference). The scorers' usage has the same two costs.
        "cost_usd": None if cost is None else round(cost, 8),
        "spent_usd": None if spent_cost is None else round(spent_cost, 8),
        "saved_usd": None if saved is None else round(saved, 8),
        # The price the costs were computed at, so that `diff` can price each row alike
        # (a run's cost alone cannot be split into its rows' input and output tokens).
        "price_per_mtok": None if price is None else {"input": price.input,
                                                      "output": price.output},
        "consistency": consistency,
        "latency_ms": percentiles(latencies),
        "system_fingerprints": sorted(fingerprints),
        "response_models": sorted(models),
    }
    summary.update(more)
    if failed:
        summary["scoring_errors"] = failed
    if scorers:
        summary["scorers"] = scorers
    return {
        "metrics": aggregate_columns(target.metric_objects, scores["eval"]),
        "fewshot_metrics": extra["fewshot_metrics"] if "fewshot_metrics" in extra
        else aggregate_columns(target.metric_objects, scores["fewshot"]),
        "errors": counts["errors"] + counts["fewshot_errors"],
        "summary": summary,
    }


def _priced_samples(samples: dict[str, Any], price: Price | None) -> dict[str, Any]:
    """A sampled run's figures with what its K samples cost against one sample, at the
    model's price (None when the price is unknown or nothing was paid per token)."""
    tokens = samples.get("tokens") or {}
    every, first = tokens.get("all") or {}, tokens.get("first") or {}
    cost_all = cost_of(price, every.get("prompt"), every.get("completion"))
    cost_first = cost_of(price, first.get("prompt"), first.get("completion"))
    multiple = None if cost_all is None or not cost_first else round(cost_all / cost_first, 4)
    return {**samples, "cost_usd": {"all": None if cost_all is None else round(cost_all, 8),
                                    "first": None if cost_first is None else round(cost_first, 8)},
            "cost_multiple": multiple}


def _vote_metric(metrics: Sequence[Metric]) -> Metric | None:
    """The pass/fail metric pass@k, pass^k and the majority vote of `--repeat` are scored
    with: exact_match or accuracy when the prompt asks for one, else its first other
    pass/fail metric but format_validity (None: exact_match's test, as without metrics)."""
    candidates = [m for m in metrics if m.pass_fail and m.name != "format_validity"]
    order = {"exact_match": 0, "accuracy": 1}
    return min(candidates, key=lambda m: order.get(m.name, 2), default=None)


def _fold(store: Store, run_id: str, kind: str, repeat: int
          ) -> tuple[dict[str, list[Any]], int | None]:
    """A kind's scores folded into columns, and how many rows it holds when they were
    sampled several times. With `--repeat` each value keeps its row, so that a metric
    averages a row's samples and resamples rows (`aggregates.Folded`)."""
    if repeat <= 1:
        return fold_scores(store.iter_scores(run_id, kind)), None
    row_ids: set[str] = set()

    def answered() -> Iterator[tuple[str, dict[str, Any]]]:
        for row in store.iter_rows(run_id, kind=kind):
            row_ids.add(row["row_id"])
            if row.get("error") is None:
                yield row["row_id"], row.get("scores") or {}

    columns = fold_samples(answered())
    return columns, len(row_ids)


# Rows listed by name per metric in a summary; the rest are counted (`show` lists them all).
SCORING_ERRORS_SHOWN = 10


def scoring_errors(store: Store, run_id: str) -> dict[str, Any]:
    """Rows a configured metric could not score (a scorer's exception, a failed embeddings
    request), by metric: `count` the eval rows, as a metric's `n` counts them (a row any of
    whose samples got no score), `samples` their answers that got none (more than `count`
    with --repeat), `fewshot` the few-shot examples that got none, and the first answers
    with their messages (eval rows first)."""
    out: dict[str, Any] = {}
    rows: dict[str, set[str]] = {}
    examples: dict[str, set[str]] = {}
    listed: dict[str, list[dict[str, Any]]] = {}
    for row in store.iter_rows(run_id):
        details = row.get("judges")
        if not isinstance(details, dict):
            continue
        for metric, detail in details.items():
            if not isinstance(detail, dict) or detail.get("error") is None:
                continue
            entry = out.setdefault(metric, {"count": 0, "samples": 0, "fewshot": 0, "rows": []})
            eval_row = row["kind"] == "eval"
            if eval_row:
                entry["samples"] += 1
                rows.setdefault(metric, set()).add(row["row_id"])
            else:
                examples.setdefault(metric, set()).add(row["row_id"])
            shown = entry["rows"] if eval_row else listed.setdefault(metric, [])
            if len(shown) < SCORING_ERRORS_SHOWN:
                shown.append({"row_id": row["row_id"], "kind": row["kind"],
                              "sample": row["sample"], "error": detail["error"]})
    for metric, entry in out.items():
        entry["count"] = len(rows.get(metric, ()))
        entry["fewshot"] = len(examples.get(metric, ()))
        entry["rows"] = (entry["rows"] + listed.get(metric, []))[:SCORING_ERRORS_SHOWN]
    return out
