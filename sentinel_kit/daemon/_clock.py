"""The daemon's clock: when it is, and waiting until a tick. Injectable, for tests.

Only the schedule reads this clock (which tick is due, how long to sleep). Leases expire by
the database's own clock and heartbeats renew them in real seconds, so those stay real.

:class:`FakeClock` lets a test drive many ticks in a blink: ``sleep_until`` jumps straight
to the moment asked for. The daemon has one scheduler loop, the clock's only sleeper, so
ticks come in schedule order exactly as they would in real time, only without the waits.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """What the daemon's scheduler needs of time."""

    def now(self) -> datetime:
        """The current time (aware, UTC)."""
        ...

    async def sleep_until(self, moment: datetime) -> None:
        """Return at ``moment`` (at once if it has passed); cancellable."""
        ...


class SystemClock:
    """Wall-clock time and real sleeps."""

    def now(self) -> datetime:
        """``datetime.now(UTC)``."""
        return datetime.now(UTC)

    async def sleep_until(self, moment: datetime) -> None:
        """Sleep the real time left until ``moment``."""
        delay = (moment - datetime.now(UTC)).total_seconds()
        await asyncio.sleep(max(0.0, delay))


class FakeClock:
    """Virtual time that jumps to each moment slept for, instead of waiting.

    >>> clock = FakeClock(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
    >>> daemon = Daemon(config, clock=clock)          # doctest: +SKIP

    Args:
        start: the virtual time to start at (aware).
    """

    def __init__(self, start: datetime) -> None:
        self._now = start.astimezone(UTC)
        #: Every moment the daemon slept until, in order.
        self.slept_until: list[datetime] = []

    def now(self) -> datetime:
        """The virtual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move virtual time forward, as if the process had been paused that long."""
        self._now += timedelta(seconds=seconds)

    async def sleep_until(self, moment: datetime) -> None:
        """Jump to ``moment`` (never backwards) and let other tasks run once."""
        self.slept_until.append(moment)
        self._now = max(self._now, moment)
        await asyncio.sleep(0)
