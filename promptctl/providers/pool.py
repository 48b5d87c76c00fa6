"""Requests sent from child processes, one per core, when concurrency is high.

The `openai` SDK spends about 2 ms of CPU on each request, so one process tops
out near 500 requests a second: at concurrency 50 against a 100 ms endpoint the
SDK, not the endpoint, sets the pace. `SenderPool` is a `Provider` that hands
each request to the least busy of several `promptctl.providers._sender`
processes, each with its own SDK client and connections. Everything else (cache,
store, rate limits, scoring, progress) stays in the main process, so a run
behaves the same whichever way its requests are sent.

The main process never imports the SDK in this mode: its 0.8 s import happens in
the children, on the other cores.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from promptctl.errors import InputError, PromptctlError, ProviderError
from promptctl.providers._sender import KEY_ENV, LINE_LIMIT
from promptctl.providers.base import ChatRequest, ChatResponse, Provider, RequestFailed

PROCESSES_ENV = "PROMPTCTL_PROCESSES"
# Below this concurrency one process keeps up with any endpoint (at 100 ms latency,
# 16 in flight is 160 requests/s, a third of a core), and a child's start-up would
# only add CPU.
MIN_CONCURRENCY = 16
PER_PROCESS = 8  # connections per child, at least
STOP_TIMEOUT = 5.0
_ERRORS: dict[str, type[PromptctlError]] = {"InputError": InputError, "ProviderError": ProviderError}


def sender_processes(concurrency: int) -> int:
    """How many sender processes a run at this concurrency uses (1: send in-process)."""
    raw = os.environ.get(PROCESSES_ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise InputError(f"{PROCESSES_ENV}={raw!r} is not a whole number of processes",
                             fix=f"set {PROCESSES_ENV} to 1 (send from the main process) or more, "
                             "or unset it to choose by concurrency and cores")
        return min(value, max(1, concurrency))
    if concurrency < MIN_CONCURRENCY:
        return 1
    return max(1, min(os.cpu_count() or 1, concurrency // PER_PROCESS))


@dataclass
class _Child:
    proc: asyncio.subprocess.Process
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    stderr_tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    sent: int = 0
    exited: bool = False


class SenderPool(Provider):
    """A provider whose requests are sent by `processes` child processes."""

    def __init__(self, name: str, base_url: str, api_key: str, *, concurrency: int,
                 processes: int) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        processes = max(1, min(processes, concurrency))
        self._shares = [concurrency // processes + (1 if i < concurrency % processes else 0)
                        for i in range(processes)]
        self._children: list[_Child] = []
        self._started = False
        self._closing = False
        self._failure: PromptctlError | None = None
        self._failed = asyncio.Event()
        self._next_id = 0

    async def start(self) -> None:
        """Start every child and wait until each has its SDK client (about 1 s, in parallel)."""
        env = {**os.environ, KEY_ENV: self._key}
        for share in self._shares:
            config = json.dumps({"name": self.name, "base_url": self.base_url, "concurrency": share})
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "promptctl.providers._sender", config,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, limit=LINE_LIMIT)
            child = _Child(proc)
            child.tasks = [asyncio.create_task(self._read_stderr(child))]
            self._children.append(child)
        for child in self._children:
            assert child.proc.stdout is not None
            if not await child.proc.stdout.readline():
                raise await self._died(child, "could not start (exit code {code})")
            child.tasks.append(asyncio.create_task(self._read(child)))
        self._started = True

    async def _read(self, child: _Child) -> None:
        assert child.proc.stdout is not None
        while line := await child.proc.stdout.readline():
            msg = json.loads(line)
            future = child.pending.get(msg["id"])
            if future is not None and not future.done():
                future.set_result(msg)
        # From here on no request goes to this child (see `complete`).
        child.exited = True
        await child.proc.wait()
        if self._closing:
            return
        failure = await self._died(child, f"(pid {child.proc.pid}) exited with code {{code}}")
        if self._failure is None:
            self._failure = failure
            self._failed.set()
        for future in child.pending.values():
            if not future.done():
                future.set_exception(self._failure)

    @staticmethod
    async def _died(child: _Child, what: str) -> ProviderError:
        """The error for a child that ended: `what` happened (with its exit code put in
        for {code}), and the end of its stderr."""
        code = await child.proc.wait()
        await asyncio.sleep(0.05)  # let the stderr reader catch the last lines of a traceback
        tail = "".join(child.stderr_tail).strip()
        return ProviderError("a request sender process " + what.format(code=code)
                             + (f":\n{tail}" if tail else ""),
                             fix=f"set {PROCESSES_ENV}=1 to send from the main process")

    async def _read_stderr(self, child: _Child) -> None:
        assert child.proc.stderr is not None
        while line := await child.proc.stderr.readline():
            child.stderr_tail.append(line.decode("utf-8", "replace"))

    async def complete(self, request: ChatRequest) -> ChatResponse:
        if not self._started:
            raise RuntimeError("SenderPool.start() was not awaited")
        if any(c.exited for c in self._children):
            # A child is gone: the run stops, as it would for a fatal endpoint error.
            await self._failed.wait()
        if self._failure is not None:
            raise self._failure
        child = min(self._children, key=lambda c: len(c.pending))
        assert child.proc.stdin is not None
        self._next_id += 1
        rid = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        child.pending[rid] = future
        child.sent += 1
        try:
            line = json.dumps({"id": rid, "model": request.model, "messages": request.messages,
                               "params": request.params})
            try:
                child.proc.stdin.write(line.encode("utf-8") + b"\n")
                await child.proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the child is gone: its reader sets the failure on this future
            msg = await future
        except asyncio.CancelledError:
            if child.proc.returncode is None and not child.proc.stdin.is_closing():
                child.proc.stdin.write(json.dumps({"cancel": rid}).encode("utf-8") + b"\n")
            raise
        finally:
            child.pending.pop(rid, None)
        if "ok" in msg:
            return ChatResponse(**msg["ok"])
        if "failed" in msg:
            message, status, attempts = msg["failed"]
            raise RequestFailed(message, status=status, attempts=attempts)
        fatal = msg["fatal"]
        raise _ERRORS.get(fatal["type"], ProviderError)(fatal["message"], fix=fatal["fix"])

    def describe(self) -> dict[str, Any]:
        return {"senders": {"processes": len(self._children),
                            "requests": [c.sent for c in self._children]}}

    async def aclose(self) -> None:
        self._closing = True
        if self._failure is None:  # nothing may wait on a closed pool
            self._failure = ProviderError("the request sender processes were stopped")
            self._failed.set()
        for child in self._children:
            if child.proc.stdin is not None and not child.proc.stdin.is_closing():
                child.proc.stdin.close()
        for child in self._children:
            try:
                await asyncio.wait_for(child.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                child.proc.kill()
                await child.proc.wait()
            for task in child.tasks:
                task.cancel()
            await asyncio.gather(*child.tasks, return_exceptions=True)
