"""What is a pipeline's own when it runs: one row's steps as a dependency graph (the steps
that do not read each other at the same time, every request through the engine's gateway),
the stored row with every step's request and answer, each step scored by its prompt's
metrics (built-in and configured), and what a pipeline adds to a run's summary: per-step
metrics and counts, the composability gap and control-flow correctness.

Everything else (planning, the worker pool, storing, the common summary, resume) is the
engine's, the same as for a prompt.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from promptctl.errors import InputError
from promptctl.evalsets import MISSING, Row
from promptctl.files import quote
from promptctl.metrics.aggregates import aggregate_columns, fold_scores, share
from promptctl.metrics.registry import Metric, Services, builtin, score_builtins, score_extraction
from promptctl.prompts import Prompt, response_fields
from promptctl.scoring import Extraction, OutputSpec, equals, extract
from promptctl.step_tools import StepFailure
from promptctl.store import utcnow
from promptctl.templates import row_budget
from promptctl.work import RowContext


class Expression(Protocol):
    """A compiled template of a pipeline file (`input`, `when`, `for_each`, `output`)."""

    def evaluate(self, context: Mapping[str, Any], who: str) -> Any: ...


class Tool(Protocol):
    """What a sql or tool step runs (`step_tools.SqlStep`, `step_tools.ToolStep`)."""

    async def run(self, inputs: Mapping[str, Any]) -> Any: ...


class Step(Protocol):
    """What running a step reads of it (`pipelines.Step`; pipelines sit above this module)."""

    @property
    def id(self) -> str: ...
    @property
    def prompt(self) -> Prompt | None: ...
    @property
    def prompt_rel(self) -> str: ...
    @property
    def tool(self) -> Tool | None: ...
    @property
    def version(self) -> str: ...
    @property
    def repeat_until(self) -> Expression | None: ...
    @property
    def max_iterations(self) -> int | None: ...
    @property
    def when(self) -> Expression | None: ...
    @property
    def for_each(self) -> Expression | None: ...
    @property
    def deps(self) -> frozenset[str]: ...

    def render_inputs(self, context: Mapping[str, Any], who: str) -> dict[str, Any]: ...


class Pipeline(Protocol):
    """What running a row reads of a pipeline (`pipelines.Pipeline`)."""

    @property
    def steps(self) -> Sequence[Step]: ...
    @property
    def order(self) -> tuple[str, ...]: ...
    @property
    def output(self) -> Expression: ...
    @property
    def output_spec(self) -> OutputSpec: ...
    @property
    def metrics(self) -> tuple[str, ...]: ...
    @property
    def configured_metrics(self) -> tuple[Metric, ...]: ...

    def step(self, step_id: str) -> Step: ...

# Rows listed by name per metric in a summary's scoring errors.
SCORING_ERRORS_SHOWN = 10
# Items one for_each step of one row may loop over: each is a request. A list this long
# from a model's answer is a runaway, not a workload.
MAX_FOR_EACH_ITEMS = 1_000


def loop_items(items: Any) -> list[Any]:
    """What a for_each expression gave, as the items to loop over; an InputError says why not."""
    if not isinstance(items, list):
        raise InputError(f"for_each gave {type(items).__name__}, not a list")
    if len(items) > MAX_FOR_EACH_ITEMS:
        raise InputError(f"for_each gave {len(items):,} items; a step loops over at most "
                         f"{MAX_FOR_EACH_ITEMS:,} in one row")
    return items


class RowRunner:
    """Runs the steps of one row through the engine's row context."""

    def __init__(self, pipeline: Pipeline, ctx: RowContext, sample: int) -> None:
        self.pipeline = pipeline
        self.ctx = ctx
        self.sample = sample

    async def _once(self, step: Step, variables: dict[str, Any], row: Row) -> dict[str, Any]:
        """One run of a step: a request, or its tool's code."""
        if step.tool is None:
            return await self._request(step, variables, row)
        return await _run_tool(step.tool, variables)

    async def _request(self, step: Step, variables: dict[str, Any], row: Row) -> dict[str, Any]:
        prompt = step.prompt
        assert prompt is not None
        try:
            messages = prompt.render(variables, row_id=row.id)
        except InputError as exc:  # the prompt's own template, on an answer of another shape
            return {"input": variables, **_unrendered(exc.message)}
        answer = await self.ctx.complete(messages, prompt.request_params, self.sample)
        out: dict[str, Any] = {"input": variables, "messages": messages, "cached": answer.cached,
                               "attempts": answer.attempts}
        if answer.response is None:
            out["error"] = answer.error
            return out
        response = answer.response
        out.update(response_fields(response))
        if response.get("no_text"):
            out.update(completion=None, answer=None, valid=False,
                       extract_error=f"no text answer: {response['no_text']}")
            return out
        extraction = extract(response["text"], prompt.output)
        out.update(completion=response["text"], answer=extraction.answer, valid=extraction.valid,
                   extract_error=extraction.error)
        return out

    async def _step(self, step: Step, row: Row, context: dict[str, Any],
                    waits: Mapping[str, asyncio.Task[dict[str, Any]]]) -> dict[str, Any]:
        for dep in sorted(step.deps):
            done = await waits[dep]
            if done.get("error") is not None or done.get("not_run"):
                return {"prompt": step.prompt_rel, "not_run": f"step {dep} did not finish"}
        record: dict[str, Any] = {"prompt": step.prompt_rel, "skipped": False}
        who = f"row {quote(row.id)}"
        try:
            if step.when is not None and not step.when.evaluate(context, who):
                record.update(skipped=True, answer=None)
                return record
            if step.repeat_until is not None:
                return await self._repeat(step, row, context, record, who)
            if step.for_each is None:
                record.update(await self._once(step, step.render_inputs(context, who), row))
                return record
            items = loop_items(step.for_each.evaluate(context, who))
            variables = [step.render_inputs({**context, "item": item, "index": i}, who)
                         for i, item in enumerate(items)]
        except InputError as exc:
            # The templates passed every check with stand-in answers, so what fails here is
            # a real answer of another shape (a step that gave no answer, a label where a
            # list was meant): a wrong answer downstream, not a failed request, so the row
            # is scored rather than made an error.
            return {**record, **_unrendered(exc.message)}
        done_items = await asyncio.gather(*(self._once(step, v, row) for v in variables))
        record["items"] = done_items
        errors = [d["error"] for d in done_items if d.get("error") is not None]
        if errors:
            record["error"] = f"{len(errors)} of {len(done_items)} items failed: {errors[0]}"
            if all(d.get("tool_failed") for d in done_items if d.get("error") is not None):
                record["tool_failed"] = True
        record.update(answer=[d.get("answer") for d in done_items],
                      valid=all(d.get("valid") for d in done_items),
                      cached=all(d.get("cached") for d in done_items),
                      attempts=sum(d.get("attempts") or 0 for d in done_items),
                      prompt_tokens=sum(d.get("prompt_tokens") or 0 for d in done_items),
                      completion_tokens=sum(d.get("completion_tokens") or 0 for d in done_items),
                      latency_ms=max((d.get("latency_ms") or 0 for d in done_items), default=0))
        if step.tool is not None:
            record.update(tool_ms=sum(d.get("tool_ms") or 0 for d in done_items),
                          completion=json.dumps(record["answer"], ensure_ascii=False))
        return record

    async def _repeat(self, step: Step, row: Row, context: dict[str, Any],
                      record: dict[str, Any], who: str) -> dict[str, Any]:
        """A `repeat_until` step: run, then test the condition, until it holds or
        max_iterations runs were made. Each run's input sees `steps.ID` as the previous run
        left it (no answer before the first) and `iteration` (1 for the first); the condition
        sees `steps.ID` of the run just made and its `iteration`. The stored step is its last
        run, with every run under `iterations`; running out of iterations is
        `iterations_exhausted: true`, not an error."""
        assert step.repeat_until is not None and step.max_iterations is not None
        previous: dict[str, Any] = {"answer": None, "skipped": False, "completion": None,
                                    "valid": False}
        runs: list[dict[str, Any]] = []
        met = False
        for n in range(1, step.max_iterations + 1):
            scope = {**context, "steps": {**context["steps"], step.id: previous}, "iteration": n}
            try:
                done = await self._once(step, step.render_inputs(scope, who), row)
            except InputError as exc:
                done = {"input": None, **_unrendered(exc.message)}
            done["iteration"] = n
            runs.append(done)
            if done.get("error") is not None or done.get("unrendered"):
                break
            previous = _view(done)
            scope["steps"] = {**context["steps"], step.id: previous}
            try:
                met = bool(step.repeat_until.evaluate(scope, who))
            except InputError as exc:
                done.update(_unrendered(f"repeat_until: {exc.message}"))
                break
            if met:
                break
        last = runs[-1]
        record.update({k: v for k, v in last.items() if k != "iteration"})
        failed = last.get("error") is not None or bool(last.get("unrendered"))
        record.update(iterations=runs, iterations_exhausted=not met and not failed,
                      cached=all(r.get("cached") for r in runs),
                      attempts=sum(r.get("attempts") or 0 for r in runs),
                      prompt_tokens=sum(r.get("prompt_tokens") or 0 for r in runs),
                      completion_tokens=sum(r.get("completion_tokens") or 0 for r in runs),
                      latency_ms=sum(r.get("latency_ms") or 0 for r in runs))
        if step.tool is not None:
            record["tool_ms"] = sum(r.get("tool_ms") or 0 for r in runs)
        return record

    async def steps(self, row: Row) -> dict[str, dict[str, Any]]:
        """Every step of one row; each starts once the steps it reads have finished."""
        views: dict[str, dict[str, Any]] = {}
        context: dict[str, Any] = {"input": row.input, "steps": views}
        tasks: dict[str, asyncio.Task[dict[str, Any]]] = {}

        async def one(step: Step) -> dict[str, Any]:
            record = await self._step(step, row, context, tasks)
            views[step.id] = _view(record)
            return record

        for step_id in self.pipeline.order:
            tasks[step_id] = asyncio.ensure_future(one(self.pipeline.step(step_id)))
        try:
            await asyncio.gather(*tasks.values())
        except BaseException:
            for task in tasks.values():
                task.cancel()
            raise
        return {s.id: tasks[s.id].result() for s in self.pipeline.steps}


async def _run_tool(tool: Tool, variables: dict[str, Any]) -> dict[str, Any]:
    """One run of a sql or tool step: its answer (a JSON value, also kept as JSON text in
    `completion`) or its error, and the time it took (`latency_ms`, also `tool_ms`: a row's
    tool time is counted apart from its requests'). Never cached: it runs every time."""
    out: dict[str, Any] = {"input": variables, "cached": False}
    start = time.perf_counter()
    try:
        value = await tool.run(variables)
    except StepFailure as exc:
        # The step's error, but not a failed request: the row is still scored (a query the
        # model wrote wrong is a wrong answer, not an outage to retry).
        out.update(error=str(exc), tool_failed=True, answer=None, valid=False)
    else:
        out.update(completion=json.dumps(value, ensure_ascii=False), answer=value, valid=True,
                   extract_error=None)
    elapsed = round((time.perf_counter() - start) * 1000, 3)
    out.update(latency_ms=elapsed, tool_ms=elapsed)
    return out


def _view(record: Mapping[str, Any]) -> dict[str, Any]:
    """What later steps and the output template see of a step: `steps.ID.answer` etc."""
    return {"answer": record.get("answer"), "skipped": bool(record.get("skipped")),
            "completion": record.get("completion"), "valid": bool(record.get("valid"))}


def _unrendered(why: str) -> dict[str, Any]:
    """A step that was not sent because its input could not be made from the answers before
    it: no answer, counted apart from request errors."""
    return {"answer": None, "valid": False, "unrendered": True,
            "extract_error": f"not sent: {why}"}


def final_answer(pipeline: Pipeline, row: Row, steps: Mapping[str, Mapping[str, Any]]
                 ) -> tuple[str | None, Extraction]:
    """The pipeline's output for a row: its text and the answer read from it."""
    views = {k: _view(v) for k, v in steps.items()}
    try:
        value = pipeline.output.evaluate({"input": row.input, "steps": views}, f"row {quote(row.id)}")
    except InputError as exc:
        return None, Extraction(None, False, f"output: {exc.message}")
    if value is None:
        return None, Extraction(None, False, "the output is null (a step it reads was skipped or "
                                "gave no answer)")
    if not isinstance(value, str):
        if pipeline.output_spec.type == "json":
            return json.dumps(value), Extraction(value, True)
        value = str(value)
    return value, extract(value, pipeline.output_spec)


async def score_step(step: Step, record: dict[str, Any], row: Row, services: Services | None
                     ) -> None:
    """A step's own prompt's metrics (built-in and configured) against the row's expected
    value for it, and whether it ran as the row says it should."""
    expected = (row.steps or {}).get(step.id, MISSING)
    failed = record.get("error") is not None and not record.get("tool_failed")
    if row.should_run and step.id in row.should_run and not record.get("not_run") \
            and not failed:
        record["should_run"] = bool(row.should_run[step.id])
        record["flow_correct"] = (not record.get("skipped")) == record["should_run"]
    if expected is MISSING:
        return
    record["expected"] = expected
    if record.get("not_run") or failed:
        return  # a tool step that failed is scored: it gave no answer
    record["correct"] = equals(record.get("answer"), expected) if not record.get("skipped") \
        else expected is None
    if record.get("skipped"):
        return
    extraction = Extraction(record.get("answer"), bool(record.get("valid")),
                            record.get("extract_error"))
    if step.prompt is None:
        # A tool step's answer is compared whole.
        record["scores"] = score_builtins(extraction, Row(row.id, row.input, expected),
                                          ("exact_match",))
        return
    if step.for_each is not None:
        # A loop's answer is a list: only exact_match compares it as a whole.
        names = tuple(n for n in step.prompt.metrics if n == "exact_match")
        record["scores"] = score_builtins(extraction, Row(row.id, row.input, expected), names)
        return
    # The step's metrics see the step's own input, as its prompt did.
    step_row = Row(row.id, record.get("input") or {}, expected)
    completion = record.get("completion")
    if completion is None or not step.prompt.configured_metrics:
        record["scores"] = score_builtins(extraction, step_row, step.prompt.metrics)
        return
    scores, details = await score_extraction(extraction, completion, step_row,
                                             step.prompt.metrics, step.prompt.configured_metrics,
                                             services)
    record["scores"] = scores
    if details:
        record["judges"] = details


async def run_row(pipeline: Pipeline, row: Row, position: int, sample: int,
                  ctx: RowContext) -> dict[str, Any]:
    """The stored row: the final answer and its scores, and every step's request and answer."""
    with row_budget():
        steps = await RowRunner(pipeline, ctx, sample).steps(row)
    for step in pipeline.steps:
        await score_step(step, steps[step.id], row, ctx.services)
    requests = list(_requests_of(steps))
    record: dict[str, Any] = {
        "run_id": ctx.run_id, "kind": "eval", "position": position, "row_id": row.id,
        "sample": sample, "input": row.input, "messages": [], "steps": steps,
        "cached": all(r.get("cached") for r in requests),
        "attempts": sum(r.get("attempts") or 0 for r in requests),
        "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in requests),
        "completion_tokens": sum(r.get("completion_tokens") or 0 for r in requests),
        "latency_ms": _critical_path(pipeline, steps),
    }
    models = [r.get("response_model") for r in requests if r.get("response_model")]
    fingerprints = [r.get("system_fingerprint") for r in requests if r.get("system_fingerprint")]
    record.update(response_model=models[0] if models else None,
                  system_fingerprint=fingerprints[0] if fingerprints else None)
    if row.has_expected:
        record["expected"] = row.expected
    # A failed request makes the row an error; a failed sql or tool step does not: its row is
    # scored, and its final answer says which step gave none.
    failed = [(k, s) for k, s in steps.items()
              if s.get("error") is not None and not s.get("tool_failed")]
    if failed:
        failed_id, failed_step = failed[0]
        record["error"] = f"step {failed_id}: {failed_step['error']}"
    else:
        text, extraction = final_answer(pipeline, row, steps)
        broken = [(k, s["error"]) for k, s in steps.items() if s.get("tool_failed")]
        if not extraction.valid and broken:
            extraction = Extraction(extraction.answer, False,
                                    f"step {broken[0][0]}: {broken[0][1]}")
        # No output text (a step it reads gave nothing): nothing for a judge or scorer to read.
        scores, details = await score_extraction(
            extraction, text or "", row, pipeline.metrics,
            pipeline.configured_metrics if text is not None else (), ctx.services)
        record.update(completion=text, answer=extraction.answer, valid=extraction.valid,
                      extract_error=extraction.error, scores=scores)
        if details:
            record["judges"] = details
    record["created_at"] = utcnow()
    return record


def _critical_path(pipeline: Pipeline, steps: Mapping[str, Mapping[str, Any]]) -> float:
    """Milliseconds from the row's start to its last answer, had every step taken the time
    its answer took: steps run as soon as what they read is there."""
    finish: dict[str, float] = {}
    for step_id in pipeline.order:
        step = pipeline.step(step_id)
        start = max((finish[d] for d in step.deps), default=0.0)
        finish[step_id] = start + float(steps[step_id].get("latency_ms") or 0)
    return max(finish.values(), default=0.0)


def _requests_of(steps: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """Every request a pipeline row made: one per step, one per item of a loop."""
    for st in steps.values():
        if not isinstance(st, Mapping):
            continue
        if isinstance(st.get("iterations"), list):  # a repeat_until step: each run's request
            yield from (i for i in st["iterations"] if isinstance(i, Mapping) and "messages" in i)
        elif isinstance(st.get("items"), list):
            yield from (i for i in st["items"] if isinstance(i, Mapping))
        elif "messages" in st:
            yield st


# --- the summary ------------------------------------------------------------------------------


class _Gap:
    """The composability gap, counted row by row: among answered rows with an expected final
    answer where at least one step has an expected value and every such step was answered
    correctly, the share whose final answer is wrong (Press et al., 2022)."""

    def __init__(self) -> None:
        self.n = 0
        self.wrong = 0

    def add(self, row: Mapping[str, Any]) -> None:
        if row.get("error") is not None or not row.get("has_expected", "expected" in row):
            return
        steps = row.get("steps") or {}
        judged = [s for s in steps.values() if isinstance(s, Mapping) and "correct" in s]
        if not judged or not all(s["correct"] for s in judged):
            return
        self.n += 1
        final_ok = (row.get("scores") or {}).get("exact_match")
        if final_ok is None:
            final_ok = 1.0 if row.get("valid") and equals(row.get("answer"), row.get("expected")) \
                else 0.0
        self.wrong += final_ok < 1

    def result(self) -> dict[str, Any]:
        return {"value": self.wrong / self.n if self.n else None, "n": self.n, "wrong": self.wrong}


def composability_gap(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    gap = _Gap()
    for row in rows:
        gap.add(row)
    return gap.result()


def _step_metrics(step: Step) -> list[Any]:
    if step.prompt is None:
        return [builtin("exact_match")]
    if step.for_each is None:
        return list(step.prompt.metric_objects)
    return [m for m in step.prompt.metric_objects if m.name == "exact_match"]


def summary_extra(pipeline: Pipeline, rows: Callable[[], Iterable[Mapping[str, Any]]]
                  ) -> dict[str, Any]:
    """What a pipeline adds to the common summary, in one pass over its stored rows that keeps
    only per-step score columns: steps (metrics and counts), the composability gap, control
    flow, and retries and spent tokens counted request by request (a row may mix cached and
    sent steps)."""
    columns: dict[str, dict[str, list[Any]]] = {s.id: {} for s in pipeline.steps}
    counts = {s.id: {"ran": 0, "skipped": 0, "errors": 0, "not_run": 0, "unrendered": 0}
              for s in pipeline.steps}
    flow: list[float] = []
    gap = _Gap()
    retries = 0
    spent = {"prompt": 0, "completion": 0}
    failed: dict[str, Any] = {}
    tool_ms = {s.id: 0.0 for s in pipeline.steps}
    exhausted = {s.id: 0 for s in pipeline.steps}
    for row in rows():
        gap.add(row)
        steps = row.get("steps") or {}
        for q in _requests_of(steps):
            if q.get("cached"):
                continue
            retries += max(0, int(q.get("attempts") or 0) - 1)
            spent["prompt"] += int(q.get("prompt_tokens") or 0)
            spent["completion"] += int(q.get("completion_tokens") or 0)
        for step_id, st in steps.items():
            if step_id not in counts or not isinstance(st, Mapping):
                continue
            tally = counts[step_id]
            tool_ms[step_id] += float(st.get("tool_ms") or 0)
            exhausted[step_id] += bool(st.get("iterations_exhausted"))
            if st.get("not_run"):
                tally["not_run"] += 1
            elif st.get("error") is not None:
                tally["errors"] += 1
            elif st.get("skipped"):
                tally["skipped"] += 1
            elif st.get("unrendered"):
                tally["unrendered"] += 1
            else:
                tally["ran"] += 1
            if isinstance(st.get("scores"), dict):
                fold_scores([st["scores"]], columns[step_id])
            if "flow_correct" in st:
                flow.append(1.0 if st["flow_correct"] else 0.0)
            for metric, detail in (st.get("judges") or {}).items():
                if isinstance(detail, Mapping) and detail.get("error") is not None:
                    entry = failed.setdefault(f"{step_id}.{metric}", {"count": 0, "rows": []})
                    entry["count"] += 1
                    if len(entry["rows"]) < SCORING_ERRORS_SHOWN:
                        entry["rows"].append({"row_id": row.get("row_id"), "kind": row.get("kind"),
                                              "sample": row.get("sample"),
                                              "error": detail["error"]})
    steps_out = {s.id: {"prompt": s.prompt_rel, "prompt_version": s.version,
                        "metrics": aggregate_columns(_step_metrics(s), columns[s.id]),
                        **counts[s.id],
                        **({"tool_ms": round(tool_ms[s.id], 3)} if s.tool is not None else {}),
                        **({"iterations_exhausted": exhausted[s.id]}
                           if s.repeat_until is not None else {})}
                 for s in pipeline.steps}
    return {"fewshot_metrics": {},
            "summary": {"retries": retries, "no_text": 0, "spent_tokens": spent, "kind": "pipeline",
                        "tool_ms": round(sum(tool_ms.values()), 3),
                        "steps": steps_out, "composability_gap": gap.result(),
                        "control_flow": share(flow) if flow else None},
            "step_scoring_errors": failed}
