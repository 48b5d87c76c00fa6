"""Rescoring: a stored run's completions scored again, as a new run linked to the old one.

After a change to a judge prompt, an output pattern or a scorer, the completions a run
paid for are still good: only the scores change. Nothing is sent to the evaluated model;
judges (and other scorers) are asked only what the cache does not hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from promptctl.config import Config
from promptctl.engine.gateway import Answer, Gateway, Progress, ProgressFn
from promptctl.engine.lifecycle import (
    _owner_token,
    drive,
    new_run_id,
    preflight_scorers,
    scorer_services,
)
from promptctl.engine.send import send_all
from promptctl.errors import InputError
from promptctl.evalsets import MISSING, Row
from promptctl.prompts import Prompt, load_prompt, parse_prompt
from promptctl.providers import resolve_model
from promptctl.sampling import Sampling, sampling_from_options, vote_and_record
from promptctl.store import RowRecord, RunRecord, Store, utcnow
from promptctl.target import metric_identities
from promptctl.toolcalls import SAMPLES_KEY, TOOL_CALLS_KEY
from promptctl.work import WorkItem

# Run columns a rescored run keeps from the run it rescores: it is the same prompt on the
# same answers.
_KEPT = ("prompt_name", "prompt_path", "git_commit", "git_dirty", "git_branch", "model",
         "endpoint", "base_url", "params", "evalset_path", "evalset_version", "n_planned")


def rescore_prompt(run: RunRecord, config: Config) -> tuple[Prompt, str]:
    """The prompt to score `run`'s completions with, and why that one.

    The prompt file as it is now, when it asks exactly what the run asked (same messages
    template and params: only `output:`, `metrics:` or thresholds changed); else the prompt
    stored with the run. Judge prompts and scorers are always read as they are now.
    """
    stored = parse_prompt(run["prompt_source"].encode("utf-8"), config.root / run["prompt_path"])
    try:
        current = load_prompt(config.root / run["prompt_path"], config.root)
    except InputError:
        return stored, "the run's own prompt (the prompt file cannot be read now)"
    if current.version == stored.version:
        return stored, "the run's prompt (unchanged)"
    if (current.messages == stored.messages and current.examples == stored.examples
            and current.request_params == stored.request_params):
        return current, "the prompt file as it is now (its requests are the run's)"
    return stored, "the run's own prompt (the prompt file now asks something else)"


def _select(prompt: Prompt, names: Sequence[str] | None) -> tuple[Prompt, set[str]]:
    """`prompt` with only the configured metrics named by `names` scored afresh; the names
    of the configured metrics whose stored scores are kept."""
    if not names:
        return prompt, set()
    for name in names:
        if name not in prompt.metrics:
            raise InputError(f"metric {name!r} is not a metric of prompt {prompt.name}",
                             file=prompt.path, fix=f"use some of: {', '.join(prompt.metrics)}")
    fresh = tuple(m for m in prompt.configured_metrics if m.name in names)
    kept = {m.name for m in prompt.configured_metrics if m.name not in names}
    return dataclasses.replace(prompt, configured_metrics=fresh), kept


def _kept_scores(old: RowRecord, record: dict[str, Any], kept: set[str]) -> None:
    """Carry the stored scores (and judge answers) of the metrics not scored afresh."""
    if not kept or "scores" not in record:
        return
    scores = old.get("scores") or {}
    for key, value in scores.items():
        if key in kept:  # a metric's score (an older run's internal markers are not)
            record["scores"][key] = value
    judges = {k: v for k, v in (old.get("judges") or {}).items() if k in kept}
    if judges:
        record["judges"] = {**(record.get("judges") or {}), **judges}


def _item_and_answer(old: RowRecord) -> tuple[WorkItem, Answer]:
    row = Row(id=old["row_id"], input=old["input"],
              expected=old["expected"] if old.get("has_expected", "expected" in old) else MISSING)
    item = WorkItem(old["kind"], old["position"], row, old["sample"], old["messages"])
    if old.get("error") is not None:
        return item, Answer(None, error=old["error"], attempts=old.get("attempts") or 0)
    response = {"text": old.get("completion"), "prompt_tokens": old.get("prompt_tokens"),
                "completion_tokens": old.get("completion_tokens"),
                "model": old.get("response_model"),
                "system_fingerprint": old.get("system_fingerprint"),
                "latency_ms": old.get("latency_ms")}
    if old.get("completion") is None:
        response["no_text"] = old.get("extract_error") or "no text"
    calls = (old.get("judges") or {}).get(TOOL_CALLS_KEY)
    if calls:
        response["tool_calls"] = calls
    # Nothing is paid for the completion again: the rescored row counts it as cached.
    return item, Answer(response, attempts=old.get("attempts") or 1, cached=True)


def _stored_samples(old: RowRecord) -> list[Answer] | None:
    """The answers of a sampled row's stored samples (None: not a sampled row), each as
    `_item_and_answer` makes a row's."""
    detail = (old.get("judges") or {}).get(SAMPLES_KEY)
    if not isinstance(detail, dict) or not isinstance(detail.get("samples"), list):
        return None
    answers = []
    for sample in detail["samples"]:
        sample = sample if isinstance(sample, dict) else {}
        _, answer = _item_and_answer({**old, **sample, "judges": sample.get("judges"),
                                      "error": sample.get("error")})
        answers.append(answer)
    return answers


async def _rescore_sampled(scoring: Prompt, sampling: Sampling, run_id: str, old: RowRecord,
                           answers: list[Answer], services: Any) -> dict[str, Any]:
    """A sampled row scored again: every sample, then the vote (a judge's pick from the
    cache when it has it)."""
    item, _ = _item_and_answer(old)
    detail = (old.get("judges") or {}).get(SAMPLES_KEY) or {}
    return await vote_and_record(scoring, sampling, item, list(answers), run_id, services,
                                 requests=str(detail.get("requests") or "separate"),
                                 note=detail.get("note"))


def rescore_run(run_ref: str, *, store: Store, config: Config,
                metrics: Sequence[str] | None = None, concurrency: int = 8,
                use_cache: bool = True, timeout: float | None = None,
                max_response_mb: float | None = None, progress: ProgressFn | None = None) -> RunRecord:
    """Score the stored completions of run `run_ref` again; store and return the new run."""
    old = store.get_run(run_ref)
    if (old.get("kind") or "prompt") != "prompt":
        raise InputError(f"run {old['id']} is a {old.get('kind')} run; rescore takes prompt runs",
                         fix="evaluate the pipeline again (its answers are cached)")
    if old["status"] == "running":
        raise InputError(f"run {old['id']} is still running or was interrupted",
                         fix=f"finish it first: promptctl eval --resume {old['id']}")
    prompt, why = rescore_prompt(old, config)
    sampling = sampling_from_options(old.get("options") or {}, config.root)
    if sampling is not None:
        # The stored samples are scored again and voted on again, as the run voted.
        prompt = dataclasses.replace(prompt, sampling=sampling)
    scoring, kept = _select(prompt, metrics)
    preflight_scorers(scoring, config)  # only scorers send: their keys, before the new run
    resolved = resolve_model(old["model"], config)
    run_id = new_run_id()
    options = {**(old.get("options") or {}), "rescored_from": old["id"], "prompt_used": why,
               "rescored_metrics": sorted(m.name for m in scoring.configured_metrics)}
    options.pop("metric_identity", None)
    options.update(metric_identities(prompt))
    record: dict[str, Any] = {k: old.get(k) for k in _KEPT}
    record.update(id=run_id, created_at=utcnow(), status="running", kind="prompt",
                  prompt_version=prompt.version, prompt_source=prompt.source,
                  owner=_owner_token(), parent_run=old["id"], options=options)
    store.create_run(record)  # type: ignore[arg-type]
    old_rows = list(store.iter_rows(old["id"]))
    gateway = Gateway(store, use_cache=use_cache, cache_only=False,
                      progress=Progress(total=len(old_rows)))
    services = scorer_services(gateway, config, concurrency, timeout, max_response_mb)

    async def rescore_row(old_row: RowRecord) -> dict[str, Any]:
        item, answer = _item_and_answer(old_row)
        samples = _stored_samples(old_row) if sampling is not None else None
        if samples is not None and sampling is not None:
            row = await _rescore_sampled(scoring, sampling, run_id, old_row, samples, services)
        else:
            row = await scoring.record(run_id, item, answer, services)
        row["created_at"] = old_row["created_at"]  # when the completion arrived
        _kept_scores(old_row, row, kept)
        return row

    async def send() -> None:
        try:
            await send_all(old_rows, rescore_row, gateway=gateway, concurrency=concurrency,
                           progress=progress)
        finally:
            await services.aclose()

    full = old.get("coverage") == "full" and len(old_rows) > 0
    return drive(run_id, send, store=store, target=prompt,
                 price=config.price(resolved.model, resolved.endpoint),
                 repeat=int((old.get("options") or {}).get("repeat") or 1), services=services,
                 covered=lambda n: full)
