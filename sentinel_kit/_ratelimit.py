"""Sliding-window rate limiting shared by every concurrent task of a run.

Torn's limits are rolling windows (100 requests a minute per player, 1000 per IP), so a
limiter that resets on minute boundaries could send twice its limit across a boundary. This
one remembers the time of each admitted request and admits a new one only while fewer than
``limit`` fall inside the last ``window`` seconds.

A request is stamped when it is admitted and stamped again when it completes: the server
counts it on arrival, which lies between the two, so counting from completion can only
over-estimate what the server saw, never under-estimate it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

__all__ = ["KeyedLimiter", "SlidingWindowLimiter"]


class SlidingWindowLimiter:
    """Admit at most ``limit`` events in any rolling ``window`` seconds; FIFO for waiters.

    A ``limit`` of 0 (or less) disables the limiter.

    >>> limiter = SlidingWindowLimiter(600, window=60.0)
    >>> async with limiter.slot():     # doctest: +SKIP
    ...     await client.get(url)
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
        # One mutable stamp per admitted event, oldest first: [time].
        self._admitted: deque[list[float]] = deque()
        self._lock: asyncio.Lock | None = None

    @property
    def enabled(self) -> bool:
        """False when the limit is 0, i.e. no limiting at all."""
        return self.limit > 0

    def _purge(self, now: float) -> None:
        horizon = now - self.window
        while self._admitted and self._admitted[0][0] <= horizon:
            self._admitted.popleft()

    def delay(self) -> float:
        """Seconds until one more event would be admitted (0 when it would be now)."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        self._purge(now)
        if len(self._admitted) < self.limit:
            return 0.0
        return max(0.0, self._admitted[0][0] + self.window - now)

    def ready(self) -> bool:
        """True when :meth:`acquire` would admit an event at once, without waiting."""
        if not self.enabled:
            return True
        locked = self._lock is not None and self._lock.locked()
        return not locked and self.delay() == 0

    async def acquire(self) -> list[float]:
        """Wait until the window has room, then record one event; return its stamp."""
        stamp = [self._clock()]
        if not self.enabled:
            return stamp
        if self._lock is None:
            # Created lazily so the limiter binds to the loop that first uses it.
            self._lock = asyncio.Lock()
        async with self._lock:
            while (wait := self.delay()) > 0:
                await asyncio.sleep(wait)
            stamp[0] = self._clock()
            self._admitted.append(stamp)
        return stamp

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one event for the duration of the block; it counts until ``window`` after
        the block ends."""
        stamp = await self.acquire()
        try:
            yield
        finally:
            self.release(stamp)

    def release(self, stamp: list[float]) -> None:
        """End the event of ``stamp`` (from :meth:`acquire`): it counts until ``window``
        after now."""
        stamp[0] = max(stamp[0], self._clock())


class KeyedLimiter:
    """One :class:`SlidingWindowLimiter` per key label (e.g. per API key fingerprint)."""

    def __init__(self, limit: int, *, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._limiters: dict[str, SlidingWindowLimiter] = {}

    def forget(self, label: str) -> None:
        """Drop ``label``'s window (its key is done for this run), keeping memory flat."""
        self._limiters.pop(label, None)

    def get(self, label: str) -> SlidingWindowLimiter:
        """Return ``label``'s limiter, creating it on first use."""
        limiter = self._limiters.get(label)
        if limiter is None:
            limiter = self._limiters[label] = SlidingWindowLimiter(self.limit, window=self.window)
        return limiter
