"""Scheduling: when each job's next tick is due, and which tick task runs.

One loop sleeps until the earliest due tick of the jobs that are not running, and starts
that job's tick as a task of its own (see ``_tick.py``). Missed ticks (a long run, a paused
process) are coalesced into one run for the latest tick. With ``once``, each job runs its
latest due tick now, and the loop ends when every one is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._errors import SchemaMissing, StoreError
from .._models import JobState
from .._schedule import Schedule, schedule_spec
from ..stores import open_store
from ._clock import Clock
from ._jobs import JobSpec
from ._tick import TickResult

if TYPE_CHECKING:
    from loguru import Logger

    from ._daemon import DaemonConfig

__all__ = [
    "PERIOD_TICKS",
    "Scheduler",
    "Slot",
    "alert_interval",
    "lease_name",
    "schedule_period",
]

#: Ticks looked at to find a cron schedule's shortest (and longest) period.
PERIOD_TICKS = 48

#: Starts one tick of a job: the daemon's tick, which never raises but CancelledError.
StartTick = Callable[[JobSpec, datetime], Coroutine[Any, Any, TickResult]]


def schedule_period(plan: Schedule, now: datetime) -> float:
    """The shortest time between two ticks of ``plan`` after ``now``, in seconds: the most
    a run may take before the next tick is due (``0 9,17 * * *`` gives 8 hours)."""
    return min(_gaps(plan, now))


def alert_interval(plan: Schedule, now: datetime) -> float:
    """The job's interval for alerts (``sentinel_job_interval_seconds``), in seconds: an
    interval schedule's own; for cron the gap between its next two ticks when they are
    evenly spaced, else the longest gap among the next ones (``0 9,17 * * *`` gives 16
    hours), so "no healthy run within two intervals" never fires between two due runs."""
    return max(_gaps(plan, now))


def _gaps(plan: Schedule, now: datetime) -> list[float]:
    gaps = []
    tick = plan.next_after(now)
    for _ in range(PERIOD_TICKS):
        following = plan.next_after(tick)
        gaps.append((following - tick).total_seconds())
        tick = following
    return gaps


def lease_name(spec: JobSpec, shard: tuple[int, int] | None) -> str:
    """The lease (and run-history job name) of a job: its name, or ``name:I/N``."""
    return spec.name if shard is None else f"{spec.name}:{shard[0]}/{shard[1]}"


@dataclass(slots=True)
class Slot:
    """A job in the scheduler: its next tick, and its tick task while one runs."""

    spec: JobSpec
    plan: Schedule
    next_tick: datetime
    task: asyncio.Task[TickResult] | None = None
    done: bool = False
    first_tick: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.first_tick = self.next_tick


class Scheduler:
    """Keeps each job's next tick, registers the jobs, and runs the scheduling loop.

    Args:
        config: the daemon's configuration (jobs, ``once``, ``run_on_start``, shard).
        clock: the scheduler's clock (a :class:`FakeClock` in tests).
        log: the daemon's logger (bound to its holder).
    """

    def __init__(self, config: DaemonConfig, *, clock: Clock, log: Logger) -> None:
        self.config = config
        self.clock = clock
        self.log = log
        self._registered: set[str] = set()
        self.slots = self.make_slots()

    def lease_name(self, spec: JobSpec) -> str:
        """The lease (and run-history job name) of a job: its name, or ``name:I/N``."""
        return lease_name(spec, self.config.shard)

    def known(self) -> dict[str, JobState]:
        """Each job's registration as this daemon knows it (before the database has it)."""
        return {
            self.lease_name(slot.spec): JobState(
                self.lease_name(slot.spec),
                schedule_spec(slot.plan),
                self.config.timeout,
                slot.first_tick,
            )
            for slot in self.slots
        }

    def _first_tick(self, plan: Schedule, now: datetime) -> datetime:
        if self.config.once or self.config.run_on_start:
            return plan.latest_at_or_before(now)
        return plan.next_after(now)

    def make_slots(self) -> list[Slot]:
        """A slot per job, its first tick counted from now."""
        now = self.clock.now()
        return [Slot(spec, plan, self._first_tick(plan, now)) for spec, plan in self.config.jobs]

    async def register(self, *, fail: bool) -> None:
        """Write each job's schedule, timeout and first tick to ``sentinel_jobs`` (once).

        ``status`` runs in another process: this is how it knows when a job that has not
        run yet is due. A missing migration stops the daemon at start (``fail``); a database
        that is down is retried before every tick.
        """
        todo = [s for s in self.slots if self.lease_name(s.spec) not in self._registered]
        if not todo:
            return
        try:
            async with open_store(self.config.db_url) as store:
                for slot in todo:
                    name = self.lease_name(slot.spec)
                    await store.register_job(
                        name,
                        schedule=schedule_spec(slot.plan),
                        timeout_s=self.config.timeout,
                        first_tick=slot.first_tick,
                    )
                    self._registered.add(name)
        except SchemaMissing:
            if fail:
                raise
        except StoreError as exc:
            self.log.warning("cannot register the jobs yet (retried every tick): {}", exc)

    async def loop(
        self,
        start: StartTick,
        stopping: asyncio.Event,
        on_result: Callable[[TickResult], None],
    ) -> None:
        """Start each job's tick when due until ``stopping`` is set (then wait for the ticks
        running) or, with ``once``, until every job ran its tick.

        Args:
            start: runs one tick of a job.
            stopping: set when no new tick may start.
            on_result: called with each tick's result.
        """
        slots = self.slots
        stopped = asyncio.create_task(stopping.wait(), name="sentinel-stopping")
        try:
            while True:
                running = {s.task: s for s in slots if s.task is not None}
                idle = [s for s in slots if s.task is None and not s.done]
                waiters: set[asyncio.Future[Any]] = set(running)
                sleeper = None
                if not stopping.is_set() and idle:
                    due = min(s.next_tick for s in idle)
                    sleeper = asyncio.create_task(self.clock.sleep_until(due), name="sentinel-tick")
                    waiters |= {sleeper, stopped}
                if not waiters:
                    return  # stopping with nothing running, or every `once` tick done
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if sleeper is not None and not sleeper.done():
                        sleeper.cancel()
                        await asyncio.wait({sleeper})
                for task, slot in running.items():
                    if task.done():
                        on_result(self._finished(slot, task))
                if not stopping.is_set():
                    self._start_due(slots, start)
        finally:
            stopped.cancel()
            await asyncio.wait({stopped})
            leftover = [s.task for s in slots if s.task is not None]
            for task in leftover:
                task.cancel()
            if leftover:
                await asyncio.wait(leftover)

    def _finished(self, slot: Slot, task: asyncio.Task[TickResult]) -> TickResult:
        slot.task = None
        result = task.result()  # the daemon's tick never raises but CancelledError
        if self.config.once:
            slot.done = True
        else:
            slot.next_tick = slot.plan.next_after(slot.next_tick)
        return result

    def _start_due(self, slots: list[Slot], start: StartTick) -> None:
        now = self.clock.now()
        for slot in slots:
            if slot.task is not None or slot.done or slot.next_tick > now:
                continue
            if self.config.once and _waits(slot, slots):
                continue  # --once: the jobs it needs first (sync-key-info) run before it
            latest = slot.plan.latest_at_or_before(now)
            if latest > slot.next_tick:
                missed, probe = 0, slot.next_tick
                while probe < latest:
                    probe = slot.plan.next_after(probe)
                    missed += 1
                self.log.warning(
                    "{}: {} tick(s) missed since {} (long run or paused process): "
                    "running once for {}",
                    slot.spec.name,
                    missed,
                    slot.next_tick.isoformat(),
                    latest.isoformat(),
                )
                slot.next_tick = latest
            slot.task = asyncio.create_task(
                start(slot.spec, slot.next_tick), name=f"sentinel-{slot.spec.name}"
            )


def _waits(slot: Slot, slots: list[Slot]) -> bool:
    """Whether a job's ``after`` names a job of ``slots`` that has not run its tick yet."""
    return any(
        other.spec.name in slot.spec.after and not other.done
        for other in slots
        if other is not slot
    )
