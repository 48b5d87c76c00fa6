"""`--dry-run`: how many requests, how many tokens, what it would cost; nothing is sent."""

from __future__ import annotations

import json
from typing import Any

from promptctl.config import Config
from promptctl.engine.batch import batch_price, require_batch
from promptctl.engine.gateway import in_cache
from promptctl.engine.lifecycle import EvalOptions, refuse_batched_tools
from promptctl.engine.plan import RequestPlan, plan_requests
from promptctl.evalsets import EvalSet
from promptctl.metrics.registry import ScoreContext
from promptctl.metrics.similarity import estimate as embeddings
from promptctl.prompts import Prompt
from promptctl.providers import ResolvedModel
from promptctl.providers.tokens import message_tokens
from promptctl.scoring import Extraction
from promptctl.store import Store


def scorer_estimates(prompt: Prompt, items: RequestPlan, config: Config,
                     completion_tokens: int | None) -> list[dict[str, Any]]:
    """The requests the prompt's configured metrics (judges) would send: one per answer."""
    contexts = [ScoreContext(item.row, Extraction(None, False), "") for item in items]
    return [metric.estimate(contexts, config, completion_tokens)
            for metric in prompt.configured_metrics if metric.estimate is not None]


def estimate(prompt: Prompt, evalset: EvalSet, resolved: ResolvedModel, *, config: Config,
             store: Store, options: EvalOptions) -> dict[str, Any]:
    """The plan of one run with token and cost estimates."""
    items = plan_requests(prompt, evalset, limit=options.limit, repeat=options.repeat)
    count, method = resolved.backend.token_counter(resolved.model)
    params = prompt.request_params
    # The declared tools go with every request (as JSON, counted as text).
    tool_tokens = count(json.dumps(params["tools"], ensure_ascii=False)) if params.get("tools") \
        else 0
    prompt_tokens = 0
    cached = 0
    kinds = {"eval": 0, "fewshot": 0}
    first: list[dict[str, str]] = []
    for item in items:
        kinds[item.kind] += 1
        first = first or item.messages
        if options.use_cache and in_cache(store, resolved, item.messages, params, item.sample):
            cached += 1
            continue
        prompt_tokens += message_tokens(item.messages, count) + tool_tokens
    to_send = len(items) - cached
    max_tokens = params.get("max_tokens") or params.get("max_completion_tokens")
    completion_tokens = to_send * int(max_tokens) if max_tokens else None
    price = config.price(resolved.model, resolved.endpoint)
    if options.batch:
        require_batch(resolved)
        refuse_batched_tools(prompt)
        price = batch_price(price, resolved)
    cost = None
    if price is not None:
        cost = (prompt_tokens * price.input + (completion_tokens or 0) * price.output) / 1e6
    return {
        "prompt": prompt.name, "model": resolved.spec, "endpoint": resolved.endpoint_name,
        "requests": len(items), "cached": cached, "to_send": to_send,
        "eval_rows": kinds["eval"],
        "fewshot_rows": kinds["fewshot"],
        "prompt_tokens": prompt_tokens, "token_count_method": method,
        "completion_tokens_max": completion_tokens,
        "estimated_cost_usd_max": None if cost is None else round(cost, 6),
        "cost_note": None if max_tokens else "no max_tokens in params: completion cost unknown",
        "first_request": first,
        **_embeddings(prompt, items, store=store, config=config, options=options,
                      max_tokens=int(max_tokens) if max_tokens else None),
        "scorers": scorer_estimates(prompt, items, config, int(max_tokens) if max_tokens else None),
    }


def _embeddings(prompt: Prompt, items: Any, *, store: Store, config: Config,
                options: EvalOptions, max_tokens: int | None) -> dict[str, Any]:
    """The embeddings requests of the prompt's similarity metrics, when it has any."""
    if not any(m.kind == "similarity" for m in prompt.configured_metrics):
        return {}

    return {"embeddings": embeddings(prompt, items, store=store, config=config,
                                     use_cache=options.use_cache, max_tokens=max_tokens)}
