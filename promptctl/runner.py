"""Evaluation: plan every request, run them concurrently, persist rows as they arrive.

Everything that can be wrong with the input is found while planning, before
any request is sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import secrets
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from promptctl.config import Config, Price
from promptctl.consistency import analyze
from promptctl.errors import InputError, PromptctlError
from promptctl.evalsets import EvalSet, Row, load_evalset
from promptctl.gitinfo import GitState
from promptctl.metrics import aggregate_columns, fold_scores, percentiles
from promptctl.prompts import Prompt
from promptctl.providers import ChatRequest, Provider, RequestFailed, ResolvedModel
from promptctl.ratelimit import RateLimiter
from promptctl.scoring import extract, score_row
from promptctl.store import RowRecord, RunRecord, Store, utcnow

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
FLUSH_ROWS = 64
FLUSH_SECONDS = 0.1

ProgressFn = Callable[["Progress"], None]


def new_run_id() -> str:
    """Short, sortable, unique: 10 base32 digits of milliseconds, then 4 random ones."""
    ms = time.time_ns() // 1_000_000
    head = "".join(_CROCKFORD[(ms >> (5 * i)) & 31] for i in reversed(range(10)))
    tail = "".join(secrets.choice(_CROCKFORD) for _ in range(4))
    return head + tail


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One request to make: a row (or few-shot example), its sample index and its messages."""

    kind: str
    position: int
    row: Row
    sample: int
    messages: list[dict[str, str]]


@dataclass
class Progress:
    """Counters reported to the progress callback after every row."""

    total: int
    done: int = 0
    errors: int = 0
    retries: int = 0
    cached: int = 0
    spent_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)


# Plans of up to this many requests keep them rendered (see `plan`).
KEEP_REQUESTS = 5000


class Plan:
    """Every request of a run, rendered as it is iterated: a 50,000-row run never holds
    50,000 rendered requests. `plan()` renders everything once first, so bad input is
    found before anything is sent."""

    def __init__(self, prompt: Prompt, evalset: EvalSet, *, limit: int | None = None,
                 repeat: int = 1, skip: Collection[tuple[str, str, int]] = ()) -> None:
        self.prompt = prompt
        self.evalset = evalset
        self.limit = limit
        self.repeat = repeat
        self.skip = skip  # (kind, row id, sample) already answered: a resume sends the rest
        self._kept: list[WorkItem] | None = None

    def rows(self) -> Iterator[Row]:
        return itertools.islice(self.evalset, self.limit)

    @property
    def eval_rows(self) -> int:
        n = len(self.evalset)
        return n if self.limit is None else min(n, self.limit)

    def keys(self) -> Iterator[tuple[str, str, int]]:
        """(kind, row id, sample) of every request, without rendering."""
        for kind, group in (("fewshot", iter(self.prompt.examples)), ("eval", self.rows())):
            for row in group:
                for sample in range(self.repeat):
                    if (kind, row.id, sample) not in self.skip:
                        yield kind, row.id, sample

    def __len__(self) -> int:
        if not self.skip:
            return (len(self.prompt.examples) + self.eval_rows) * self.repeat
        return sum(1 for _ in self.keys())

    def __iter__(self) -> Iterator[WorkItem]:
        if self._kept is not None:
            return (i for i in self._kept if (i.kind, i.row.id, i.sample) not in self.skip)
        return self._render()

    def _render(self) -> Iterator[WorkItem]:
        # A system prompt or few-shot turn rendered for every row is the same text each
        # time: a message equal to the previous row's at the same place shares its object.
        previous: list[dict[str, str]] = []
        for kind, group in (("fewshot", iter(self.prompt.examples)), ("eval", self.rows())):
            for position, row in enumerate(group):
                samples = [s for s in range(self.repeat) if (kind, row.id, s) not in self.skip]
                if not samples:
                    continue
                try:
                    messages = self.prompt.render(row.input, row_id=row.id)
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


def plan(prompt: Prompt, evalset: EvalSet, *, limit: int | None = None,
         repeat: int = 1) -> Plan:
    """Check every row and few-shot example renders; raise before anything is sent."""
    result = Plan(prompt, evalset, limit=limit, repeat=repeat)
    if "regex" in prompt.metrics:
        for row in result.rows():
            if row.pattern is None:
                raise InputError(f"metric regex needs a pattern in every row; row {row.id!r} has none",
                                 file=evalset.path, line=row.line,
                                 fix='add "pattern": "..." to the row, or drop regex from metrics')
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


def cache_key(cache_url: str, model: str, messages: list[dict[str, str]], params: dict[str, Any],
              sample: int) -> str:
    """sha256 of everything that determines the answer."""
    blob = json.dumps({"url": cache_url, "model": model, "messages": messages, "params": params,
                       "sample": sample}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _cost(price: Price | None, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
    if price is None:
        return None
    return ((prompt_tokens or 0) * price.input + (completion_tokens or 0) * price.output) / 1e6


@dataclass
class EvalOptions:
    """How to run: concurrency and cache behaviour."""

    concurrency: int | None = None
    limit: int | None = None
    repeat: int = 1
    use_cache: bool = True
    cache_only: bool = False
    rpm: int | None = None
    tpm: int | None = None


class LazyProvider:
    """Opens the provider on the first cache miss, so a fully cached run never imports the SDK
    (about 0.8 s) nor starts a local model server."""

    def __init__(self, opener: Callable[[], Provider]) -> None:
        self._opener = opener
        self._provider: Provider | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Provider:
        async with self._lock:
            if self._provider is None:
                provider = self._opener()
                try:
                    await provider.start()
                except BaseException:
                    await provider.aclose()
                    raise
                self._provider = provider
            return self._provider

    @property
    def opened(self) -> Provider | None:
        return self._provider

    async def aclose(self) -> None:
        if self._provider is not None:
            await self._provider.aclose()


async def execute(items: Plan, *, run_id: str, prompt: Prompt, model: str,
                  cache_url: str, provider: LazyProvider | None, store: Store, concurrency: int,
                  use_cache: bool, cache_only: bool, price: Price | None,
                  progress: ProgressFn | None = None, limiter: RateLimiter | None = None) -> Progress:
    """Send every item through the provider (or the cache); each answer is stored as it arrives."""
    params = prompt.request_params
    max_tokens = int(params.get("max_tokens") or params.get("max_completion_tokens") or 256)
    state = Progress(total=len(items))
    buffer: list[dict[str, Any]] = []
    cache_buffer: list[tuple[str, dict[str, Any]]] = []
    last_flush = time.monotonic()
    fatal: list[BaseException] = []

    def flush() -> None:
        nonlocal last_flush
        if buffer or cache_buffer:
            # One transaction: a commit per answer is most of the store's cost.
            store.write_rows(cast("list[RowRecord]", buffer), cache=cache_buffer)
            buffer.clear()
            cache_buffer.clear()
        last_flush = time.monotonic()

    async def one(item: WorkItem) -> None:
        key = cache_key(cache_url, model, item.messages, params, item.sample)
        # --cache-only reads the cache even for a run started with --no-cache (a resume):
        # the check before the run found every answer there.
        hit = store.cache_get(key) if use_cache or cache_only else None
        record: dict[str, Any] = {
            "run_id": run_id, "kind": item.kind, "position": item.position, "row_id": item.row.id,
            "sample": item.sample, "input": item.row.input, "messages": item.messages,
            "cached": hit is not None, "attempts": 0,
        }
        if item.row.has_expected:
            record["expected"] = item.row.expected
        response: dict[str, Any] | None = hit
        if hit is None and cache_only:
            record["error"] = "not in the cache (--cache-only sends nothing)"
        elif hit is None:
            assert provider is not None
            try:
                client = await provider.get()
                if limiter is not None:
                    # chars/4 is the usual estimate; the limit only needs to be conservative.
                    await limiter.acquire(sum(len(m["content"]) for m in item.messages) // 4
                                          + max_tokens)
                res = await client.complete(ChatRequest(model, item.messages, params))
            except RequestFailed as exc:
                record["error"] = str(exc)
                record["attempts"] = exc.attempts
                state.retries += max(0, exc.attempts - 1)
            else:
                response = {"text": res.text, "prompt_tokens": res.prompt_tokens,
                            "completion_tokens": res.completion_tokens, "model": res.model,
                            "system_fingerprint": res.system_fingerprint,
                            "latency_ms": res.latency_ms}
                record["attempts"] = res.attempts
                state.retries += res.attempts - 1
                if use_cache:
                    cache_buffer.append((key, response))
        if response is not None:
            extraction = extract(response["text"], prompt.output)
            record.update(
                completion=response["text"], answer=extraction.answer, valid=extraction.valid,
                extract_error=extraction.error,
                scores=score_row(extraction, item.row, prompt.metrics),
                prompt_tokens=response.get("prompt_tokens"),
                completion_tokens=response.get("completion_tokens"),
                latency_ms=response.get("latency_ms"), response_model=response.get("model"),
                system_fingerprint=response.get("system_fingerprint"))
        record["created_at"] = utcnow()  # when the answer arrived
        state.done += 1
        state.errors += "error" in record
        state.cached += hit is not None
        if hit is None and response is not None:
            state.spent_usd += _cost(price, response.get("prompt_tokens"),
                                     response.get("completion_tokens")) or 0.0
        buffer.append(record)
        # A sent request is written at once (a kill loses only what is in flight); rows
        # replayed from the cache cost nothing to redo, so they are batched for speed.
        if hit is None or len(buffer) >= FLUSH_ROWS or time.monotonic() - last_flush > FLUSH_SECONDS:
            flush()
        if progress is not None:
            progress(state)

    iterator: Iterator[WorkItem] = iter(items)

    async def worker() -> None:
        for item in iterator:
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
        flush()
    if fatal:
        raise fatal[0]
    return state


def summarize(store: Store, run_id: str, prompt: Prompt, price: Price | None,
              repeat: int = 1) -> dict[str, Any]:
    """Aggregate a run from its stored rows: metrics, few-shot metrics, tokens, cost, latency."""
    # Aggregated by the store and from score columns: no run-sized list of row dicts, so
    # memory stays flat as eval sets grow.
    totals = store.run_totals(run_id)
    ev, fs = totals["eval"], totals["fewshot"]
    counts = {"n": ev["n"], "errors": ev["errors"], "cached": ev["cached"],
              "retries": ev["retries"] + fs["retries"], "fewshot_n": fs["n"],
              "fewshot_errors": fs["errors"], "fewshot_cached": fs["cached"]}
    tokens = {"prompt": ev["prompt_tokens"] + fs["prompt_tokens"],
              "completion": ev["completion_tokens"] + fs["completion_tokens"]}
    spent = {"prompt": ev["spent_prompt_tokens"] + fs["spent_prompt_tokens"],
             "completion": ev["spent_completion_tokens"] + fs["spent_completion_tokens"]}
    scores = {kind: fold_scores(store.iter_scores(run_id, kind)) for kind in ("eval", "fewshot")}
    latencies = store.answered_column(run_id, "latency_ms")
    fingerprints = {f for f in store.answered_column(run_id, "system_fingerprint") if f}
    models = {m for m in store.answered_column(run_id, "response_model") if m}
    cost = _cost(price, tokens["prompt"], tokens["completion"])
    spent_cost = _cost(price, spent["prompt"], spent["completion"])
    consistency = analyze(cast(Any, store.iter_rows(run_id, kind="eval"))) if repeat > 1 else None
    return {
        "metrics": aggregate_columns(prompt.metrics, scores["eval"]),
        "fewshot_metrics": aggregate_columns(prompt.metrics, scores["fewshot"]),
        "summary": {
            **counts, "tokens": tokens,
            # cost_usd is what the run's answers cost (cached or not), the price of the
            # prompt on this eval set; spent_usd is what this run paid.
            "cost_usd": None if cost is None else round(cost, 8),
            "spent_usd": None if spent_cost is None else round(spent_cost, 8),
            "consistency": consistency,
            "latency_ms": percentiles(latencies),
            "system_fingerprints": sorted(fingerprints),
            "response_models": sorted(models),
        },
    }


def _rel(path: Path | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path.resolve())


def is_cached(store: Store, item: WorkItem, resolved: ResolvedModel, params: dict[str, Any]) -> bool:
    """Whether the answer to this request is already in the cache."""
    key = cache_key(resolved.cache_url, resolved.model, item.messages, params, item.sample)
    return store.cache_get(key) is not None


def _require_cached(store: Store, items: Plan, resolved: ResolvedModel,
                    params: dict[str, Any]) -> None:
    missing = 0
    first: WorkItem | None = None
    for item in items:
        if not is_cached(store, item, resolved, params):
            missing += 1
            first = first or item
    if first is not None:
        raise InputError(f"--cache-only: {missing} of {len(items)} requests are not in the cache "
                         f"(first: {first.kind} row {first.row.id!r}, sample {first.sample})",
                         fix="run once without --cache-only to send them, or check --model and "
                         "params match the cached run")


def run_eval(prompt: Prompt, resolved: ResolvedModel, *, store: Store, config: Config,
             evalset: EvalSet | None = None, options: EvalOptions | None = None,
             progress: ProgressFn | None = None, on_start: Callable[[str], None] | None = None,
             git: GitState | None = None) -> RunRecord:
    """Evaluate one prompt with one model; returns the stored run record.

    Rows are written as they arrive; on any interruption the run keeps them and
    `resume_eval` completes it.
    """
    from promptctl.gitinfo import git_state
    from promptctl.providers import preflight

    options = options or EvalOptions()
    if evalset is None:
        if prompt.evalset is None:
            raise InputError("no eval set: the prompt names none", file=prompt.path,
                             fix="add evalset: ../evalsets/NAME.jsonl to the prompt, or pass --evalset")
        evalset = load_evalset(prompt.evalset)
    items = plan(prompt, evalset, limit=options.limit, repeat=options.repeat)
    if options.cache_only:
        _require_cached(store, items, resolved, prompt.request_params)
    else:
        preflight(resolved, prompt.request_params)
    git = git or git_state(prompt.path, [prompt.path, evalset.path])
    concurrency = _concurrency(options, resolved, config)
    run_id = new_run_id()
    store.create_run({
        "id": run_id, "created_at": utcnow(), "status": "running", "prompt_name": prompt.name,
        "prompt_path": cast(str, _rel(prompt.path, config.root)), "prompt_version": prompt.version,
        "prompt_source": prompt.source, "git_commit": git.commit, "git_dirty": git.dirty,
        "git_branch": git.branch, "model": resolved.spec, "endpoint": resolved.endpoint_name,
        "base_url": resolved.cache_url, "params": prompt.request_params,
        "evalset_path": _rel(evalset.path, config.root), "evalset_version": evalset.version,
        "n_planned": items.eval_rows * items.repeat,
        "options": {"limit": options.limit, "repeat": options.repeat,
                    "concurrency": concurrency, "use_cache": options.use_cache,
                    "cache_only": options.cache_only, **_owner()},
    })
    if on_start is not None:
        on_start(run_id)
    return _complete(run_id, items, prompt, resolved, store=store, config=config, options=options,
                     concurrency=concurrency, progress=progress)


def _owner() -> dict[str, Any]:
    """Which process is running a run, so a second resume of it can be refused."""
    import os
    import socket

    return {"pid": os.getpid(), "host": socket.gethostname()}


def _still_running(run: RunRecord) -> bool:
    import os
    import socket

    owner = run.get("options") or {}
    if run["status"] != "running" or owner.get("host") != socket.gethostname() or not owner.get("pid"):
        return False
    if owner["pid"] == os.getpid():
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _concurrency(options: EvalOptions, resolved: ResolvedModel, config: Config) -> int:
    if options.concurrency:
        return options.concurrency
    if resolved.endpoint is None and config.concurrency:
        return config.concurrency
    return resolved.default_concurrency


def _complete(run_id: str, items: Plan, prompt: Prompt, resolved: ResolvedModel, *,
              store: Store, config: Config, options: EvalOptions, concurrency: int,
              progress: ProgressFn | None) -> RunRecord:
    from promptctl.providers import open_provider

    price = config.price(resolved.model, resolved.endpoint)
    lazy = None if options.cache_only else LazyProvider(
        lambda: open_provider(resolved, concurrency, prompt.request_params))
    ep = resolved.endpoint
    limiter = RateLimiter(options.rpm or (ep.rpm if ep else None), options.tpm or (ep.tpm if ep else None))
    status = "interrupted"
    try:
        asyncio.run(_execute_and_close(
            items, lazy, run_id=run_id, prompt=prompt, model=resolved.model,
            cache_url=resolved.cache_url, store=store, concurrency=concurrency,
            use_cache=options.use_cache, cache_only=options.cache_only, price=price,
            progress=progress, limiter=limiter if limiter.active else None))
        status = "complete"
    except PromptctlError:
        status = "failed"
        raise
    finally:
        result = summarize(store, run_id, prompt, price, repeat=options.repeat)
        opened = lazy.opened if lazy is not None else None
        if opened is not None:
            result["summary"].update(opened.describe())
        store.update_run(run_id, status=status, finished_at=utcnow(), **result)
    return store.get_run(run_id)


def _stored_evalset(run: RunRecord, config: Config) -> EvalSet:
    """The eval set a run used: the file if unchanged, else the file at the run's commit."""
    from promptctl.evalsets import load_evalset_bytes
    from promptctl.gitinfo import read_at_ref

    path = config.root / (run["evalset_path"] or "")
    current: EvalSet | None = None
    try:
        current = load_evalset(path)
    except InputError:
        current = None
    if current is not None and current.version == run["evalset_version"]:
        return current
    if run["git_commit"]:
        try:
            data, _ = read_at_ref(path, run["git_commit"])
        except InputError:
            data = b""
        if data:
            old = load_evalset_bytes(data, path)
            if old.version == run["evalset_version"]:
                return old
    raise InputError(f"the eval set of run {run['id']} has changed since it started and its "
                     "version cannot be found in git", file=path,
                     fix="start a new run: promptctl eval " + run["prompt_path"])


def resume_eval(run_ref: str, *, store: Store, config: Config, options: EvalOptions | None = None,
                progress: ProgressFn | None = None,
                on_start: Callable[[str], None] | None = None) -> RunRecord:
    """Finish a run: send only the rows it has no answer for (error rows are tried again).

    The prompt is rebuilt from the source stored with the run, so editing the
    file meanwhile does not mix two versions in one run.
    """
    from promptctl.prompts import parse_prompt
    from promptctl.providers import preflight, resolve_model

    run = store.get_run(run_ref)
    if _still_running(run):
        raise InputError(f"run {run['id']} is still being run by process {(run['options'] or {}).get('pid')}",
                         fix="wait for it to finish (or stop it), then resume")
    stored = run.get("options") or {}
    prompt = parse_prompt(run["prompt_source"].encode("utf-8"), config.root / run["prompt_path"])
    evalset = _stored_evalset(run, config)
    given = options or EvalOptions()
    options = EvalOptions(concurrency=given.concurrency or stored.get("concurrency"),
                          limit=stored.get("limit"), repeat=stored.get("repeat") or 1,
                          use_cache=given.use_cache and stored.get("use_cache", True),
                          cache_only=given.cache_only, rpm=given.rpm, tpm=given.tpm)
    plan(prompt, evalset, limit=options.limit, repeat=options.repeat)  # every row still renders
    done = store.answered_keys(run["id"])
    todo = Plan(prompt, evalset, limit=options.limit, repeat=options.repeat, skip=done)
    resolved = resolve_model(run["model"], config)
    if options.cache_only:
        _require_cached(store, todo, resolved, prompt.request_params)
    elif todo:
        preflight(resolved, prompt.request_params)
    if on_start is not None:
        on_start(run["id"])
    store.update_run(run["id"], status="running", options={**stored, **_owner()})
    return _complete(run["id"], todo, prompt, resolved, store=store, config=config, options=options,
                     concurrency=options.concurrency or resolved.default_concurrency,
                     progress=progress)


async def _execute_and_close(items: Plan, provider: LazyProvider | None,
                             **kwargs: Any) -> Progress:
    try:
        return await execute(items, provider=provider, **kwargs)
    finally:
        if provider is not None:
            await provider.aclose()
