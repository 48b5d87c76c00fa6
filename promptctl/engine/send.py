"""The one worker pool: every unit of a run (a prompt's request, a pipeline's row, a stored
row to rescore) through the gateway, each record stored as it is made."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

from promptctl.engine.gateway import Answer, Channel, Gateway, ProgressFn, Samples, Services
from promptctl.errors import PromptctlError
from promptctl.store import RowRecord, Store

T = TypeVar("T")

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


class RunContext:
    """What a target's row runner asks of the engine (`promptctl.work.RowContext`): requests
    to the evaluated model through the run's gateway and channel, at most `concurrency` in
    flight however many a row makes (a pipeline's independent steps, a loop's items), and the
    scorers' services."""

    def __init__(self, run_id: str, gateway: Gateway, channel: Channel, concurrency: int,
                 services: Services | None) -> None:
        self.run_id = run_id
        self.gateway = gateway
        self.channel = channel
        self._services = services
        self._slots = asyncio.Semaphore(max(1, concurrency))

    @property
    def services(self) -> Services | None:
        return self._services

    async def complete(self, messages: list[dict[str, str]], params: dict[str, Any],
                       sample: int) -> Answer:
        async with self._slots:
            return await self.gateway.complete(self.channel, messages, params, sample)

    async def complete_samples(self, messages: list[dict[str, str]], params: dict[str, Any],
                               k: int) -> Samples:
        return await self.gateway.complete_samples(self.channel, messages, params, k,
                                                   slots=self._slots)


async def send_all(items: Iterable[T], run_item: Callable[[T], Awaitable[dict[str, Any]]], *,
                   gateway: Gateway, concurrency: int, progress: ProgressFn | None = None) -> None:
    """The one worker pool: run every item (a planned row, a stored row to rescore), store
    each record as it is made.

    A PromptctlError from any item (a refused key, an unknown model) stops every worker and
    is raised once the rows made so far are stored.
    """
    state = gateway.progress
    writer = RowWriter(gateway.store, gateway)
    fatal: list[BaseException] = []
    queue: Iterator[T] = iter(items)

    async def worker() -> None:
        for item in queue:
            if fatal:
                return
            try:
                record = await run_item(item)
            except PromptctlError as exc:
                fatal.append(exc)
                return
            state.done += 1
            state.errors += "error" in record
            writer.add(record, sent=not record["cached"])
            if progress is not None:
                progress(state)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        writer.flush()
    if fatal:
        raise fatal[0]
