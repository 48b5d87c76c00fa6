"""Running a pipeline: per row, its steps as a dependency graph, the steps that do not
depend on each other at the same time, every request through the run's gateway (cache,
retries, rate limits); each row stored as it finishes with every step's request and
answer; then end-to-end and per-step metrics, the composability gap and control-flow
correctness.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from promptctl.config import Config, Price
from promptctl.engine.gateway import Channel, Gateway, LazyProvider, Progress, ProgressFn
from promptctl.engine.lifecycle import EvalOptions, _owner_token, new_run_id
from promptctl.engine.send import RowWriter
from promptctl.errors import InputError, PromptctlError
from promptctl.evalsets import MISSING, EvalSet, Row
from promptctl.files import quote
from promptctl.pipelines import Pipeline, Step
from promptctl.project import relative
from promptctl.prompts import Prompt
from promptctl.providers import ResolvedModel
from promptctl.ratelimit import RateLimiter
from promptctl.scoring import Extraction, equals, extract
from promptctl.store import RunRecord, Store, utcnow


def model_of_pipeline(pipeline: Pipeline, override: str | None = None) -> str:
    """--model, else the pipeline's `model:`, else the model its prompts share."""
    if override:
        return override
    if pipeline.model:
        return pipeline.model
    models = sorted({s.prompt.model for s in pipeline.steps if s.prompt.model})
    if len(models) == 1:
        return models[0]
    if not models:
        raise InputError("no model: neither the pipeline nor its prompts name one",
                         file=pipeline.path, fix="add model: to the pipeline file, or pass --model")
    raise InputError(f"the pipeline's prompts name different models ({', '.join(models)})",
                     file=pipeline.path, fix="add model: to the pipeline file, or pass --model "
                     "(a run uses one model for every step)")


def evalset_of_pipeline(pipeline: Pipeline) -> EvalSet:
    if pipeline.evalset is None:
        raise InputError("no eval set: the pipeline names none", file=pipeline.path,
                         fix="add evalset: ../evalsets/NAME.jsonl to the pipeline, or pass "
                         "--evalset FILE")
    if not pipeline.evalset.exists():
        raise InputError(f"the eval set named by evalset: does not exist: {pipeline.evalset}",
                         file=pipeline.path, line=pipeline.evalset_line,
                         fix="fix the evalset: path (it is relative to the pipeline file's folder)")
    return pipeline.load_evalset()


def plan_rows(pipeline: Pipeline, evalset: EvalSet, limit: int | None = None) -> list[Row]:
    """The rows to run, each checked against every template of the pipeline first."""
    rows = list(evalset)[:limit] if limit is not None else list(evalset)
    pipeline.check_rows(rows, evalset.path)
    return rows


# --- one row ------------------------------------------------------------------------------


class _StepFailed(Exception):
    pass


class RowRunner:
    """Runs the steps of rows through one gateway and channel."""

    def __init__(self, pipeline: Pipeline, gateway: Gateway, channel: Channel,
                 concurrency: int) -> None:
        self.pipeline = pipeline
        self.gateway = gateway
        self.channel = channel
        self.slots = asyncio.Semaphore(max(1, concurrency))

    async def _request(self, step: Step, variables: dict[str, Any], row: Row) -> dict[str, Any]:
        prompt = step.prompt
        try:
            messages = prompt.render(variables, row_id=row.id)
        except InputError as exc:  # the prompt's own template, on an answer of another shape
            return {"input": variables, **_unrendered(exc.message)}
        async with self.slots:
            answer = await self.gateway.complete(self.channel, messages, prompt.request_params, 0)
        out: dict[str, Any] = {"input": variables, "messages": messages, "cached": answer.cached,
                               "attempts": answer.attempts}
        if answer.response is None:
            out["error"] = answer.error
            return out
        response = answer.response
        out.update(prompt_tokens=response.get("prompt_tokens"),
                   completion_tokens=response.get("completion_tokens"),
                   latency_ms=response.get("latency_ms"), response_model=response.get("model"),
                   system_fingerprint=response.get("system_fingerprint"))
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
            if step.for_each is None:
                record.update(await self._request(step, step.render_inputs(context, who), row))
                return record
            items = step.for_each.evaluate(context, who)
            if not isinstance(items, list):
                return {**record, **_unrendered(f"for_each gave {type(items).__name__}, not a "
                                                "list")}
            variables = [step.render_inputs({**context, "item": item, "index": i}, who)
                         for i, item in enumerate(items)]
        except InputError as exc:
            # The templates passed every check with stand-in answers, so what fails here is
            # a real answer of another shape (a step that gave no answer, a label where a
            # list was meant): a wrong answer downstream, not a failed request, so the row
            # is scored rather than made an error.
            return {**record, **_unrendered(exc.message)}
        done_items = await asyncio.gather(*(self._request(step, v, row) for v in variables))
        record["items"] = done_items
        errors = [d["error"] for d in done_items if d.get("error") is not None]
        if errors:
            record["error"] = f"{len(errors)} of {len(done_items)} items failed: {errors[0]}"
        record.update(answer=[d.get("answer") for d in done_items],
                      valid=all(d.get("valid") for d in done_items),
                      cached=all(d.get("cached") for d in done_items),
                      attempts=sum(d.get("attempts") or 0 for d in done_items),
                      prompt_tokens=sum(d.get("prompt_tokens") or 0 for d in done_items),
                      completion_tokens=sum(d.get("completion_tokens") or 0 for d in done_items),
                      latency_ms=max((d.get("latency_ms") or 0 for d in done_items), default=0))
        return record

    async def run_row(self, row: Row) -> dict[str, dict[str, Any]]:
        """Every step of one row; each starts once the steps it reads have finished."""
        views: dict[str, dict[str, Any]] = {}
        context: dict[str, Any] = {"input": row.input, "steps": views}
        tasks: dict[str, asyncio.Task[dict[str, Any]]] = {}

        async def one(step: Step) -> dict[str, Any]:
            record = await self._step(step, row, context, tasks)
            views[step.id] = {"answer": record.get("answer"), "skipped": bool(record.get("skipped")),
                              "completion": record.get("completion"),
                              "valid": bool(record.get("valid"))}
            return record

        for step_id in self.pipeline.order:
            tasks[step_id] = asyncio.ensure_future(one(self.pipeline.step(step_id)))
        try:
            results = await asyncio.gather(*tasks.values())
        except BaseException:
            for task in tasks.values():
                task.cancel()
            raise
        return {s.id: results[list(tasks).index(s.id)] for s in self.pipeline.steps}


def _unrendered(why: str) -> dict[str, Any]:
    """A step that was not sent because its input could not be made from the answers before
    it: no answer, counted apart from request errors."""
    return {"answer": None, "valid": False, "unrendered": True,
            "extract_error": f"not sent: {why}"}


def final_answer(pipeline: Pipeline, row: Row, steps: Mapping[str, Mapping[str, Any]]
                 ) -> tuple[str | None, Extraction]:
    """The pipeline's output for a row: its text and the answer read from it."""
    views = {k: {"answer": v.get("answer"), "skipped": bool(v.get("skipped")),
                 "completion": v.get("completion"), "valid": bool(v.get("valid"))}
             for k, v in steps.items()}
    try:
        value = pipeline.output.evaluate({"input": row.input, "steps": views}, f"row {quote(row.id)}")
    except InputError as exc:
        return None, Extraction(None, False, f"output: {exc.message}")
    if value is None:
        return None, Extraction(None, False, "the output is null (a step it reads was skipped or "
                                "gave no answer)")
    if not isinstance(value, str):
        if pipeline.output_spec.type == "json":
            import json

            return json.dumps(value), Extraction(value, True)
        value = str(value)
    return value, extract(value, pipeline.output_spec)


def score_step(step: Step, record: dict[str, Any], row: Row) -> None:
    """A step's own prompt's built-in metrics against the row's expected value for it, and
    whether it ran as the row says it should."""
    from promptctl.metrics.registry import score_builtins

    expected = (row.steps or {}).get(step.id, MISSING)
    if row.should_run and step.id in row.should_run and not record.get("not_run") \
            and record.get("error") is None:
        record["should_run"] = bool(row.should_run[step.id])
        record["flow_correct"] = (not record.get("skipped")) == record["should_run"]
    if expected is MISSING:
        return
    record["expected"] = expected
    if record.get("not_run") or record.get("error") is not None:
        return
    record["correct"] = equals(record.get("answer"), expected) if not record.get("skipped") \
        else expected is None
    if record.get("skipped"):
        return
    names = step.prompt.metrics if step.for_each is None else \
        tuple(n for n in step.prompt.metrics if n == "exact_match")
    extraction = Extraction(record.get("answer"), bool(record.get("valid")),
                            record.get("extract_error"))
    record["scores"] = score_builtins(extraction, Row(row.id, row.input, expected), names)


def row_record(run_id: str, position: int, row: Row, pipeline: Pipeline,
               steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The stored row: the final answer and its scores, and every step's request and answer."""
    from promptctl.metrics.registry import score_builtins

    for step in pipeline.steps:
        score_step(step, steps[step.id], row)
    requests = [r for s in steps.values()
                for r in (s.get("items") or ([s] if "messages" in s else []))]
    record: dict[str, Any] = {
        "run_id": run_id, "kind": "eval", "position": position, "row_id": row.id, "sample": 0,
        "input": row.input, "messages": [], "steps": steps,
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
    failed = [(k, s) for k, s in steps.items() if s.get("error") is not None]
    if failed:
        failed_id, failed_step = failed[0]
        record["error"] = f"step {failed_id}: {failed_step['error']}"
    else:
        text, extraction = final_answer(pipeline, row, steps)
        record.update(completion=text, answer=extraction.answer, valid=extraction.valid,
                      extract_error=extraction.error,
                      scores=score_builtins(extraction, row, pipeline.metrics))
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


# --- a run --------------------------------------------------------------------------------


async def send_rows(rows: Iterable[tuple[int, Row]], *, pipeline: Pipeline, run_id: str,
                    gateway: Gateway, channel: Channel, concurrency: int,
                    progress: ProgressFn | None = None) -> None:
    """Run every row (as many at once as requests may be in flight); store each as it ends."""
    runner = RowRunner(pipeline, gateway, channel, concurrency)
    writer = RowWriter(gateway.store, gateway)
    state = gateway.progress
    items: Iterator[tuple[int, Row]] = iter(rows)
    fatal: list[BaseException] = []

    async def worker() -> None:
        for position, row in items:
            if fatal:
                return
            try:
                steps = await runner.run_row(row)
            except PromptctlError as exc:
                fatal.append(exc)
                return
            record = row_record(run_id, position, row, pipeline, steps)
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


def run_pipeline(pipeline: Pipeline, resolved: ResolvedModel, *, store: Store, config: Config,
                 evalset: EvalSet | None = None, options: EvalOptions | None = None,
                 progress: ProgressFn | None = None, on_start: Callable[[str], None] | None = None,
                 git: Any = None) -> RunRecord:
    """Evaluate a pipeline with one model; returns the stored run record."""
    from promptctl.engine.jobs import concurrency_for
    from promptctl.gitinfo import git_state

    options = options or EvalOptions()
    evalset = evalset if evalset is not None else evalset_of_pipeline(pipeline)
    rows = plan_rows(pipeline, evalset, options.limit)
    if not options.cache_only and rows:
        from promptctl.providers import preflight

        preflight(resolved, pipeline.steps[0].prompt.request_params)
    git = git or git_state(pipeline.path, [*pipeline.files, evalset.path])
    concurrency = concurrency_for(options.concurrency, resolved, config)
    run_id = new_run_id()
    store.create_run({
        "id": run_id, "created_at": utcnow(), "status": "running", "prompt_name": pipeline.name,
        "prompt_path": relative(pipeline.path, config.root) or "",
        "prompt_version": pipeline.version, "prompt_source": pipeline.source,
        "git_commit": git.commit, "git_dirty": git.dirty, "git_branch": git.branch,
        "model": resolved.spec, "endpoint": resolved.endpoint_name, "base_url": resolved.cache_url,
        "params": {s.id: s.prompt.request_params for s in pipeline.steps},
        "evalset_path": relative(evalset.path, config.root), "evalset_version": evalset.version,
        "n_planned": len(rows), "owner": _owner_token(), "kind": "pipeline",
        "options": {"limit": options.limit, "repeat": 1, "concurrency": concurrency,
                    "use_cache": options.use_cache, "cache_only": options.cache_only,
                    "evalset_rows": len(evalset),
                    "prompts": {rel: {"version": p.version, "source": p.source}
                                for rel, p in pipeline.prompts.items()}},
    })
    if on_start is not None:
        on_start(run_id)
    return _send_and_finish(run_id, pipeline, list(enumerate(rows)), resolved, store=store,
                            config=config, options=options, concurrency=concurrency,
                            progress=progress, planned=len(rows), full=len(rows) == len(evalset))


def _send_and_finish(run_id: str, pipeline: Pipeline, todo: list[tuple[int, Row]],
                     resolved: ResolvedModel, *, store: Store, config: Config,
                     options: EvalOptions, concurrency: int, progress: ProgressFn | None,
                     planned: int, full: bool) -> RunRecord:
    from promptctl.providers import open_provider

    if options.timeout is not None:
        resolved = dataclasses.replace(resolved, request_timeout=options.timeout)
    price = config.price(resolved.model, resolved.endpoint)
    first = pipeline.steps[0].prompt.request_params
    lazy = None if options.cache_only else LazyProvider(
        lambda: open_provider(resolved, concurrency, first))
    ep = resolved.endpoint
    limiter = RateLimiter(options.rpm or (ep.rpm if ep else None),
                          options.tpm or (ep.tpm if ep else None))
    max_tokens = max(int(s.prompt.request_params.get("max_tokens")
                         or s.prompt.request_params.get("max_completion_tokens") or 256)
                     for s in pipeline.steps)
    channel = Channel(resolved, lazy, price, limiter if limiter.active else None,
                      max_tokens=max_tokens)
    gateway = Gateway(store, use_cache=options.use_cache, cache_only=options.cache_only,
                      progress=Progress(total=len(todo)))
    status = "interrupted"

    async def send() -> None:
        try:
            await send_rows(todo, pipeline=pipeline, run_id=run_id, gateway=gateway,
                            channel=channel, concurrency=concurrency, progress=progress)
        finally:
            if channel.provider is not None:
                await channel.provider.aclose()

    try:
        asyncio.run(send())
        status = "complete"
    except PromptctlError:
        status = "failed"
        raise
    finally:
        result = summarize_pipeline(store, run_id, pipeline, price)
        opened = lazy.opened if lazy is not None else None
        if opened is not None:
            result["summary"].update(opened.describe())
        covered = full and result["summary"]["n"] >= planned
        store.update_run(run_id, status=status, finished_at=utcnow(),
                         coverage="full" if covered and status == "complete" else "partial",
                         **result)
    return store.get_run(run_id)


def resume_pipeline(run: RunRecord, *, store: Store, config: Config, options: EvalOptions,
                    progress: ProgressFn | None = None,
                    on_start: Callable[[str], None] | None = None) -> RunRecord:
    """Finish a pipeline run: the rows without an answer (errors included) run again, with the
    pipeline and its prompts rebuilt from the sources stored with the run."""
    from promptctl.engine.jobs import concurrency_for
    from promptctl.engine.lifecycle import _describe_owner, _owner_alive, _stored_evalset
    from promptctl.providers import resolve_model

    previous = run.get("owner")
    if run["status"] == "running" and _owner_alive(previous):
        raise InputError(f"run {run['id']} is still being run by {_describe_owner(previous or '')}",
                         fix="wait for it to finish (or stop that process), then resume")
    stored = run.get("options") or {}
    pipeline = stored_pipeline(run, config)
    evalset = _stored_evalset(run, config)
    options = EvalOptions(concurrency=options.concurrency or stored.get("concurrency"),
                          limit=stored.get("limit"),
                          use_cache=options.use_cache and stored.get("use_cache", True),
                          cache_only=options.cache_only, rpm=options.rpm, tpm=options.tpm,
                          timeout=options.timeout)
    rows = plan_rows(pipeline, evalset, options.limit)
    done = {row_id for kind, row_id, _ in store.answered_keys(run["id"]) if kind == "eval"}
    todo = [(i, r) for i, r in enumerate(rows) if r.id not in done]
    resolved = resolve_model(run["model"], config)
    if not store.claim_run(run["id"], _owner_token(), previous):
        raise InputError(f"run {run['id']} was just taken over by another process",
                         fix="let that one finish it; see `promptctl show " + run["id"] + "`")
    if on_start is not None:
        on_start(run["id"])
    return _send_and_finish(run["id"], pipeline, todo, resolved, store=store, config=config,
                            options=options,
                            concurrency=concurrency_for(options.concurrency, resolved, config),
                            progress=progress, planned=len(rows), full=len(rows) == len(evalset))


def stored_pipeline(run: RunRecord, config: Config) -> Pipeline:
    """The pipeline of a run as it was: its file and its prompts from the sources stored."""
    from promptctl.files import Reference
    from promptctl.pipelines import _rel, parse_pipeline
    from promptctl.prompts import parse_prompt

    sources = (run.get("options") or {}).get("prompts") or {}

    def load(path: Any, ref: Reference) -> Prompt:
        rel = _rel(path, config.root)
        if rel not in sources:
            raise InputError(f"run {run['id']} did not store the prompt {rel}", file=path,
                             fix="start a new run")
        return parse_prompt(str(sources[rel]["source"]).encode("utf-8"), path, config.root)

    return parse_pipeline(run["prompt_source"].encode("utf-8"), config.root / run["prompt_path"],
                          config.root, load=load)


# --- the summary --------------------------------------------------------------------------


def composability_gap(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Among answered rows with an expected final answer where at least one step has an
    expected value and every such step was answered correctly, the share whose final answer
    is wrong (Press et al., 2022), with that count of rows as `n`."""
    n = wrong = 0
    for row in rows:
        if row.get("error") is not None or not row.get("has_expected", "expected" in row):
            continue
        steps = row.get("steps") or {}
        judged = [s for s in steps.values() if isinstance(s, Mapping) and "correct" in s]
        if not judged or not all(s["correct"] for s in judged):
            continue
        n += 1
        final_ok = (row.get("scores") or {}).get("exact_match")
        if final_ok is None:
            final_ok = 1.0 if row.get("valid") and equals(row.get("answer"), row.get("expected")) \
                else 0.0
        wrong += final_ok < 1
    return {"value": wrong / n if n else None, "n": n, "wrong": wrong}


def summarize_pipeline(store: Store, run_id: str, pipeline: Pipeline,
                       price: Price | None) -> dict[str, Any]:
    """A pipeline run's aggregates from its stored rows."""
    from promptctl.engine.gateway import cost_of
    from promptctl.metrics.aggregates import aggregate, percentiles, share

    rows = list(store.iter_rows(run_id, kind="eval"))
    totals = store.run_totals(run_id)["eval"]
    answered = [r for r in rows if r.get("error") is None]
    step_scores: dict[str, list[dict[str, Any]]] = {s.id: [] for s in pipeline.steps}
    step_counts: dict[str, dict[str, int]] = {s.id: {"ran": 0, "skipped": 0, "errors": 0,
                                                     "not_run": 0, "unrendered": 0}
                                              for s in pipeline.steps}
    flow: list[float] = []
    for row in rows:
        for step_id, st in (row.get("steps") or {}).items():
            if step_id not in step_counts or not isinstance(st, Mapping):
                continue
            counts = step_counts[step_id]
            if st.get("not_run"):
                counts["not_run"] += 1
            elif st.get("error") is not None:
                counts["errors"] += 1
            elif st.get("skipped"):
                counts["skipped"] += 1
            elif st.get("unrendered"):
                counts["unrendered"] += 1
            else:
                counts["ran"] += 1
            if isinstance(st.get("scores"), dict):
                step_scores[step_id].append(st["scores"])
            if "flow_correct" in st:
                flow.append(1.0 if st["flow_correct"] else 0.0)
    steps = {s.id: {"prompt": s.prompt_rel, "prompt_version": s.prompt.version,
                    "metrics": aggregate(s.prompt.metric_objects if s.for_each is None
                                         else [m for m in s.prompt.metric_objects
                                               if m.name == "exact_match"],
                                         step_scores[s.id]),
                    **step_counts[s.id]} for s in pipeline.steps}
    flow_result = share(flow) if flow else None
    tokens = {"prompt": totals["prompt_tokens"], "completion": totals["completion_tokens"]}
    # What this run paid: the requests that did not come from the cache, step by step (a
    # row may mix cached and sent steps).
    sent = [q for r in rows for q in _requests_of(r) if not q.get("cached")]
    spent = {"prompt": sum(int(q.get("prompt_tokens") or 0) for q in sent),
             "completion": sum(int(q.get("completion_tokens") or 0) for q in sent)}
    cost = cost_of(price, tokens["prompt"], tokens["completion"])
    spent_cost = cost_of(price, spent["prompt"], spent["completion"])
    latencies = [float(r.get("latency_ms") or 0) for r in answered
                 if r.get("latency_ms") is not None]
    return {
        "metrics": aggregate(pipeline.metric_objects, [r.get("scores") or {} for r in answered]),
        "fewshot_metrics": {},
        "errors": totals["errors"],
        "summary": {
            "n": totals["n"], "errors": totals["errors"], "cached": totals["cached"],
            "retries": sum(max(0, int(q.get("attempts") or 0) - 1) for q in sent),
            "fewshot_n": 0, "fewshot_errors": 0, "fewshot_cached": 0, "no_text": 0,
            "tokens": tokens,
            "cost_usd": None if cost is None else round(cost, 8),
            "spent_usd": None if spent_cost is None else round(spent_cost, 8),
            "consistency": None,
            "latency_ms": percentiles(latencies),
            "system_fingerprints": sorted({str(r["system_fingerprint"]) for r in answered
                                           if r.get("system_fingerprint")}),
            "response_models": sorted({str(r["response_model"]) for r in answered
                                       if r.get("response_model")}),
            "kind": "pipeline",
            "steps": steps,
            "composability_gap": composability_gap(rows),
            "control_flow": flow_result,
        },
    }


def _requests_of(row: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every request a stored pipeline row made: one per step, one per item of a loop."""
    out: list[Mapping[str, Any]] = []
    for st in (row.get("steps") or {}).values():
        if not isinstance(st, Mapping):
            continue
        if isinstance(st.get("items"), list):
            out += [i for i in st["items"] if isinstance(i, Mapping)]
        elif "messages" in st:
            out.append(st)
    return out


# --- what to run --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PipelineJob:
    """One pipeline run to make: a pipeline version, its eval set, a model."""

    pipeline: Pipeline
    evalset: EvalSet
    resolved: ResolvedModel
    git: Any = None


def pipeline_at_ref(path: Any, ref: str, *, with_evalset: bool = True
                    ) -> tuple[Pipeline, EvalSet | None, Any]:
    """The pipeline as committed at `ref`, with the prompts it names and its eval set at the
    same commit, read from git without touching the work tree."""
    from pathlib import Path

    from promptctl.engine.jobs import _rel_in
    from promptctl.evalsets import load_evalset_bytes
    from promptctl.files import Reference
    from promptctl.gitinfo import GitState, open_repo
    from promptctl.pipelines import parse_pipeline
    from promptctl.prompts import parse_prompt

    path = Path(path)
    repo = open_repo(path, purpose="--ref needs the pipeline to live in a git work tree")
    commit = repo.resolve(ref)
    data = repo.read(commit, _rel_in(path, repo.root))
    if data is None:
        raise InputError(f"file did not exist at {ref} ({commit[:12]})", file=path,
                         fix="choose a ref where the file exists")

    def load(p: Path, where: Reference) -> Prompt:
        rel = _rel_in(p, repo.root)
        blob = repo.read(commit, rel)
        if blob is None:
            raise InputError(f"the prompt {rel} did not exist at {ref} ({commit[:12]})",
                             file=where.file, line=where.line,
                             fix="choose a ref where it exists")
        return parse_prompt(blob, p, repo.root)

    pipeline = parse_pipeline(data, path, repo.root, load=load)
    evalset = None
    if with_evalset and pipeline.evalset is not None:
        set_rel = _rel_in(pipeline.evalset, repo.root)
        set_data = repo.read(commit, set_rel)
        if set_data is None:
            raise InputError(f"the eval set {set_rel} did not exist at {ref} ({commit[:12]})",
                             file=path, line=pipeline.evalset_line,
                             fix="choose a ref where it exists, or pass --evalset FILE")
        evalset = load_evalset_bytes(set_data, pipeline.evalset)
    return pipeline, evalset, GitState(root=repo.root, commit=commit, dirty=False, branch=None)


def build_pipeline_jobs(paths: Iterable[Any], *, models: list[str], evalset: Any,
                        ref: str | None, config: Config) -> list[PipelineJob]:
    """One job per pipeline and model, everything loaded and checked before any run starts."""
    from promptctl.evalsets import load_evalset
    from promptctl.pipelines import load_pipeline
    from promptctl.project import check_belongs
    from promptctl.providers import resolve_model

    forced = load_evalset(evalset) if evalset is not None else None
    jobs: list[PipelineJob] = []
    for path in paths:
        check_belongs(path, config)
        git = None
        the_set: EvalSet | None = None
        if ref is not None:
            pipeline, the_set, git = pipeline_at_ref(path, ref, with_evalset=forced is None)
        else:
            pipeline = load_pipeline(path, config.root)
        the_set = forced or the_set or evalset_of_pipeline(pipeline)
        plan_rows(pipeline, the_set)
        specs = list(models) or [model_of_pipeline(pipeline)]
        jobs.extend(PipelineJob(pipeline, the_set, resolve_model(m, config), git) for m in specs)
    return jobs


def run_pipeline_job(job: PipelineJob, *, store: Store, config: Config,
                     options: EvalOptions | None = None, progress: ProgressFn | None = None,
                     on_start: Callable[[str], None] | None = None) -> RunRecord:
    return run_pipeline(job.pipeline, job.resolved, store=store, config=config,
                        evalset=job.evalset, options=options, progress=progress,
                        on_start=on_start, git=job.git)


# --- a prompt or a pipeline, wherever a command takes a prompt file --------------------------


Target = Prompt | Pipeline


@dataclasses.dataclass(frozen=True)
class TargetAt:
    """A prompt or pipeline as committed at a ref, its eval set there (if any), the commit."""

    prompt: Target
    evalset: EvalSet | None
    git: Any


def load_target(path: Any, root: Any = None) -> Target:
    """The prompt or pipeline file at `path` (a pipeline says `kind: pipeline`)."""
    from pathlib import Path

    from promptctl.pipelines import is_pipeline_file, load_pipeline
    from promptctl.prompts import load_prompt

    if is_pipeline_file(Path(path)):
        return load_pipeline(path, root)
    return load_prompt(path, root)


def target_at_ref(path: Any, ref: str, *, with_evalset: bool = True) -> TargetAt:
    """`at_ref` for a prompt or a pipeline file."""
    from pathlib import Path

    from promptctl.engine.jobs import _rel_in, at_ref
    from promptctl.gitinfo import open_repo
    from promptctl.pipelines import is_pipeline_text

    repo = open_repo(Path(path), purpose="--ref needs the file to live in a git work tree")
    data = repo.read(repo.resolve(ref), _rel_in(Path(path), repo.root))
    if data is not None and is_pipeline_text(data):
        pipeline, evalset, git = pipeline_at_ref(path, ref, with_evalset=with_evalset)
        return TargetAt(pipeline, evalset, git)
    at = at_ref(Path(path), ref, with_evalset=with_evalset)
    return TargetAt(at.prompt, at.evalset, at.git)


def evalset_of_target(target: Target) -> EvalSet:
    from promptctl.engine.jobs import evalset_of

    if isinstance(target, Pipeline):
        return evalset_of_pipeline(target)
    return evalset_of(target)


def model_of_target(target: Target, override: str | None = None) -> str:
    from promptctl.engine.jobs import model_of

    if isinstance(target, Pipeline):
        return model_of_pipeline(target, override)
    return model_of(target, override)


def run_target(target: Target, resolved: ResolvedModel, *, store: Store, config: Config,
               evalset: EvalSet | None = None, options: EvalOptions | None = None,
               git: Any = None) -> RunRecord:
    """`run_eval` for a prompt, `run_pipeline` for a pipeline."""
    from promptctl.engine.lifecycle import run_eval

    if isinstance(target, Pipeline):
        return run_pipeline(target, resolved, store=store, config=config, evalset=evalset,
                            options=options, git=git)
    return run_eval(target, resolved, store=store, config=config, evalset=evalset,
                    options=options, git=git)
