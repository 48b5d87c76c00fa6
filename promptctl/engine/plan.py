"""Planning: every request of a run, checked before anything is sent.

`validate`, `eval --dry-run` and `eval` share this: a row that does not render is found
here, with its file and line, whichever of them runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterator

from promptctl.errors import InputError
from promptctl.evalsets import EvalSet, Row
from promptctl.target import Target
from promptctl.work import Key, WorkItem

# Plans of up to this many requests keep them rendered (see `plan_requests`).
KEEP_REQUESTS = 5000

class RequestPlan:
    """Every unit of a run (a row or few-shot example, times its samples), with the request a
    prompt renders for it, rendered as it is iterated: a 50,000-row run never holds 50,000
    rendered requests. `plan_requests()` renders everything once first, so bad input is
    found before anything is sent."""

    def __init__(self, target: Target, evalset: EvalSet, *, limit: int | None = None,
                 repeat: int = 1, skip: Collection[Key] = ()) -> None:
        self.target = target
        self.evalset = evalset
        self.limit = limit
        self.repeat = repeat
        self.skip = skip  # already answered: a resume sends the rest
        self._kept: list[WorkItem] | None = None

    def rows(self) -> Iterator[Row]:
        return itertools.islice(self.evalset, self.limit)

    @property
    def eval_rows(self) -> int:
        n = len(self.evalset)
        return n if self.limit is None else min(n, self.limit)

    @property
    def covers_evalset(self) -> bool:
        """Whether the plan asks for every row of the eval set (no --limit cut it short)."""
        return self.eval_rows == len(self.evalset)

    def keys(self) -> Iterator[Key]:
        """(kind, row id, sample) of every request, without rendering."""
        for kind, group in (("fewshot", iter(self.target.examples)), ("eval", self.rows())):
            for row in group:
                for sample in range(self.repeat):
                    if (kind, row.id, sample) not in self.skip:
                        yield kind, row.id, sample

    def without(self, done: Collection[Key]) -> RequestPlan:
        """The same plan minus the requests already answered."""
        return RequestPlan(self.target, self.evalset, limit=self.limit, repeat=self.repeat,
                           skip=done)

    def __len__(self) -> int:
        if not self.skip:
            return (len(self.target.examples) + self.eval_rows) * self.repeat
        return sum(1 for _ in self.keys())

    def __iter__(self) -> Iterator[WorkItem]:
        if self._kept is not None:
            return (i for i in self._kept if i.key not in self.skip)
        return self._render()

    def _render(self) -> Iterator[WorkItem]:
        # A system prompt or few-shot turn rendered for every row is the same text each
        # time: a message equal to the previous row's at the same place shares its object.
        previous: list[dict[str, str]] = []
        for kind, group in (("fewshot", iter(self.target.examples)), ("eval", self.rows())):
            for position, row in enumerate(group):
                samples = [s for s in range(self.repeat) if (kind, row.id, s) not in self.skip]
                if not samples:
                    continue
                try:
                    messages = self.target.messages_for(row)
                except InputError as exc:
                    if kind == "eval" and exc.fix:
                        exc.fix += f" (row at {self.evalset.path}:{row.line})"
                        exc.args = (str(exc),)
                    raise
                messages = [previous[i] if i < len(previous) and previous[i] == m else m
                            for i, m in enumerate(messages)]
                previous = messages
                for sample in samples:
                    yield WorkItem(kind, position, row, sample, messages)


def _name_row(exc: InputError, evalset: EvalSet, row: Row) -> None:
    """Say which eval set row an error is about: as its file and line when it names no file
    of its own, else after its fix."""
    if exc.file is None:
        exc.file = str(evalset.path)
        exc.line = row.line
    elif exc.fix:
        exc.fix += f" (row at {evalset.path}:{row.line})"
    exc.args = (str(exc),)


def plan_requests(target: Target, evalset: EvalSet, *, limit: int | None = None,
                  repeat: int = 1) -> RequestPlan:
    """Check every row and few-shot example can run; raise before anything is sent."""
    result = RequestPlan(target, evalset, limit=limit, repeat=repeat)
    for metric in target.all_configured_metrics:
        if metric.check is not None:
            metric.check()
    # Each metric's own check of a row (a judge's template renders for it, regex has a
    # pattern), before anything is sent.
    checked = [m for m in target.metric_objects if m.check_row is not None]
    for kind, group in (("fewshot", target.examples), ("eval", result.rows())):
        metrics = [m for m in checked if kind == "eval" or m.check_examples]
        if not metrics:
            continue
        for row in group:
            for metric in metrics:
                assert metric.check_row is not None
                try:
                    metric.check_row(row)
                except InputError as exc:
                    if kind == "eval":
                        _name_row(exc, evalset, row)
                    raise
    target.check_rows(result.rows(), evalset.path)
    # Render everything once now. A small plan keeps what it rendered (sending then costs
    # no second rendering); a large one renders again as it sends, so memory stays flat.
    kept: list[WorkItem] | None = []
    for item in result._render():
        if kept is not None:
            kept.append(item)
            if len(kept) > KEEP_REQUESTS:
                kept = None
    result._kept = kept
    return result
