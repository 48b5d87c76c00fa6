"""The one lifecycle of a run, for every kind of target: created, owned by one process,
sent through the one worker pool, summarised, finished, resumed.

Rows are written as they arrive; on any interruption the run keeps them and
`resume_eval` finishes it. Whether a run covered its whole eval set, and how many of
its rows failed, is recorded when it ends: run selection relies on both. `eval` (prompts
and pipelines alike) and `rescore` go through here.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from promptctl.allowance import Allowance
from promptctl.config import Config, Price
from promptctl.engine.batch import batch_price, check_resumable, require_batch, send_batched
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
from promptctl.engine.plan import RequestPlan, plan_requests
from promptctl.engine.send import RunContext, send_all
from promptctl.engine.summary import add_usage, summarize
from promptctl.errors import InputError, PromptctlError
from promptctl.evalsets import EvalSet, load_evalset, load_evalset_bytes
from promptctl.gitinfo import GitState, find_repo, git_state
from promptctl.project import relative
from promptctl.providers import Provider, ResolvedModel, open_provider, preflight, resolve_model
from promptctl.ratelimit import RateLimiter
from promptctl.runs import is_probe
from promptctl.store import RUN_ID_ALPHABET, RunRecord, Store, utcnow
from promptctl.target import Target, evalset_of, metric_identities, target_from_run
from promptctl.work import WorkItem

_TAIL = 1 << 20  # 4 base32 digits
_last_id = [0, 0]  # the milliseconds and tail of this process's last id
_id_lock = threading.Lock()


def new_run_id() -> str:
    """Short, sortable, unique: 10 base32 digits of milliseconds, then 4 more.

    The 4 are random, except that an id made in the same millisecond as the one before in
    this process takes the previous tail plus one (as ULIDs do): 200 random tails in one
    millisecond would collide about once in fifty times. Other processes still rely on
    the random draw."""
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_id[0]:
            ms, tail = _last_id[0], _last_id[1] + 1
            if tail >= _TAIL:
                ms, tail = ms + 1, secrets.randbelow(_TAIL)
        else:
            tail = secrets.randbelow(_TAIL)
        _last_id[:] = [ms, tail]
    head = "".join(RUN_ID_ALPHABET[(ms >> (5 * i)) & 31] for i in reversed(range(10)))
    return head + "".join(RUN_ID_ALPHABET[(tail >> (5 * i)) & 31] for i in reversed(range(4)))


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
    max_response_mb: float | None = None
    # Send through the endpoint's batch API (see engine/batch.py).
    batch: bool = False
    # The part of an eval set the run evaluates, when it is a split of it (`tune`'s train,
    # validation and test): recorded with the run, whose coverage is then partial, so such
    # a run never stands for its prompt version (as a baseline of `check`, a side of `diff`
    # or a point of `history`).
    subset: str | None = None
    # Which search a subset run belongs to and what it tried there (`tune`: the search's id,
    # the candidate and where it came from), recorded with the run so `history` can show
    # the search.
    search: Mapping[str, str] | None = None
    # A hard cap on the HTTP attempts (and their worst-case cost) the run may make, retries
    # included; shared with other runs given the same object (see promptctl.allowance).
    allowance: Allowance | None = field(default=None, compare=False)


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
    """--cache-only: every request known before the run must be in the cache, or nothing
    runs (a pipeline's requests depend on answers: its misses are error rows)."""
    params = plan.target.request_params
    # A sampled prompt's row is cached as one request with n=K, or as K requests.
    k = int((plan.target.run_options().get("samples") or {}).get("k") or 1)
    missing = 0
    first: WorkItem | None = None
    total = 0
    for item in plan:
        if not item.messages:
            continue
        total += 1
        if k > 1:
            found = in_cache(store, resolved, item.messages, {**params, "n": k}, 0) or all(
                in_cache(store, resolved, item.messages, params, s) for s in range(k))
        else:
            found = in_cache(store, resolved, item.messages, params, item.sample)
        if not found:
            missing += 1
            first = first or item
    if first is not None:
        raise InputError(f"--cache-only: {missing} of {total} requests are not in the cache "
                         f"(first: {first.kind} row {first.row.id!r}, sample {first.sample})",
                         fix="run once without --cache-only to send them, or check --model and "
                         "params match the cached run")


def refuse_batched_tools(target: Target) -> None:
    """--batch and a target whose requests declare tools: batch results are read without
    their tool calls (engine/batch.py), so such a run would score every call as missing."""
    if "tools" in target.request_params:
        raise InputError(f"--batch does not bring back tool calls yet: the requests of "
                         f"{target.name} declare tools", file=target.path,
                         fix="drop --batch for prompts with tools:")


def preflight_scorers(target: Target, config: Config) -> None:
    """The models the target's metrics send requests to (judges, embeddings models) can be
    used now: a missing key is found before the run, naming the metric, not mid-run."""
    for metric in target.all_configured_metrics:
        if metric.preflight is not None:
            metric.preflight(config)


def _preflight(store: Store, plan: RequestPlan, resolved: ResolvedModel, options: EvalOptions,
               config: Config) -> None:
    if options.batch and options.allowance is not None:
        # A batch is one upload whose requests the server runs on its own: no attempt of
        # theirs passes through the client that counts them.
        raise InputError("a run under a budget cannot use --batch: its requests could not "
                         "be counted as they are sent", fix="drop --batch")
    if options.batch:
        require_batch(resolved)
        refuse_batched_tools(plan.target)
    if options.cache_only:
        require_cached(store, plan, resolved)
    elif len(plan):
        preflight(resolved, plan.target.request_params)
        preflight_scorers(plan.target, config)


def check_identities(run: RunRecord, target: Target) -> None:
    """A resumed run must score its remaining rows as it scored the first ones."""
    recorded = (run.get("options") or {}).get("metric_identity") or {}
    now = metric_identities(target).get("metric_identity", {})
    for name in sorted(set(recorded) | set(now)):
        if recorded.get(name) != now.get(name):
            raise InputError(f"run {run['id']}: metric {name} has changed since the run started "
                             f"(was {recorded.get(name)}, now {now.get(name)})",
                             fix="start a new run (promptctl eval), or restore the judge prompt; "
                             "to score stored completions again use promptctl rescore")


def run_eval(target: Target, resolved: ResolvedModel, *, store: Store, config: Config,
             evalset: EvalSet | None = None, options: EvalOptions | None = None,
             progress: ProgressFn | None = None, on_start: Callable[[str], None] | None = None,
             git: GitState | None = None) -> RunRecord:
    """Evaluate one target (a prompt, a pipeline) with one model; returns the stored run."""
    options = options or EvalOptions()
    if options.batch and target.kind != "prompt":
        raise InputError(f"--batch does not apply to a {target.kind} (a step's request depends "
                         "on the answers before it)", file=target.path,
                         fix=f"drop --batch for {target.kind}s")
    evalset = evalset if evalset is not None else evalset_of(target)
    if not len(evalset) and evalset.unreviewed:
        raise InputError(f"every row of the eval set is unreviewed ({evalset.unreviewed} with "
                         "reviewed: false): there is nothing to score", file=evalset.path,
                         fix='check the rows and set "reviewed": true on those that are right')
    plan = plan_requests(target, evalset, limit=options.limit, repeat=options.repeat)
    _preflight(store, plan, resolved, options, config)
    git = git or git_state(target.path, [*target.files, evalset.path])
    concurrency = concurrency_for(options.concurrency, resolved, config)
    run_id = new_run_id()
    store.create_run({
        "id": run_id, "created_at": utcnow(), "status": "running", "prompt_name": target.name,
        "prompt_path": relative(target.path, config.root) or "", "prompt_version": target.version,
        "prompt_source": target.source, "git_commit": git.commit, "git_dirty": git.dirty,
        "git_branch": git.branch, "model": resolved.spec, "endpoint": resolved.endpoint_name,
        "base_url": resolved.cache_url, "params": target.run_params,
        "evalset_path": relative(evalset.path, config.root), "evalset_version": evalset.version,
        "n_planned": plan.eval_rows * plan.repeat, "owner": _owner_token(), "kind": target.kind,
        "options": {"limit": options.limit, "repeat": options.repeat,
                    "concurrency": concurrency, "use_cache": options.use_cache,
                    "cache_only": options.cache_only, "evalset_rows": len(evalset),
                    **({"unreviewed_skipped": evalset.unreviewed} if evalset.unreviewed else {}),
                    **({"batch": True} if options.batch else {}),
                    **({"subset": options.subset} if options.subset else {}),
                    **({"search": dict(options.search)} if options.search else {}),
                    **target.run_options(), **metric_identities(target)},
    })
    if on_start is not None:
        on_start(run_id)
    return _send_and_finish(run_id, plan, resolved, store=store, config=config, options=options,
                            concurrency=concurrency, progress=progress, full=plan)


def run_job(job: Job, *, store: Store, config: Config, options: EvalOptions | None = None,
            progress: ProgressFn | None = None,
            on_start: Callable[[str], None] | None = None) -> RunRecord:
    """`run_eval` for a job built by `build_jobs`."""
    return run_eval(job.target, job.resolved, store=store, config=config, evalset=job.evalset,
                    options=options, progress=progress, on_start=on_start, git=job.git)


def scorer_services(gateway: Gateway, config: Config, concurrency: int, timeout: float | None,
                    max_response_mb: float | None) -> Services:
    """Channels to the scorers' models; --timeout and --max-response-mb are the run's: a judge
    on the same slow or verbose server needs them as much."""
    return Services(gateway, config, concurrency, lambda r, c: open_provider(
        r.overridden(timeout=timeout, max_response_mb=max_response_mb), c, {}))


def _send_and_finish(run_id: str, todo: RequestPlan, resolved: ResolvedModel, *, store: Store,
                     config: Config, options: EvalOptions, concurrency: int,
                     progress: ProgressFn | None, full: RequestPlan) -> RunRecord:

    target = todo.target
    resolved = resolved.overridden(timeout=options.timeout, max_response_mb=options.max_response_mb)
    price = config.price(resolved.model, resolved.endpoint)
    if options.batch:
        price = batch_price(price, resolved)
    lazy = None if options.cache_only else LazyProvider(
        lambda: open_provider(resolved, concurrency, target.request_params))
    ep = resolved.endpoint
    limiter = RateLimiter(options.rpm or (ep.rpm if ep else None), options.tpm or (ep.tpm if ep else None))
    channel = Channel(resolved, lazy, price, limiter if limiter.active else None,
                      max_tokens=target.max_tokens)
    gateway = Gateway(store, use_cache=options.use_cache, cache_only=options.cache_only,
                      progress=Progress(total=len(todo)), allowance=options.allowance)
    services = scorer_services(gateway, config, concurrency, options.timeout,
                               options.max_response_mb)
    extra: dict[str, Any] = {}

    async def send() -> None:
        try:
            if options.batch:
                await send_batched(todo, run_id=run_id, gateway=gateway, channel=channel,
                                   progress=progress, services=services,
                                   concurrency=concurrency, extra=extra)
            else:
                ctx = RunContext(run_id, gateway, channel, concurrency, services)
                await send_all(todo, lambda item: target.run_row(item, ctx), gateway=gateway,
                               concurrency=concurrency, progress=progress)
        finally:
            await close_channels(channel, services)

    def covered(n: int) -> bool:
        return full.covers_evalset and n >= full.eval_rows * full.repeat and not options.subset

    return drive(run_id, send, store=store, target=target, price=price, repeat=options.repeat,
                 services=services, covered=covered, extra=extra,
                 opened=lambda: lazy.opened if lazy is not None else None)


def drive(run_id: str, send: Callable[[], Coroutine[Any, Any, None]], *, store: Store, target: Target,
          price: Price | None, repeat: int, services: Services, covered: Callable[[int], bool],
          extra: dict[str, Any] | None = None,
          opened: Callable[[], Provider | None] = lambda: None) -> RunRecord:
    """Run `send`, then, however it ended, summarise the stored rows and record how the run
    ended (complete, failed, interrupted) and whether it covered its eval set."""
    status = "interrupted"
    try:
        asyncio.run(send())
        status = "complete"
    except PromptctlError:
        status = "failed"
        raise
    finally:
        before = (store.get_run(run_id).get("summary") or {}).get("scorers")
        result = summarize(store, run_id, target, price, repeat=repeat,
                           scorers=add_usage(before, services.usage()))
        result["summary"].update(extra or {})
        provider = opened()
        if provider is not None:
            result["summary"].update(provider.describe())
        full = covered(result["summary"]["n"])
        store.update_run(run_id, status=status, finished_at=utcnow(),
                         coverage="full" if full and status == "complete" else "partial",
                         **result)
    return store.get_run(run_id)


def _stored_evalset(run: RunRecord, config: Config) -> EvalSet:
    """The eval set a run used: the file if unchanged, else the file at the run's commit."""
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


def refuse_running(run: RunRecord) -> None:
    """A run its owner still runs is not taken over."""
    previous = run.get("owner")
    if run["status"] == "running" and _owner_alive(previous):
        raise InputError(f"run {run['id']} is still being run by {_describe_owner(previous or '')}",
                         fix="wait for it to finish (or stop that process), then resume")


def claim(store: Store, run: RunRecord) -> None:
    """Take a run over for this process, atomically: of two resumes started at once, one
    proceeds and the other is refused."""
    refuse_running(run)
    if not store.claim_run(run["id"], _owner_token(), run.get("owner")):
        raise InputError(f"run {run['id']} was just taken over by another process",
                         fix="let that one finish it; see `promptctl show " + run["id"] + "`")


def resume_eval(run_ref: str, *, store: Store, config: Config, options: EvalOptions | None = None,
                progress: ProgressFn | None = None,
                on_start: Callable[[str], None] | None = None) -> RunRecord:
    """Finish a run of any target: send only the rows it has no answer for (error rows are
    tried again).

    The target is rebuilt from the sources stored with the run, so editing the files
    meanwhile does not mix two versions in one run.
    """
    run = store.get_run(run_ref)
    refuse_running(run)
    stored = run.get("options") or {}
    if is_probe(stored):
        # Its eval set was generated in memory: running the probe again rebuilds it, and
        # the answers it already has come from the cache.
        raise InputError(f"run {run['id']} is a probe's run, which cannot be resumed",
                         fix=f"run the same promptctl probe {run.get('prompt_path') or ''} "
                         "command again: what was answered comes from the cache")
    # Before any option is read: a damaged batch state must not send its requests twice.
    check_resumable(run["id"], stored, str(run.get("kind") or "prompt"))
    target = target_from_run(run, config.root)
    evalset = _stored_evalset(run, config)
    given = options or EvalOptions()
    options = EvalOptions(concurrency=given.concurrency or stored.get("concurrency"),
                          limit=stored.get("limit"), repeat=stored.get("repeat") or 1,
                          use_cache=given.use_cache and stored.get("use_cache", True),
                          cache_only=given.cache_only, rpm=given.rpm, tpm=given.tpm,
                          timeout=given.timeout, max_response_mb=given.max_response_mb,
                          allowance=given.allowance,
                          batch=(given.batch or bool(stored.get("batch"))) and not given.cache_only
                          and target.kind == "prompt")
    full = plan_requests(target, evalset, limit=options.limit, repeat=options.repeat)
    # After planning: a metric's checks complete its identity (the server an embeddings
    # model resolves to), as they did before the run was recorded.
    check_identities(run, target)
    todo = full.without(store.answered_keys(run["id"]))
    resolved = resolve_model(run["model"], config)
    _preflight(store, todo, resolved, options, config)
    claim(store, run)
    if on_start is not None:
        on_start(run["id"])
    return _send_and_finish(run["id"], todo, resolved, store=store, config=config,
                            options=options,
                            concurrency=concurrency_for(options.concurrency, resolved, config),
                            progress=progress, full=full)
