"""Adaptive concurrency per endpoint (AIMD: halve on overload, grow by one per window of successes) and retry delays."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections import deque


class AdaptiveLimit:
    """How many requests one endpoint+model may have in flight; the limit adapts to the server's 429s."""

    def __init__(self, maximum: int, minimum: int = 1):
        self.maximum = maximum
        self.minimum = minimum
        self.limit = float(maximum)
        self.in_flight = 0
        self._calm_until = 0.0

    @property
    def free(self) -> int:
        return int(self.limit) - self.in_flight

    def on_success(self) -> None:
        # Additive increase: one more slot per `limit` successes.
        self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)

    def on_overload(self, now: float, window_s: float) -> None:
        # Multiplicative decrease, at most once per window: a burst of 429s is one overload signal.
        if now >= self._calm_until:
            self.limit = max(float(self.minimum), self.limit / 2)
            self._calm_until = now + window_s


class SlotPool:
    """Slots over several endpoints: acquire gives the endpoint with the most free capacity, waiting if none."""

    def __init__(self, limits: list[AdaptiveLimit]):
        self.limits = limits
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> int:
        while True:
            best = max(range(len(self.limits)), key=lambda i: self.limits[i].free)
            if self.limits[best].free > 0:
                self.limits[best].in_flight += 1
                return best
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()

    def release(self, index: int, *, success: bool) -> None:
        limit = self.limits[index]
        limit.in_flight -= 1
        if success:
            limit.on_success()
        self._wake(max(0, sum(max(0, lim.free) for lim in self.limits)))

    def _wake(self, slots: int) -> None:
        while slots > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                slots -= 1


def retry_after_s(headers: dict[str, str] | object, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `retry-after` as seconds or an HTTP date)."""
    get = headers.get  # type: ignore[attr-defined]
    ms = get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - (now if now is not None else time.time()))


def backoff_s(attempt: int, base_s: float, cap_s: float, server_wait_s: float | None = None) -> float:
    """Exponential backoff with jitter (half fixed, half random), never shorter than the server asked.

    A server's wait is honoured up to `cap_s`: `Retry-After: inf` (or a day) must not stall a run.
    """
    ceiling = min(cap_s, base_s * (2 ** attempt))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if server_wait_s is not None:
        wait = min(server_wait_s, cap_s)
        delay = max(delay, wait + random.uniform(0, 0.1 * max(wait, base_s)))
    return min(delay, cap_s * 1.1)
