"""A hard cap on what a run may send: HTTP attempts and their worst-case cost.

A budget checked before a run counts the requests it plans; the SDK's retries of failed
ones (429, 5xx, dropped connections) come on top, unplanned. An `Allowance` counts every
attempt instead, first tries and retries alike, chat and embeddings, the evaluated model's
and a judge's: the engine's gateway names the allowance and the attempt's worst-case cost
around each provider call (`charging`), and the HTTP client's request hook takes one attempt
from it before anything is sent (`admit`). An attempt the allowance cannot cover is never
sent: the request fails with `AllowanceSpent`, which the provider turns into a row error.

The allowance only ever shrinks, so once it cannot cover an attempt it never will again:
a provider may decide at once not to retry a failure, rather than wait for a backoff
whose retry would be refused.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# Costs are sums of products of prices; an allowance computed as a difference of such sums
# may fall short of an equal need by rounding alone.
_EPSILON = 1e-12


class AllowanceSpent(Exception):
    """An attempt the allowance cannot cover; raised before anything is sent.

    Not an HTTP error, so the `openai` SDK passes it on at once instead of retrying.
    """


class Allowance:
    """At most `requests` HTTP attempts and `usd` dollars of worst-case cost (None: no
    limit on that one), shared by every request of the runs given it."""

    def __init__(self, requests: int | None = None, usd: float | None = None) -> None:
        self.requests = None if requests is None else max(0, requests)
        self.usd = None if usd is None else max(0.0, usd)
        self.sent = 0
        self.charged_usd = 0.0
        # Requests that needed an attempt the allowance could not cover.
        self.refused = 0
        # The HTTP hooks may run on any thread that drives an event loop.
        self._lock = threading.Lock()

    def covers(self, usd: float = 0.0) -> bool:
        """Whether one more attempt of worst-case cost `usd` fits."""
        with self._lock:
            return self._covers(usd)

    def _covers(self, usd: float) -> bool:
        if self.requests is not None and self.sent + 1 > self.requests:
            return False
        return self.usd is None or self.charged_usd + usd <= self.usd + _EPSILON

    def take(self, usd: float = 0.0) -> bool:
        """Count one attempt of worst-case cost `usd` if it fits; False (nothing counted)
        if not."""
        with self._lock:
            if not self._covers(usd):
                return False
            self.sent += 1
            self.charged_usd += usd
            return True

    def refuse(self) -> str:
        """Count a request cut by the allowance; the reason, for its row's error."""
        with self._lock:
            self.refused += 1
        return self.reason()

    @property
    def cut(self) -> bool:
        """Whether some request could not be sent (or retried) within the allowance."""
        return self.refused > 0

    def reason(self) -> str:
        if self.requests is not None and self.sent >= self.requests:
            return (f"budget reached: the allowance of {self.requests} requests is spent "
                    f"(retries included); not sent")
        return (f"budget reached: ${self.charged_usd:.6f} of the ${self.usd or 0.0:.6f} allowed "
                "is committed (each attempt counted at its worst-case cost), and this "
                "attempt could cost more than what is left; not sent")


@dataclass(frozen=True)
class _Charge:
    allowance: Allowance
    usd: float


# Set by the gateway around one provider call; read by the HTTP client's hooks, which run in
# the task that made the call (the SDK awaits the HTTP client in that task, retries included).
_charge: contextvars.ContextVar[_Charge | None] = contextvars.ContextVar(
    "promptctl_allowance_charge", default=None)


@contextmanager
def charging(allowance: Allowance | None, usd: float = 0.0) -> Iterator[None]:
    """Within the block, every HTTP attempt is taken from `allowance` at `usd` each."""
    if allowance is None:
        yield
        return
    token = _charge.set(_Charge(allowance, usd))
    try:
        yield
    finally:
        _charge.reset(token)


def admit() -> None:
    """Take the attempt about to be sent from the current allowance, if one is set; raise
    AllowanceSpent when it does not fit."""
    charge = _charge.get()
    if charge is not None and not charge.allowance.take(charge.usd):
        raise AllowanceSpent(charge.allowance.refuse())


def no_retry() -> str | None:
    """When the current allowance cannot cover another attempt: the reason, the request
    counted as cut. None when a retry would fit (or no allowance is set)."""
    charge = _charge.get()
    if charge is None or charge.allowance.covers(charge.usd):
        return None
    return charge.allowance.refuse()
