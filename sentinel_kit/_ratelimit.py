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
import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

__all__ = ["FairLimiter", "KeyedFairLimiter", "KeyedLimiter", "SlidingWindowLimiter"]


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


class _Ticket:
    """One waiter of a :class:`FairLimiter`: its party, and the future its loop awaits."""

    __slots__ = ("future", "loop", "party", "stamp")

    def __init__(self, party: str, loop: asyncio.AbstractEventLoop) -> None:
        self.party = party
        self.loop = loop
        self.future: asyncio.Future[list[float]] = loop.create_future()
        self.stamp: list[float] | None = None


def _resolve(future: asyncio.Future[list[float]], stamp: list[float]) -> None:
    if not future.done():
        future.set_result(stamp)


class FairLimiter:
    """A rolling window shared by several parties (jobs), fair between them, and usable from
    any thread and event loop of the process.

    Admits at most ``limit`` events in any rolling ``window`` seconds, like
    :class:`SlidingWindowLimiter`. When the window is full, waiters queue per party, and each
    free place goes to the waiting party served least recently: while several parties wait,
    they take turns, so each gets at least an equal share however long another's queue is
    (a 17-minute pass never holds a 30-second job behind it). Within a party, first come,
    first served. Queued waiters get places evenly, one per ``window / limit`` seconds, so
    a full window frees places all along rather than in one burst a window later. A
    ``limit`` of 0 (or less) disables it.

    ``SyncJob.run()`` runs each run on a loop thread of its own, so one process budget is
    awaited from several loops at once: the state sits behind a thread lock, and a place
    freed for a waiter of another loop is handed over with ``call_soon_threadsafe``.

    >>> limiter = FairLimiter(600)
    >>> stamp = await limiter.acquire("sync-users")      # doctest: +SKIP
    >>> ...; limiter.release(stamp)
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
        self._mutex = threading.Lock()
        # One mutable stamp per admitted event, oldest first: [time].
        self._admitted: deque[list[float]] = deque()
        self._queues: dict[str, deque[_Ticket]] = {}
        #: The turn at which each party was last served (lower: longer ago).
        self._served: dict[str, int] = {}
        #: Once requests queue, places go out one per ``window / limit`` seconds, not all
        #: at once when a burst's stamps leave the window together: a job that arrives
        #: while another's long pass keeps the window full finds a place within a second
        #: or so (at 600 a minute, every 0.1 s), instead of at the pass's next burst.
        self._interval = window / limit if limit > 0 else 0.0
        self._paced_until = float("-inf")
        self._turn = itertools.count()
        #: Events admitted per party since this limiter was made (the daemon's measure).
        self.admitted_by: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        """False when the limit is 0, i.e. no limiting at all."""
        return self.limit > 0

    def waiting(self) -> int:
        """Waiters queued, all parties together."""
        with self._mutex:
            return sum(len(q) for q in self._queues.values())

    def _purge(self, now: float) -> None:
        horizon = now - self.window
        while self._admitted and self._admitted[0][0] <= horizon:
            self._admitted.popleft()

    def _delay(self, now: float) -> float:
        self._purge(now)
        if len(self._admitted) < self.limit:
            return 0.0
        return max(0.0, self._admitted[0][0] + self.window - now)

    def delay(self) -> float:
        """Seconds until one more event would be admitted (0 when it would be now)."""
        if not self.enabled:
            return 0.0
        with self._mutex:
            return self._delay(self._clock())

    def ready(self) -> bool:
        """True when :meth:`acquire` would admit an event at once: room, and nobody queued."""
        if not self.enabled:
            return True
        with self._mutex:
            return not self._queues and self._delay(self._clock()) == 0

    def idle(self) -> bool:
        """True when nothing counts in the window and nobody waits (it may be dropped)."""
        with self._mutex:
            self._purge(self._clock())
            return not self._admitted and not self._queues

    def _grant(self, party: str, now: float) -> list[float]:
        stamp = [now]
        self._admitted.append(stamp)
        self._served[party] = next(self._turn)
        self.admitted_by[party] = self.admitted_by.get(party, 0) + 1
        return stamp

    def _next_party(self) -> str | None:
        if not self._queues:
            return None
        # Least recently served first; a party never served before goes first of all.
        return min(self._queues, key=lambda p: self._served.get(p, -1))

    def _dispatch(self) -> float:
        """Hand every free place to the waiters in fair order; return the seconds until
        the next place frees (0 when nobody waits). Called with the mutex held."""
        now = self._clock()
        while self._delay(now) == 0 and now >= self._paced_until:
            party = self._next_party()
            if party is None:
                return 0.0
            self._paced_until = now + self._interval
            queue = self._queues[party]
            ticket = queue.popleft()
            if not queue:
                del self._queues[party]
            ticket.stamp = self._grant(party, now)
            try:
                ticket.loop.call_soon_threadsafe(_resolve, ticket.future, ticket.stamp)
            except RuntimeError:
                # Its loop is closed: nobody will send that request.
                self._forget(ticket.stamp)
                ticket.stamp = None
        if not self._queues:
            return 0.0
        return max(self._delay(now), self._paced_until - now)

    def _forget(self, stamp: list[float]) -> None:
        for i, admitted in enumerate(self._admitted):
            if admitted is stamp:
                del self._admitted[i]
                return

    async def acquire(self, party: str = "") -> list[float]:
        """Wait for a place in the window, in fair turn among parties; return its stamp.

        Args:
            party: who asks (a job's name): parties share the window fairly.

        Returns:
            The event's stamp, to pass to :meth:`release` when the request completes.
        """
        if not self.enabled:
            return [self._clock()]
        loop = asyncio.get_running_loop()
        with self._mutex:
            now = self._clock()
            if not self._queues and self._delay(now) == 0:
                return self._grant(party, now)
            ticket = _Ticket(party, loop)
            self._queues.setdefault(party, deque()).append(ticket)
        try:
            while True:
                with self._mutex:
                    wait = self._dispatch()
                    if ticket.stamp is not None:
                        return ticket.stamp
                # Whoever wakes first when a place frees hands it out, to whichever party's
                # turn it is (a waiter of another loop included); the rest sleep again.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(wait, 0.001)):
                        return await asyncio.shield(ticket.future)
        except BaseException:
            # Cancelled (a time box, a stop): it sends nothing, so it counts for nothing.
            with self._mutex:
                if ticket.stamp is not None:
                    self._forget(ticket.stamp)
                else:
                    queue = self._queues.get(party)
                    if queue is not None and ticket in queue:
                        queue.remove(ticket)
                        if not queue:
                            del self._queues[party]
            raise

    def release(self, stamp: list[float]) -> None:
        """End the event of ``stamp`` (from :meth:`acquire`): it counts until ``window``
        after now."""
        with self._mutex:
            stamp[0] = max(stamp[0], self._clock())

    def cancel(self, stamp: list[float]) -> None:
        """Take back the event of ``stamp``: its request was never sent."""
        with self._mutex:
            self._forget(stamp)


class KeyedFairLimiter:
    """One :class:`FairLimiter` per label (a key's owner), kept while its window holds
    anything: shared by every job of the process, so a player's window outlives one run.

    Windows that fell idle are dropped as new labels come, keeping memory to the owners seen
    within the last ``window`` seconds.
    """

    #: Labels added between two sweeps of idle windows.
    SWEEP_EVERY = 256

    def __init__(self, limit: int, *, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._limiters: dict[str, FairLimiter] = {}
        self._mutex = threading.Lock()
        self._added = 0

    def __len__(self) -> int:
        with self._mutex:
            return len(self._limiters)

    def get(self, label: str) -> FairLimiter:
        """Return ``label``'s limiter, creating it on first use."""
        with self._mutex:
            limiter = self._limiters.get(label)
            if limiter is not None:
                return limiter
            self._added += 1
            if self._added >= self.SWEEP_EVERY:
                self._added = 0
                self._limiters = {k: v for k, v in self._limiters.items() if not v.idle()}
            limiter = self._limiters[label] = FairLimiter(self.limit, window=self.window)
            return limiter
