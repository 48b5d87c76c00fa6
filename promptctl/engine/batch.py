"""`eval --batch`: the requests the cache does not answer go to the endpoint's batch API as
JSONL files, and the rows are stored as the output files are read.

The batches of a run are recorded in its `options` (under "batches") the moment each is
submitted, so an interrupted run resumes by re-attaching to them rather than paying for the
same requests twice. Only the evaluated model's requests are batched: a judge's or an
embeddings model's requests, made while rows are scored, are sent directly and reported
apart in the run's summary.

Neither the stored batches nor the server are trusted: a resume checks the stored state,
that each batch is this run's and still holds the requests the run sends, and stops polling
a batch the server has not finished by its own expiry time (plus a margin), leaving the run
resumable.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

from promptctl.config import Price
from promptctl.engine.gateway import Answer, Channel, Gateway, ProgressFn, Services, close_channels
from promptctl.engine.plan import RequestPlan
from promptctl.engine.send import RowWriter
from promptctl.errors import InputError, ProviderError
from promptctl.prompts import Prompt
from promptctl.providers import ResolvedModel
from promptctl.providers.base import (
    ENV_MAX_LINE_BYTES,
    ENV_MAX_RESULT_BYTES,
    BatchAPI,
    BatchInfo,
    ChatRequest,
    ChatResponse,
    ReadLimits,
    RequestFailed,
    is_batch_ref,
)
from promptctl.redact import redact
from promptctl.store.keys import cache_key
from promptctl.work import Key, WorkItem

# The OpenAI Batch API's limits per input file.
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
DEFAULT_POLL_SECONDS = 15.0
# How long after a batch's own expiry time (`expires_at`) it is still polled: the server may
# take a few minutes to move it to "expired" and write its files.
DEFAULT_EXPIRY_MARGIN = 600.0
# How long a batch is waited for when the server gives no usable expiry time, and the most it
# is ever waited for by one process: the completion window it was submitted with.
COMPLETION_WINDOW_SECONDS = 24 * 3600.0
# Overrides, for tests and for servers with other limits.
ENV_POLL = "PROMPTCTL_BATCH_POLL"
ENV_MAX_REQUESTS = "PROMPTCTL_BATCH_MAX_REQUESTS"
ENV_MAX_BYTES = "PROMPTCTL_BATCH_MAX_BYTES"
ENV_EXPIRY_MARGIN = "PROMPTCTL_BATCH_EXPIRY_MARGIN"
# A damaged store cannot make a resume poll without end: more batches than this in one run
# (each holds up to 50,000 requests) is not a run promptctl made.
MAX_STORED_BATCHES = 10_000


@dataclass(frozen=True)
class BatchLimits:
    """Requests and bytes per input file, seconds between polls, how much of a downloaded
    file is read, and how long past its expiry a batch is waited for."""

    max_requests: int = MAX_REQUESTS
    max_bytes: int = MAX_BYTES
    poll_seconds: float = DEFAULT_POLL_SECONDS
    read: ReadLimits = ReadLimits()
    expiry_margin: float = DEFAULT_EXPIRY_MARGIN

    @classmethod
    def from_env(cls) -> BatchLimits:
        def number(name: str, default: float, low: float) -> float:
            raw = os.environ.get(name)
            if raw is None or not raw.strip():
                return default
            try:
                value = float(raw)
            except ValueError:
                value = float("nan")
            if not value >= low or not math.isfinite(value):
                raise InputError(f"${name} is {raw!r}: not a number of at least {low:g}",
                                 fix=f"unset {name} or set it to a number >= {low:g}")
            return value

        read = ReadLimits(
            line_bytes=int(number(ENV_MAX_LINE_BYTES, ReadLimits.line_bytes, 1)),
            file_bytes=int(number(ENV_MAX_RESULT_BYTES, ReadLimits.file_bytes, 1)))
        return cls(max_requests=int(number(ENV_MAX_REQUESTS, MAX_REQUESTS, 1)),
                   max_bytes=int(number(ENV_MAX_BYTES, MAX_BYTES, 1)),
                   poll_seconds=number(ENV_POLL, DEFAULT_POLL_SECONDS, 0),
                   read=read,
                   expiry_margin=number(ENV_EXPIRY_MARGIN, DEFAULT_EXPIRY_MARGIN, 0))


def poll_deadline(expires_at: float | None, first_seen: float, margin: float) -> float:
    """When to stop polling a batch (seconds since the epoch): its expiry time plus the margin.

    Without a usable expiry time, or with one beyond the completion window from when this
    process first saw the batch (a batch expires within 24 h of its creation), the window
    from then stands in for it.
    """
    window_end = first_seen + COMPLETION_WINDOW_SECONDS
    end = window_end if expires_at is None else min(expires_at, window_end)
    return end + margin


def require_batch(resolved: ResolvedModel) -> None:
    """--batch on an endpoint whose backend has no batch API: exit 2 before any run starts."""
    if resolved.backend.batch is None:
        raise InputError(f"endpoint {resolved.endpoint_name!r} (type {resolved.type}) does not "
                         "offer the Batch API",
                         fix="drop --batch to send the requests directly, or use an OpenAI "
                         "endpoint (one with /v1/files and /v1/batches)")


def batch_price(price: Price | None, resolved: ResolvedModel) -> Price | None:
    """What a batched request costs: the standard price times the backend's batch factor."""
    support = resolved.backend.batch
    if price is None or support is None:
        return price
    return Price(price.input * support.price_factor, price.output * support.price_factor)


def custom_id(key: Key) -> str:
    """The request's id in the batch files: its (kind, row id, sample), which a resume can
    match without the submitting process's memory."""
    return json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


@dataclass
class Submitted:
    """One batch of the run: as stored with the run, plus what this process knows of it."""

    id: str
    input_file_id: str
    requests: int
    status: str = "validating"
    collected: bool = False
    # The custom ids it holds (read back from its input file after a restart).
    ids: set[str] | None = None
    counts: tuple[int, int, int] = (0, 0, 0)  # completed, failed, total
    # When this process first saw it (time.time()): the start of its deadline without an expiry.
    first_seen: float | None = None
    # Lines of its result files that answered none of its requests (unreadable, not its own,
    # repeated): left out, and counted in the summary.
    ignored: int = 0

    def stored(self) -> dict[str, Any]:
        return {"id": self.id, "input_file_id": self.input_file_id, "requests": self.requests,
                "status": self.status, "collected": self.collected}


_STORED_KEYS = ("id", "input_file_id", "requests", "status", "collected")
_MAX_STATUS = 40


def _shown(value: Any) -> str:
    """A stored or served value in a message: short, one line, no secrets."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    try:
        text = json.dumps(value)
    except ValueError:  # an integer of more digits than Python converts
        text = "a huge number"
    return redact(text if len(text) <= 60 else text[:57] + "...")


def _is_status(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_STATUS and value.isprintable()


def _damaged(run_id: str, where: str, problem: str) -> NoReturn:
    name = f"options.{where}" if where else "options"
    raise InputError(f"run {run_id}: its stored batch state cannot be used: {name} {problem}",
                     fix="the store was edited or damaged: restore the run's options from a backup "
                     "to resume it; or start a new run (promptctl eval PROMPT --batch), which sends "
                     "every request again, also those this run's batches already hold")


def stored_batches(run_id: str, options: Any) -> list[Submitted]:
    """The batches stored with a run, checked before any is used: a damaged or edited state
    must stop the resume, not crash it, poll without end, or submit its requests again."""
    if not isinstance(options, Mapping):
        _damaged(run_id, "", f"is {_shown(options)}, not an object")
    flag = options.get("batch", False)
    if not isinstance(flag, bool):
        _damaged(run_id, "batch", f"is {_shown(flag)}, not true or false")
    raw = options.get("batches")
    if raw is None:
        return []
    if not isinstance(raw, list):
        _damaged(run_id, "batches", f"is {_shown(raw)}, not a list")
    if raw and not flag:
        _damaged(run_id, "batches", "lists batches, but options.batch is not true")
    if len(raw) > MAX_STORED_BATCHES:
        _damaged(run_id, "batches", f"lists {len(raw):,} batches, more than the "
                 f"{MAX_STORED_BATCHES:,} a run can have")
    batches: list[Submitted] = []
    ids: set[str] = set()
    files: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"batches[{index}]"
        if not isinstance(entry, dict):
            _damaged(run_id, where, f"is {_shown(entry)}, not an object")
        missing = [k for k in _STORED_KEYS if k not in entry]
        unknown = sorted(str(k) for k in entry if k not in _STORED_KEYS)
        if missing or unknown:
            _damaged(run_id, where, f"lacks {', '.join(missing)}" if missing
                     else f"has the unknown key {_shown(unknown[0])}")
        batch_id, file_id = entry["id"], entry["input_file_id"]
        requests, status, collected = entry["requests"], entry["status"], entry["collected"]
        if not is_batch_ref(batch_id):
            _damaged(run_id, f"{where}.id", f"is {_shown(batch_id)}, not a batch id")
        if not is_batch_ref(file_id):
            _damaged(run_id, f"{where}.input_file_id", f"is {_shown(file_id)}, not a file id")
        if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
            _damaged(run_id, f"{where}.requests", f"is {_shown(requests)}, not a count of requests")
        if not _is_status(status):
            _damaged(run_id, f"{where}.status", f"is {_shown(status)}, not a batch status")
        if not isinstance(collected, bool):
            _damaged(run_id, f"{where}.collected", f"is {_shown(collected)}, not true or false")
        if batch_id in ids:
            _damaged(run_id, f"{where}.id", f"repeats batch {batch_id}")
        if file_id in files:
            _damaged(run_id, f"{where}.input_file_id", f"repeats the input file {file_id} of "
                     "another batch")
        ids.add(batch_id)
        files.add(file_id)
        batches.append(Submitted(batch_id, file_id, requests, status, collected))
    return batches


def check_resumable(run_id: str, options: Any, kind: str) -> None:
    """Before a resume uses a run's options: its batch state is sound, and a run with batches
    still running on the server resumes by re-attaching to them (only prompts are batched)."""
    pending = [b for b in stored_batches(run_id, options) if not b.collected]
    if pending and kind != "prompt":
        _damaged(run_id, "batches", f"lists batches of a {kind}, which is never batched")


@dataclass
class BatchReport:
    """What the run's summary says about its batches."""

    submitted: int = 0
    reattached: int = 0
    batches: list[Submitted] = field(default_factory=list)

    def as_dict(self, price_factor: float, services: Services) -> dict[str, Any]:
        # Requests made while scoring (judges, embeddings) go through the run's other channels.
        direct = {spec: ch.usage.as_dict() for spec, ch in services._channels.items()
                  if ch.usage.requests or ch.usage.cached or ch.usage.errors}
        return {"batches": [{"id": b.id, "status": b.status, "requests": b.requests,
                             **({"ignored": b.ignored} if b.ignored else {})}
                            for b in self.batches],
                "submitted": self.submitted, "reattached": self.reattached,
                "price_factor": price_factor, "direct": direct}


class BatchRun:
    """The batched send of one run's requests (see the module docstring)."""

    def __init__(self, plan: RequestPlan, *, run_id: str, gateway: Gateway, channel: Channel,
                 progress: ProgressFn | None, services: Services, limits: BatchLimits,
                 concurrency: int) -> None:
        if not isinstance(plan.target, Prompt):
            raise InputError(f"--batch does not apply to a {plan.target.kind}",
                             fix=f"drop --batch for {plan.target.kind}s")
        self.plan = plan
        self.prompt = plan.target
        self.run_id = run_id
        self.gateway = gateway
        self.store = gateway.store
        self.channel = channel
        self.progress = progress
        self.services = services
        self.limits = limits
        self.concurrency = max(1, concurrency)
        self.params = self.prompt.request_params
        self.writer = RowWriter(self.store, gateway)
        self.items: dict[str, WorkItem] = {}
        stored = self.store.get_run(run_id).get("options") or {}
        self.report = BatchReport(batches=stored_batches(run_id, stored))
        self.options: dict[str, Any] = dict(stored)
        # Rows waiting to be scored together (a judge's requests then overlap).
        self._scoring: list[tuple[WorkItem, Answer]] = []

    # -- the whole run ---------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._from_cache()
            if not self.items:
                return
            support = self.channel.resolved.backend.batch
            assert support is not None  # require_batch ran before the run was created
            api = support.open(self.channel.resolved)
            api.limits = self.limits.read
            try:
                await self._reattach(api)
                await self._submit_rest(api)
                await self._poll(api)
            finally:
                await api.aclose()
        finally:
            await self._score_pending()
            self.writer.flush()

    async def _from_cache(self) -> None:
        state = self.gateway.progress
        use_cache = self.gateway.use_cache
        for item in self.plan:
            key = cache_key(self.channel.resolved.cache_url, self.channel.model, item.messages,
                            self.params, item.sample)
            hit = self.store.cache_get(key) if use_cache else None
            if hit is not None:
                state.cached += 1
                self.channel.usage.cached += 1
                await self._add(item, Answer(hit, cached=True))
            else:
                self.items[custom_id(item.key)] = item
        await self._score_pending()
        self.writer.flush()

    async def _reattach(self, api: BatchAPI) -> None:
        """Learn what each batch a previous process submitted holds, from its input file,
        after checking it is this run's batch and holds the requests this run sends."""
        for batch in self.report.batches:
            if batch.collected:
                continue
            self.report.reattached += 1
            self._note(f"re-attaching to batch {batch.id}")
            info = await api.retrieve(batch.id)
            # A stored id changed to another batch of the account: its answers are not this run's.
            owner = info.metadata.get("promptctl_run")
            if owner is not None and owner != self.run_id:
                _damaged(self.run_id, "batches", f"names batch {batch.id}, which run {_shown(owner)} "
                         "submitted, not this one")
            if info.input_file_id is not None and info.input_file_id != batch.input_file_id:
                _damaged(self.run_id, "batches", f"gives batch {batch.id} the input file "
                         f"{batch.input_file_id}; the server says it holds {_shown(info.input_file_id)}")
            self._checked(batch, info)
            batch.first_seen = time.time()
            batch.ids = await self._held(api, batch)

    async def _held(self, api: BatchAPI, batch: Submitted) -> set[str]:
        """The custom ids of a batch's input file, each of this run's requests among them
        checked to be the request the run would send now: the same model, parameters and
        messages (else its answers would be stored as another configuration's)."""
        held: set[str] = set()
        async with aclosing(api.request_lines(batch.input_file_id)) as lines:
            async for cid, line in lines:
                held.add(cid)
                item = self.items.get(cid)
                if item is None:
                    continue
                sent = json.loads(api.request_line(cid, ChatRequest(
                    self.channel.model, item.messages, self.params)))
                if line != sent:
                    raise InputError(
                        f"run {self.run_id}: batch {batch.id} holds request {_shown(cid)} with "
                        f"{_difference(line, sent)}: the batch was submitted for another model, "
                        "parameters or messages than the run sends now",
                        fix="resume with the configuration the run started with (its endpoint "
                        "and model in promptctl.yaml); or start a new run (promptctl eval PROMPT "
                        "--batch)")
        return held

    def _checked(self, batch: Submitted, info: BatchInfo) -> BatchInfo:
        """A batch's state as the server gave it, checked to describe this batch in a form
        the run can store."""
        where = f"endpoint {self.channel.resolved.endpoint_name}: batch {batch.id}"
        if info.id != batch.id:
            raise ProviderError(f"{where}: the server answered for batch {_shown(info.id)} instead",
                                fix=_SERVER_FIX)
        if not _is_status(info.status):
            raise ProviderError(f"{where}: the server gave the status {_shown(info.status)}",
                                fix=_SERVER_FIX)
        if info.input_file_id is not None and info.input_file_id != batch.input_file_id:
            raise ProviderError(f"{where}: the server says it holds the input file "
                                f"{_shown(info.input_file_id)}, not {batch.input_file_id} that "
                                "was submitted", fix=_SERVER_FIX)
        return info

    async def _submit_rest(self, api: BatchAPI) -> None:
        covered: set[str] = set()
        for batch in self.report.batches:
            if not batch.collected and batch.ids is not None:
                covered |= batch.ids
        rest = [cid for cid in self.items if cid not in covered]
        for path, ids in self._files(api, rest):
            try:
                self._note(f"uploading {len(ids)} requests")
                file_id = await api.upload(path)
            finally:
                os.unlink(path)
            info = await api.submit(file_id, {"promptctl_run": self.run_id})
            where = f"endpoint {self.channel.resolved.endpoint_name}"
            if not is_batch_ref(file_id) or not is_batch_ref(info.id):
                raise ProviderError(f"{where}: the server gave the id {_shown(file_id)} to the "
                                    f"uploaded file and {_shown(info.id)} to its batch",
                                    fix=_SERVER_FIX)
            if any(b.id == info.id or b.input_file_id == file_id for b in self.report.batches):
                raise ProviderError(f"{where}: the server gave batch {info.id} (input file "
                                    f"{file_id}) to a second batch of the run", fix=_SERVER_FIX)
            status = info.status if _is_status(info.status) else "submitted"
            batch = Submitted(info.id, file_id, len(ids), status, ids=set(ids),
                              first_seen=time.time())
            self.report.batches.append(batch)
            self.report.submitted += 1
            self._save()  # at once: a kill from here on must not submit these requests again
            self._checked(batch, info)

    def _files(self, api: BatchAPI, ids: list[str]) -> Iterator[tuple[str, list[str]]]:
        """JSONL files of at most max_requests requests and max_bytes bytes each."""
        chunk: list[str] = []
        size = 0
        handle: Any = None
        try:
            for cid in ids:
                item = self.items[cid]
                line = api.request_line(cid, ChatRequest(self.channel.model, item.messages,
                                                         self.params))
                if chunk and (len(chunk) >= self.limits.max_requests
                              or size + len(line) > self.limits.max_bytes):
                    handle.close()
                    # From here the caller owns (and deletes) the file.
                    name, handle = handle.name, None
                    yield name, chunk
                    chunk, size = [], 0
                if handle is None:
                    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed when yielded
                        prefix=f"promptctl-{self.run_id}-", suffix=".jsonl", delete=False)
                handle.write(line)
                chunk.append(cid)
                size += len(line)
            if chunk:
                handle.close()
                name, handle = handle.name, None
                yield name, chunk
        finally:
            if handle is not None:
                handle.close()
                os.unlink(handle.name)

    # -- waiting and reading ---------------------------------------------------------------

    async def _poll(self, api: BatchAPI) -> None:
        """Poll until every batch is collected, or has outlived its deadline (`poll_deadline`):
        those are left running on the server, and the run stops, resumable, with exit 3."""
        overdue: dict[str, tuple[Submitted, BatchInfo]] = {}
        while True:
            pending = [b for b in self.report.batches if not b.collected and b.id not in overdue]
            if not pending:
                break
            for batch in pending:
                info = self._checked(batch, await api.retrieve(batch.id))
                changed = info.status != batch.status
                batch.status = info.status
                batch.counts = (info.completed, info.failed, info.total)
                if info.done:
                    await self._collect(api, batch, info)
                    continue
                now = time.time()
                if batch.first_seen is None:
                    batch.first_seen = now
                if now > poll_deadline(info.expires_at, batch.first_seen, self.limits.expiry_margin):
                    overdue[batch.id] = (batch, info)
                if changed:
                    self._save()
            self._report_state()
            if any(not b.collected and b.id not in overdue for b in self.report.batches):
                await asyncio.sleep(self.limits.poll_seconds)
        if overdue:
            self._overdue(list(overdue.values()))

    def _overdue(self, late: list[tuple[Submitted, BatchInfo]]) -> NoReturn:
        margin = self.limits.expiry_margin
        after = f" + {margin / 60:g} min" if margin else ""
        described = []
        for batch, info in late[:3]:
            first_seen = batch.first_seen if batch.first_seen is not None else time.time()
            if info.expires_at is not None and \
                    info.expires_at <= first_seen + COMPLETION_WINDOW_SECONDS:
                described.append(f"{batch.id} is still {info.status} after its expiry time "
                                 f"({_utc(info.expires_at)}{after})")
            else:
                described.append(f"{batch.id} is still {info.status} after 24 h{after} (the "
                                 "server gave no usable expiry time)")
        more = f" (and {len(late) - 3} more)" if len(late) > 3 else ""
        raise ProviderError(
            f"run {self.run_id}: batch {'; batch '.join(described)}{more}: promptctl stopped "
            "waiting. The batch is left on the server, not cancelled",
            fix=f"promptctl eval --resume {self.run_id} later re-attaches to it and stores its "
            "results once the server has finished it; a batch that never ends can be cancelled "
            f"on the server, after which the resume sends its requests again (${ENV_EXPIRY_MARGIN} "
            "sets the margin, in seconds)")

    async def _collect(self, api: BatchAPI, batch: Submitted, info: BatchInfo) -> None:
        """Store a finished batch's rows as its output and error files are read.

        Only its own requests are answered, each once (the first line for it counts); lines
        that answer nothing of it are counted, and past as many as it has requests (plus a
        few), the files are not this batch's and reading stops.
        """
        self._note(f"reading the results of batch {batch.id}")
        held = batch.ids or set()
        answered: set[str] = set()
        unreadable: list[str] = []
        foreign = repeated = 0
        most = len(held) + 100
        async with aclosing(api.results(info)) as results:
            async for cid, result in results:
                if cid is None:
                    unreadable.append(str(result))
                elif cid not in held:
                    foreign += 1
                elif cid in answered:
                    repeated += 1
                else:
                    answered.add(cid)
                    item = self.items.pop(cid, None)
                    if item is not None:  # else answered before a restart
                        await self._add(item, self._accept(item, result))
                    continue
                batch.ignored += 1
                if batch.ignored > most:
                    raise ProviderError(
                        f"endpoint {self.channel.resolved.endpoint_name}: the result files of batch "
                        f"{batch.id} hold over {most:,} lines that answer none of its {len(held):,} "
                        f"requests ({_ignored(unreadable, foreign, repeated)}); stopped reading them",
                        fix=_SERVER_FIX)
        missing = _why_missing(info)
        if batch.ignored:
            missing += f"; left out of its result files: {_ignored(unreadable, foreign, repeated)}"
        for cid in sorted(held):
            item = self.items.pop(cid, None)
            if item is not None:
                await self._add(item, Answer(None, error=missing, attempts=1))
        await self._score_pending()
        self.writer.flush()
        batch.collected = True
        self._save()

    def _accept(self, item: WorkItem, result: ChatResponse | RequestFailed) -> Answer:
        """A batch result as a direct request's answer would be: counted, priced, cached."""
        if isinstance(result, RequestFailed):
            return self._failed(str(result))
        response: dict[str, Any] = {
            "text": result.text, "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens, "model": result.model,
            "system_fingerprint": result.system_fingerprint,
            "latency_ms": None,  # a batch has no per-request latency
        }
        if result.no_text is not None:
            response["no_text"] = result.no_text
        self.gateway.progress.spent_usd += self.channel.usage.add(
            self.channel.price, result.prompt_tokens, result.completion_tokens)
        if self.gateway.use_cache:
            key = cache_key(self.channel.resolved.cache_url, self.channel.model, item.messages,
                            self.params, item.sample)
            self.gateway.new_cache.append((key, response))
        return Answer(response, attempts=1)

    def _failed(self, message: str) -> Answer:
        self.channel.usage.errors += 1
        return Answer(None, error=message, attempts=1)

    async def _add(self, item: WorkItem, answer: Answer) -> None:
        self._scoring.append((item, answer))
        if len(self._scoring) >= self.concurrency:
            await self._score_pending()

    async def _score_pending(self) -> None:
        """Score the waiting rows together and hand them to the writer."""
        waiting, self._scoring = self._scoring, []
        if not waiting:
            return
        records = await asyncio.gather(*(
            self.prompt.record(self.run_id, item, answer, self.services)
            for item, answer in waiting))
        state = self.gateway.progress
        for record in records:
            state.done += 1
            state.errors += "error" in record
            # Batched writes: a killed process re-reads the batch's files on resume.
            self.writer.add(record, sent=False)
        if self.progress is not None:
            self.progress(state)

    # -- bookkeeping -----------------------------------------------------------------------

    def _save(self) -> None:
        self.options["batch"] = True
        self.options["batches"] = [b.stored() for b in self.report.batches]
        self.store.update_run(self.run_id, options=self.options)

    def _note(self, text: str) -> None:
        self.gateway.progress.note = text
        if self.progress is not None:
            self.progress(self.gateway.progress)

    def _report_state(self) -> None:
        batches = self.report.batches
        states: dict[str, int] = {}
        for b in batches:
            states[b.status] = states.get(b.status, 0) + 1
        done = sum(b.counts[0] + b.counts[1] for b in batches if not b.collected)
        total = sum(b.counts[2] for b in batches if not b.collected)
        text = f"{len(batches)} batch{'es' if len(batches) != 1 else ''}: " + ", ".join(
            f"{n} {s}" for s, n in sorted(states.items()))
        if total:
            text += f" · server {done}/{total}"
        self._note(text)


_SERVER_FIX = ("the server does not answer as the OpenAI Batch API does; once it does, promptctl "
               "eval --resume RUN picks the run up (or drop --batch to send the requests directly)")


def _utc(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:g} s after 1970"


def _ignored(unreadable: list[str], foreign: int, repeated: int) -> str:
    """The lines of a batch's result files that answered none of its requests, described."""
    parts = []
    if unreadable:
        parts.append(f"{len(unreadable)} unreadable line(s) (first: {unreadable[0]})")
    if foreign:
        parts.append(f"{foreign} line(s) for requests it was not given")
    if repeated:
        parts.append(f"{repeated} repeated answer(s) to a request already answered")
    return ", ".join(parts)


def _difference(found: Any, sent: Any, path: str = "") -> str:
    """Where a request line read back differs from the one the run sends, for a message."""
    if isinstance(found, dict) and isinstance(sent, dict):
        for key in [*sent, *(k for k in found if k not in sent)]:
            name = f"{path}.{key}" if path else str(key)
            name = name if len(name) <= 80 else name[:77] + "..."
            if key not in found:
                return f"no {redact(name)} (the run sends {_shown(sent[key])})"
            if key not in sent:
                return f"{redact(name)} {_shown(found[key])} (the run sends none)"
            if found[key] != sent[key]:
                return _difference(found[key], sent[key], name)
    if isinstance(found, list) and isinstance(sent, list) and len(found) == len(sent):
        for index, (a, b) in enumerate(zip(found, sent, strict=True)):
            if a != b:
                return _difference(a, b, f"{path}[{index}]")
    return f"{redact(path) or 'the line'} {_shown(found)} (the run sends {_shown(sent)})"


def _why_missing(info: BatchInfo) -> str:
    """The error of a request a finished batch has no result line for."""
    if info.status == "failed":
        reasons = "; ".join(info.errors[:3]) or "no reason given"
        return f"the batch {info.id} failed: {reasons}"
    if info.status == "expired":
        return (f"the batch {info.id} expired (24 h) before this request was processed; "
                "resume the run to send it again")
    if info.status == "cancelled":
        return f"the batch {info.id} was cancelled before this request was processed"
    return f"the batch {info.id} ended ({info.status}) without a result for this request"


async def send_batched(plan: RequestPlan, *, run_id: str, gateway: Gateway, channel: Channel,
                       progress: ProgressFn | None, services: Services, concurrency: int,
                       extra: dict[str, Any]) -> None:
    """Send `plan` through the endpoint's batch API; `extra` receives the summary's "batch"."""
    batch_run = BatchRun(plan, run_id=run_id, gateway=gateway, channel=channel,
                         progress=progress, services=services, limits=BatchLimits.from_env(),
                         concurrency=concurrency)
    support = channel.resolved.backend.batch
    try:
        await batch_run.run()
    finally:
        try:
            extra["batch"] = batch_run.report.as_dict(
                support.price_factor if support is not None else 1.0, services)
        finally:
            await close_channels(channel, services)
