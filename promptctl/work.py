"""The unit of work of a run, and what running one asks of the engine.

Targets (prompts, pipelines) sit below the engine: they declare here what they need from it,
and the engine hands them an object that has it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from promptctl.evalsets import Row
from promptctl.metrics.registry import AnswerLike, Services

Key = tuple[str, str, int]  # (kind, row id, sample)


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One unit of a run: a row (or few-shot example) and its sample index, with the request
    a prompt renders for it up front (empty for targets whose requests depend on answers)."""

    kind: str
    position: int
    row: Row
    sample: int
    messages: list[dict[str, str]]

    @property
    def key(self) -> Key:
        return self.kind, self.row.id, self.sample


class SamplesLike(Protocol):
    """One request sampled K times (`eval --samples`): an answer per sample, and whether one
    request with `n` gave them all ("n") or one request each ("separate"), and why not `n`."""

    @property
    def answers(self) -> Sequence[AnswerLike]: ...
    @property
    def requests(self) -> str: ...
    @property
    def note(self) -> str | None: ...


class RowContext(Protocol):
    """What running one row may ask of the engine: a request to the evaluated model through
    the run's gateway (cache, limits, retries, accounting), and scorer services."""

    run_id: str

    @property
    def services(self) -> Services | None: ...

    async def complete(self, messages: list[dict[str, str]], params: dict[str, Any],
                       sample: int) -> AnswerLike: ...

    async def complete_samples(self, messages: list[dict[str, str]], params: dict[str, Any],
                               k: int) -> SamplesLike: ...
