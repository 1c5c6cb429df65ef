"""The daemon: runs jobs on their schedules, one run per tick across all replicas.

For each tick of each job::

    claim lease (job, or job:I/N)  ──held by another──▶ skip quietly
        │ fence
    begin_run(job, tick)           ──tick taken──────▶ skip quietly (another replica ran it)
        │
    handler(ctx)  ◀── heartbeat renews the lease every ttl/3; a failed renewal stops the run
        │             SIGTERM: grace period, then stop; --timeout: the run's own deadline
    record_run, release lease

Every ``user_data`` write carries the fence, and the store refuses a stale one in the same
transaction, so a paused or partitioned old holder can never overwrite newer data. Missed
ticks (a long run, a paused process) are coalesced into one run for the latest tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from .._errors import ConfigError, SentinelError, StoreError
from .._models import RunRecord, RunStatus
from .._schedule import Schedule
from ..stores import Fence, Store, open_store
from ..sync import Stop, SyncReport
from ._jobs import JobContext, JobSpec

__all__ = ["Daemon", "DaemonConfig", "default_holder"]


def default_holder() -> str:
    """``hostname:pid``: names this replica in leases and run history."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class DaemonConfig:
    """How the daemon runs.

    Attributes:
        db_url: the database URL.
        jobs: the jobs to run, each with the schedule it runs on.
        timeout: a run's time budget in seconds.
        lease_ttl: seconds a lease lasts without renewal; must exceed ``timeout``.
        grace: seconds a run gets to finish after SIGTERM/SIGINT.
        run_on_start: run the latest tick at once instead of waiting for the next.
        once: run one tick per job, then exit.
        shard: ``(i, n)`` when this replica syncs one shard of the users.
        holder: this replica's name.
        settings: settings passed to job handlers (see ``JobContext.settings``).
    """

    db_url: str
    jobs: list[tuple[JobSpec, Schedule]]
    timeout: float = 3000.0
    lease_ttl: float = 3060.0
    grace: float = 30.0
    run_on_start: bool = False
    once: bool = False
    shard: tuple[int, int] | None = None
    holder: str = field(default_factory=default_holder)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lease_ttl <= self.timeout:
            raise ConfigError(
                f"--lease-ttl ({self.lease_ttl:g}s) must be longer than --timeout "
                f"({self.timeout:g}s), so a lease never expires under a run that is still allowed"
            )
        if not self.jobs:
            raise ConfigError("no job to run: check --job and --import")


class Daemon:
    """Runs the configured jobs until stopped (or once each with ``once``).

    >>> daemon = Daemon(DaemonConfig(db_url="postgresql://...", jobs=[(spec, schedule)]))
    >>> exit_code = await daemon.run()                # doctest: +SKIP
    """

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self._stopping = asyncio.Event()
        self._runs: set[Stop] = set()
        self._signals = 0
        self.log = logger.bind(holder=config.holder)

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> int:
        """Run every job loop until a signal (or, with ``once``, until each ran a tick)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        names = ", ".join(f"{spec.name} ({plan.describe()})" for spec, plan in self.config.jobs)
        self.log.info("daemon {} started: {}", self.config.holder, names)
        try:
            await asyncio.gather(*(self._job_loop(spec, plan) for spec, plan in self.config.jobs))
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        self.log.info("daemon {} stopped", self.config.holder)
        return 0

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1:
            self.log.warning("second {}: exiting now", name)
            os._exit(1)
        self.log.info(
            "{}: no new runs; the current run has {:g}s to finish", name, self.config.grace
        )
        self._stopping.set()
        asyncio.get_running_loop().call_later(self.config.grace, self._stop_runs, name)

    def _stop_runs(self, name: str) -> None:
        for stop in list(self._runs):
            stop.stop(f"stopped by {name} after the {self.config.grace:g}s grace period")

    async def _sleep_until(self, moment: datetime) -> bool:
        """Wait until ``moment``; False when a signal arrived first."""
        delay = (moment - datetime.now(UTC)).total_seconds()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        return not self._stopping.is_set()

    # -- scheduling ----------------------------------------------------------------------------

    def lease_name(self, spec: JobSpec) -> str:
        """The lease (and run-history job name) of a job: its name, or ``name:I/N``."""
        shard = self.config.shard
        return spec.name if shard is None else f"{spec.name}:{shard[0]}/{shard[1]}"

    async def _job_loop(self, spec: JobSpec, plan: Schedule) -> None:
        now = datetime.now(UTC)
        tick = plan.latest_at_or_before(now) if self.config.run_on_start else plan.next_after(now)
        while not self._stopping.is_set():
            if not await self._sleep_until(tick):
                return
            latest = plan.latest_at_or_before(datetime.now(UTC))
            if latest > tick:
                missed = 0
                probe = tick
                while probe < latest:
                    probe = plan.next_after(probe)
                    missed += 1
                self.log.warning(
                    "{}: {} tick(s) missed since {} (long run or paused process): "
                    "running once for {}",
                    spec.name,
                    missed,
                    tick.isoformat(),
                    latest.isoformat(),
                )
                tick = latest
            try:
                await self._run_tick(spec, tick)
            except SentinelError as exc:
                # The database is down or misconfigured: log, keep the schedule, try next tick.
                self.log.error("{} tick {}: {}", spec.name, tick.isoformat(), exc)
            if self.config.once:
                return
            tick = plan.next_after(tick)

    async def _run_tick(self, spec: JobSpec, tick: datetime) -> RunRecord | None:
        """Run one tick if this replica gets both the lease and the tick; return its record."""
        cfg = self.config
        lease = self.lease_name(spec)
        async with open_store(cfg.db_url) as store:
            fence = await store.claim_lease(lease, cfg.holder, cfg.lease_ttl)
            if fence is None:
                current = await store.get_lease(lease)
                self.log.info(
                    "{} tick {}: skipped, lease {} held by {}",
                    spec.name,
                    tick.isoformat(),
                    lease,
                    current.holder if current else "another replica",
                )
                return None
            try:
                abandoned = await store.abandon_runs(lease, fence=fence.token, holder=cfg.holder)
                if abandoned:
                    self.log.warning(
                        "{}: marked {} run(s) of a previous holder as abandoned", lease, abandoned
                    )
                run_id = str(uuid.uuid4())
                started = datetime.now(UTC)
                # A shard's runs are its own: keyed by the lease name (sync-users:0/2), so every
                # shard runs every tick and the history tells the shards apart.
                record = RunRecord(
                    run_id,
                    lease,
                    "running",
                    started,
                    scheduled_for=tick,
                    holder=cfg.holder,
                    fence=fence.token,
                )
                if not await store.begin_run(record):
                    self.log.info("{} tick {}: skipped, already run", spec.name, tick.isoformat())
                    return None
                self.log.info(
                    "{} tick {}: run {} started (fence {})",
                    spec.name,
                    tick.isoformat(),
                    run_id,
                    fence.token,
                )
                report = await self._execute(spec, store, record, fence)
                await store.record_run(
                    report, scheduled_for=tick, holder=cfg.holder, fence=fence.token
                )
                self.log.info(
                    "{} tick {}: run {} finished: {}",
                    spec.name,
                    tick.isoformat(),
                    run_id,
                    report.summary(),
                )
                return record
            finally:
                with contextlib.suppress(StoreError):
                    await store.release_lease(fence, cfg.holder)

    async def _execute(
        self, spec: JobSpec, store: Store, record: RunRecord, fence: Fence
    ) -> SyncReport:
        cfg = self.config
        stop = Stop()
        self._runs.add(stop)
        ctx = JobContext(
            job=record.job,
            run_id=record.run_id,
            scheduled_for=record.scheduled_for or record.started_at,
            store_url=cfg.db_url,
            fence=fence,
            stop=stop,
            timeout=cfg.timeout,
            settings={**cfg.settings, "shard": cfg.shard},
            started_at=record.started_at,
        )
        heartbeat = asyncio.create_task(self._heartbeat(store, fence, stop), name="heartbeat")
        handler: asyncio.Future[SyncReport] = asyncio.ensure_future(spec.handler(ctx))
        try:
            # The job handles its own deadline and stop; this outer bound only catches a
            # handler that ignores both.
            return await asyncio.wait_for(
                asyncio.shield(handler), timeout=cfg.timeout + cfg.grace + 10
            )
        except TimeoutError:
            handler.cancel()
            with contextlib.suppress(BaseException):
                await handler
            return ctx.report(RunStatus.TIMEOUT, error=f"the run exceeded {cfg.timeout:g}s")
        except SentinelError as exc:
            return ctx.report(RunStatus.ABORTED, error=str(exc))
        finally:
            self._runs.discard(stop)
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self, store: Store, fence: Fence, stop: Stop) -> None:
        """Renew the lease every ttl/3; on failure stop the run at once."""
        ttl = self.config.lease_ttl
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                renewed = await store.renew_lease(fence, self.config.holder, ttl)
            except StoreError as exc:
                renewed = False
                self.log.warning("lease renewal failed: {}", exc)
            if not renewed:
                self.log.warning(
                    "lease {} lost (fence {}): stopping the run", fence.lease, fence.token
                )
                stop.stop(f"lease {fence.lease} lost: another replica took over")
                return
