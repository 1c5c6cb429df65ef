"""Sliding-window rate limiting shared by every concurrent task of a run.

Torn's limits are rolling windows (100 requests a minute per player, 1000 per IP), so a
limiter that resets on minute boundaries could send twice its limit across a boundary. This
one remembers the time of each admitted request and admits a new one only while fewer than
``limit`` fall inside the last ``window`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

__all__ = ["KeyedLimiter", "SlidingWindowLimiter"]


class SlidingWindowLimiter:
    """Admit at most ``limit`` events in any rolling ``window`` seconds; FIFO for waiters.

    A ``limit`` of 0 (or less) disables the limiter.

    >>> limiter = SlidingWindowLimiter(600, window=60.0)
    >>> # await limiter.acquire() before each request
    """

    def __init__(
        self,
        limit: int,
        *,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._admitted: deque[float] = deque()
        self._lock: asyncio.Lock | None = None

    @property
    def enabled(self) -> bool:
        """False when the limit is 0, i.e. no limiting at all."""
        return self.limit > 0

    def _purge(self, now: float) -> None:
        horizon = now - self.window
        while self._admitted and self._admitted[0] <= horizon:
            self._admitted.popleft()

    def delay(self) -> float:
        """Seconds until one more event would be admitted (0 when it would be now)."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        self._purge(now)
        if len(self._admitted) < self.limit:
            return 0.0
        return max(0.0, self._admitted[0] + self.window - now)

    async def acquire(self) -> None:
        """Wait until the window has room, then record one event."""
        if not self.enabled:
            return
        if self._lock is None:
            # Created lazily so the limiter binds to the loop that first uses it.
            self._lock = asyncio.Lock()
        async with self._lock:
            while (wait := self.delay()) > 0:
                await asyncio.sleep(wait)
            self._admitted.append(self._clock())


class KeyedLimiter:
    """One :class:`SlidingWindowLimiter` per key label (e.g. per API key fingerprint)."""

    def __init__(self, limit: int, *, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._limiters: dict[str, SlidingWindowLimiter] = {}

    async def acquire(self, label: str) -> None:
        """Wait for room in ``label``'s window, then record one event."""
        if self.limit <= 0:
            return
        limiter = self._limiters.get(label)
        if limiter is None:
            limiter = self._limiters[label] = SlidingWindowLimiter(self.limit, window=self.window)
        await limiter.acquire()
