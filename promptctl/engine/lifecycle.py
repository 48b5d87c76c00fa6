"""A run from start to finish: created, owned by one process, sent, summarised, resumed.

Rows are written as they arrive; on any interruption the run keeps them and
`resume_eval` finishes it. Whether a run covered its whole eval set, and how many of
its rows failed, is recorded when it ends: run selection relies on both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from promptctl.config import Config
from promptctl.engine.gateway import (
    Channel,
    Gateway,
    LazyProvider,
    Progress,
    ProgressFn,
    Services,
    close_channels,
    in_cache,
)
from promptctl.engine.jobs import Job, concurrency_for
from promptctl.engine.plan import RequestPlan, WorkItem, plan_requests
from promptctl.engine.send import send_all
from promptctl.engine.summary import add_usage, summarize
from promptctl.errors import InputError, PromptctlError
from promptctl.evalsets import EvalSet, load_evalset, load_evalset_bytes
from promptctl.gitinfo import git_state
from promptctl.project import relative
from promptctl.prompts import Prompt
from promptctl.providers import ResolvedModel
from promptctl.ratelimit import RateLimiter
from promptctl.store import RunRecord, Store, utcnow

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_run_id() -> str:
    """Short, sortable, unique: 10 base32 digits of milliseconds, then 4 random ones."""
    ms = time.time_ns() // 1_000_000
    head = "".join(_CROCKFORD[(ms >> (5 * i)) & 31] for i in reversed(range(10)))
    tail = "".join(secrets.choice(_CROCKFORD) for _ in range(4))
    return head + tail


@dataclass
class EvalOptions:
    """How to run: concurrency, sample count, row limit and cache behaviour."""

    concurrency: int | None = None
    limit: int | None = None
    repeat: int = 1
    use_cache: bool = True
    cache_only: bool = False
    rpm: int | None = None
    tpm: int | None = None
    timeout: float | None = None
    # Send through the endpoint's batch API (see engine/batch.py).
    batch: bool = False


def _owner_token() -> str:
    """Names the process running a run: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _describe_owner(owner: str) -> str:
    host, _, rest = owner.partition(":")
    return f"process {rest.partition(':')[0]} on {host}"


def _owner_alive(owner: str | None) -> bool:
    """Whether the process named by `owner` still runs (on this host; another host's
    process cannot be checked, so it is taken as alive)."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname():
        return True
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def require_cached(store: Store, plan: RequestPlan, resolved: ResolvedModel) -> None:
    """--cache-only: every request must be in the cache, or nothing runs."""
    params = plan.prompt.request_params
    missing = 0
    first: WorkItem | None = None
    for item in plan:
        if not in_cache(store, resolved, item.messages, params, item.sample):
            missing += 1
            first = first or item
    if first is not None:
        raise InputError(f"--cache-only: {missing} of {len(plan)} requests are not in the cache "
                         f"(first: {first.kind} row {first.row.id!r}, sample {first.sample})",
                         fix="run once without --cache-only to send them, or check --model and "
                         "params match the cached run")


def _preflight(store: Store, plan: RequestPlan, resolved: ResolvedModel, cache_only: bool) -> None:
    from promptctl.providers import preflight

    if cache_only:
        require_cached(store, plan, resolved)
    elif len(plan):
        preflight(resolved, plan.prompt.request_params)


def metric_identities(prompt: Prompt) -> dict[str, Any]:
    """What defines the prompt's configured metrics (a judge prompt's sha256), recorded when
    a run starts so a resume can tell whether they changed."""
    found = {m.name: m.identity for m in prompt.configured_metrics if m.identity}
    return {"metric_identity": found} if found else {}


def check_identities(run: RunRecord, prompt: Prompt) -> None:
    """A resumed run must score its remaining rows as it scored the first ones."""
    recorded = (run.get("options") or {}).get("metric_identity") or {}
    now = metric_identities(prompt).get("metric_identity", {})
    for name in sorted(set(recorded) | set(now)):
        if recorded.get(name) != now.get(name):
            raise InputError(f"run {run['id']}: metric {name} has changed since the run started "
                             f"(was {recorded.get(name)}, now {now.get(name)})",
                             fix="start a new run (promptctl eval), or restore the judge prompt; "
                             "to score stored completions again use promptctl rescore")


def run_eval(prompt: Prompt, resolved: ResolvedModel, *, store: Store, config: Config,
             evalset: EvalSet | None = None, options: EvalOptions | None = None,
             progress: ProgressFn | None = None, on_start: Callable[[str], None] | None = None,
             git: Any = None) -> RunRecord:
    """Evaluate one prompt with one model; returns the stored run record."""
    from promptctl.engine.jobs import evalset_of

    options = options or EvalOptions()
    evalset = evalset if evalset is not None else evalset_of(prompt)
    plan = plan_requests(prompt, evalset, limit=options.limit, repeat=options.repeat)
    if options.batch:
        from promptctl.engine.batch import require_batch

        require_batch(resolved)
    _preflight(store, plan, resolved, options.cache_only)
    git = git or git_state(prompt.path, [prompt.path, evalset.path])
    concurrency = concurrency_for(options.concurrency, resolved, config)
    run_id = new_run_id()
    owner = _owner_token()
    store.create_run({
        "id": run_id, "created_at": utcnow(), "status": "running", "prompt_name": prompt.name,
        "prompt_path": relative(prompt.path, config.root) or "", "prompt_version": prompt.version,
        "prompt_source": prompt.source, "git_commit": git.commit, "git_dirty": git.dirty,
        "git_branch": git.branch, "model": resolved.spec, "endpoint": resolved.endpoint_name,
        "base_url": resolved.cache_url, "params": prompt.request_params,
        "evalset_path": relative(evalset.path, config.root), "evalset_version": evalset.version,
        "n_planned": plan.eval_rows * plan.repeat, "owner": owner, "kind": "prompt",
        "options": {"limit": options.limit, "repeat": options.repeat,
                    "concurrency": concurrency, "use_cache": options.use_cache,
                    "cache_only": options.cache_only, "evalset_rows": len(evalset),
                    **({"batch": True} if options.batch else {}),
                    **metric_identities(prompt)},
    })
    if on_start is not None:
        on_start(run_id)
    return _send_and_finish(run_id, plan, resolved, store=store, config=config, options=options,
                            concurrency=concurrency, progress=progress, full=plan)


def run_job(job: Job, *, store: Store, config: Config, options: EvalOptions | None = None,
            progress: ProgressFn | None = None,
            on_start: Callable[[str], None] | None = None) -> RunRecord:
    """`run_eval` for a job built by `build_jobs`."""
    return run_eval(job.prompt, job.resolved, store=store, config=config, evalset=job.evalset,
                    options=options, progress=progress, on_start=on_start, git=job.git)


def _send_and_finish(run_id: str, todo: RequestPlan, resolved: ResolvedModel, *, store: Store,
                     config: Config, options: EvalOptions, concurrency: int,
                     progress: ProgressFn | None, full: RequestPlan) -> RunRecord:
    from promptctl.providers import open_provider

    prompt = todo.prompt
    if options.timeout is not None:
        resolved = dataclasses.replace(resolved, request_timeout=options.timeout)
    price = config.price(resolved.model, resolved.endpoint)
    if options.batch:
        from promptctl.engine.batch import batch_price

        price = batch_price(price, resolved)
    lazy = None if options.cache_only else LazyProvider(
        lambda: open_provider(resolved, concurrency, prompt.request_params))
    ep = resolved.endpoint
    limiter = RateLimiter(options.rpm or (ep.rpm if ep else None), options.tpm or (ep.tpm if ep else None))
    params = prompt.request_params
    channel = Channel(resolved, lazy, price, limiter if limiter.active else None,
                      max_tokens=int(params.get("max_tokens") or params.get("max_completion_tokens")
                                     or 256))
    gateway = Gateway(store, use_cache=options.use_cache, cache_only=options.cache_only,
                      progress=Progress(total=len(todo)))
    # --timeout is the run's: a judge on the same slow server needs it as much.
    services = Services(gateway, config, concurrency, lambda r, c: open_provider(
        r if options.timeout is None else dataclasses.replace(r, request_timeout=options.timeout),
        c, {}))
    status = "interrupted"
    extra: dict[str, Any] = {}
    try:
        if options.batch:
            from promptctl.engine.batch import send_batched

            asyncio.run(send_batched(todo, run_id=run_id, gateway=gateway, channel=channel,
                                     progress=progress, services=services,
                                     concurrency=concurrency, extra=extra))
        else:
            asyncio.run(_send(todo, run_id, gateway, channel, concurrency, progress, services))
        status = "complete"
    except PromptctlError:
        status = "failed"
        raise
    finally:
        before = (store.get_run(run_id).get("summary") or {}).get("scorers")
        result = summarize(store, run_id, prompt, price, repeat=options.repeat,
                           scorers=add_usage(before, services.usage()))
        result["summary"].update(extra)
        opened = lazy.opened if lazy is not None else None
        if opened is not None:
            result["summary"].update(opened.describe())
        expected = full.eval_rows * full.repeat
        covered = full.covers_evalset and result["summary"]["n"] >= expected
        store.update_run(run_id, status=status, finished_at=utcnow(),
                         coverage="full" if covered and status == "complete" else "partial",
                         **result)
    return store.get_run(run_id)


async def _send(todo: RequestPlan, run_id: str, gateway: Gateway, channel: Channel,
                concurrency: int, progress: ProgressFn | None, services: Services) -> None:
    try:
        await send_all(todo, run_id=run_id, gateway=gateway, channel=channel,
                       concurrency=concurrency, progress=progress, services=services)
    finally:
        await close_channels(channel, services)


def _stored_evalset(run: RunRecord, config: Config) -> EvalSet:
    """The eval set a run used: the file if unchanged, else the file at the run's commit."""
    from promptctl.gitinfo import find_repo

    path = config.root / (run.get("evalset_path") or "")
    current: EvalSet | None = None
    try:
        current = load_evalset(path)
    except InputError:
        current = None
    if current is not None and current.version == run["evalset_version"]:
        return current
    repo = find_repo(config.root)
    if run["git_commit"] and repo is not None and repo.has_commit(run["git_commit"]):
        data = repo.read(run["git_commit"], run.get("evalset_path") or "")
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

    The prompt is rebuilt from the source stored with the run, so editing the file
    meanwhile does not mix two versions in one run. Taking the run over is one atomic
    claim: of two resumes started at once, one proceeds and the other is refused.
    """
    from promptctl.prompts import parse_prompt
    from promptctl.providers import resolve_model

    run = store.get_run(run_ref)
    if run.get("kind") == "pipeline":
        from promptctl.engine.pipeline import resume_pipeline

        return resume_pipeline(run, store=store, config=config, options=options or EvalOptions(),
                               progress=progress, on_start=on_start)
    previous = run.get("owner")
    if run["status"] == "running" and _owner_alive(previous):
        raise InputError(f"run {run['id']} is still being run by {_describe_owner(previous or '')}",
                         fix="wait for it to finish (or stop that process), then resume")
    stored = run.get("options") or {}
    prompt = parse_prompt(run["prompt_source"].encode("utf-8"), config.root / run["prompt_path"])
    check_identities(run, prompt)
    evalset = _stored_evalset(run, config)
    given = options or EvalOptions()
    options = EvalOptions(concurrency=given.concurrency or stored.get("concurrency"),
                          limit=stored.get("limit"), repeat=stored.get("repeat") or 1,
                          use_cache=given.use_cache and stored.get("use_cache", True),
                          cache_only=given.cache_only, rpm=given.rpm, tpm=given.tpm,
                          timeout=given.timeout,
                          batch=(given.batch or bool(stored.get("batch"))) and not given.cache_only)
    full = plan_requests(prompt, evalset, limit=options.limit, repeat=options.repeat)
    todo = full.without(store.answered_keys(run["id"]))
    resolved = resolve_model(run["model"], config)
    _preflight(store, todo, resolved, options.cache_only)
    if options.batch:
        from promptctl.engine.batch import require_batch

        require_batch(resolved)
    if not store.claim_run(run["id"], _owner_token(), previous):
        raise InputError(f"run {run['id']} was just taken over by another process",
                         fix="let that one finish it; see `promptctl show " + run["id"] + "`")
    if on_start is not None:
        on_start(run["id"])
    return _send_and_finish(run["id"], todo, resolved, store=store, config=config,
                            options=options,
                            concurrency=concurrency_for(options.concurrency, resolved, config),
                            progress=progress, full=full)
