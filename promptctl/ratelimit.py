"""Requests-per-minute and tokens-per-minute limits for one endpoint.

Token buckets refilled continuously: a bucket holds one second's allowance,
so requests are spread evenly instead of bursting at the top of each minute
(the way providers enforce their limits).
"""

from __future__ import annotations

import asyncio
import time


class _Bucket:
    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now


class RateLimiter:
    """Waits before each request so an endpoint's rpm and tpm are respected."""

    def __init__(self, rpm: int | None = None, tpm: int | None = None) -> None:
        self._buckets: list[tuple[_Bucket, bool]] = []
        if rpm:
            self._buckets.append((_Bucket(rpm), False))
        if tpm:
            self._buckets.append((_Bucket(tpm), True))
        self._lock = asyncio.Lock()

    @property
    def active(self) -> bool:
        return bool(self._buckets)

    async def acquire(self, tokens: int) -> None:
        """Wait for one request of about `tokens` tokens (prompt plus max completion)."""
        if not self._buckets:
            return
        async with self._lock:
            while True:
                delay = 0.0
                for bucket, by_tokens in self._buckets:
                    bucket.refill()
                    # A request larger than the bucket waits for a full bucket, then goes.
                    need = min(float(tokens) if by_tokens else 1.0, bucket.capacity)
                    if bucket.level < need:
                        delay = max(delay, (need - bucket.level) / bucket.rate)
                if delay <= 0:
                    for bucket, by_tokens in self._buckets:
                        bucket.level -= float(tokens) if by_tokens else 1.0
                    return
                await asyncio.sleep(delay)
