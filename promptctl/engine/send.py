"""The send loop: every planned request through the gateway, each answer scored and stored
as it arrives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, cast

from promptctl.engine.gateway import Answer, Channel, Gateway, ProgressFn
from promptctl.engine.plan import RequestPlan, WorkItem
from promptctl.errors import PromptctlError
from promptctl.metrics.registry import ScoreContext, score_builtins
from promptctl.prompts import Prompt
from promptctl.scoring import extract
from promptctl.store import RowRecord, Store, utcnow

FLUSH_ROWS = 64
FLUSH_SECONDS = 0.1


class RowWriter:
    """Stores rows (and the cache entries of their answers) in few transactions.

    A row whose answer was sent for is written at once, so a kill loses only what is in
    flight; rows replayed from the cache cost nothing to redo, so they are batched.
    """

    def __init__(self, store: Store, gateway: Gateway) -> None:
        self.store = store
        self.gateway = gateway
        self.buffer: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()

    def add(self, record: dict[str, Any], *, sent: bool) -> None:
        self.buffer.append(record)
        if sent or len(self.buffer) >= FLUSH_ROWS or time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        cache = self.gateway.new_cache
        if self.buffer or cache:
            # One transaction: a commit per answer is most of the store's cost.
            self.store.write_rows(cast("list[RowRecord]", self.buffer), cache=cache)
            self.buffer = []
            self.gateway.new_cache = []
        self.last_flush = time.monotonic()


async def row_record(run_id: str, item: WorkItem, answer: Answer, prompt: Prompt,
                     services: Any = None) -> dict[str, Any]:
    """The stored row of one answered (or failed) request, scored."""
    record: dict[str, Any] = {
        "run_id": run_id, "kind": item.kind, "position": item.position, "row_id": item.row.id,
        "sample": item.sample, "input": item.row.input, "messages": item.messages,
        "cached": answer.cached, "attempts": answer.attempts,
    }
    if item.row.has_expected:
        record["expected"] = item.row.expected
    response = answer.response
    if response is None:
        record["error"] = answer.error
    elif response.get("no_text"):
        # The model answered without text (a tool call, null content): shown as such and
        # not scored, rather than scored as a wrong answer.
        record.update(completion=None, valid=False, scores={},
                      extract_error=f"no text answer: {response['no_text']}")
    else:
        extraction = extract(response["text"], prompt.output)
        scores = score_builtins(extraction, item.row, prompt.metrics)
        details: dict[str, Any] = {}
        if prompt.configured_metrics:
            ctx = ScoreContext(item.row, extraction, response["text"], prompt.metrics, services)
            for metric in prompt.configured_metrics:
                scores.update(await metric.score(ctx))
            details = ctx.details
        record.update(completion=response["text"], answer=extraction.answer,
                      valid=extraction.valid, extract_error=extraction.error, scores=scores)
        if details:
            record["judges"] = details
    if response is not None:
        record.update(prompt_tokens=response.get("prompt_tokens"),
                      completion_tokens=response.get("completion_tokens"),
                      latency_ms=response.get("latency_ms"), response_model=response.get("model"),
                      system_fingerprint=response.get("system_fingerprint"))
    record["created_at"] = utcnow()  # when the answer arrived
    return record


async def send_all(plan: RequestPlan, *, run_id: str, gateway: Gateway, channel: Channel,
                   concurrency: int, progress: ProgressFn | None = None,
                   services: Any = None) -> None:
    """Send every planned request (or take it from the cache); store each row as it arrives.

    A PromptctlError from any request (a refused key, an unknown model) stops every worker
    and is raised once the rows answered so far are stored.
    """
    prompt = plan.prompt
    params = prompt.request_params
    state = gateway.progress
    writer = RowWriter(gateway.store, gateway)
    fatal: list[BaseException] = []

    async def one(item: WorkItem) -> None:
        answer = await gateway.complete(channel, item.messages, params, item.sample)
        record = await row_record(run_id, item, answer, prompt, services)
        state.done += 1
        state.errors += "error" in record
        writer.add(record, sent=not answer.cached)
        if progress is not None:
            progress(state)

    items: Iterator[WorkItem] = iter(plan)

    async def worker() -> None:
        for item in items:
            if fatal:
                return
            try:
                await one(item)
            except PromptctlError as exc:
                fatal.append(exc)
                return

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        writer.flush()
    if fatal:
        raise fatal[0]
