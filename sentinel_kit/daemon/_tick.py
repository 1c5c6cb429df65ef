"""One tick of one job: claim its lease, take the tick, run the handler with a heartbeat.

::

    claim lease (job, or job:I/N)  ──held by another──▶ skip quietly
        │ fence
    begin_run(job, tick)           ──tick taken──────▶ skip quietly (another replica ran it)
        │
    handler(ctx)  ◀── heartbeat renews the lease every min(ttl/3, 60 s); the run stops when
        │             the database says another holder has the lease, or when no renewal
        │             answered before the lease ran out (a failed one is retried meanwhile)
        │             SIGTERM: grace period, then stop; --timeout: the run's own deadline
    record_run, release lease

Every ``user_data`` write carries the fence, and the store refuses a stale one in the same
transaction, so a paused or partitioned old holder can never overwrite newer data. A job
whose handler raises is recorded ``aborted`` with the one-line cause.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._errors import SentinelError, StoreError, WrongSecret
from .._models import RunRecord, RunStatus
from .._report import SyncReport, run_log_fields
from .._stop import Stop
from ..stores import Fence, Store
from ._jobs import JobContext, JobSpec

if TYPE_CHECKING:
    from loguru import Logger

    from ..ops._health_rule import JobHealth
    from ..ops._metrics import Metrics
    from ._daemon import DaemonConfig

__all__ = ["MAX_RENEW_INTERVAL", "TickResult", "TickRunner", "renew_interval"]

#: The longest time between two lease renewals: NATs and cloud load balancers drop a TCP
#: connection idle for 4-6 minutes, and a renewal every ttl/3 (17 minutes by default) would
#: find its connection dropped every time.
MAX_RENEW_INTERVAL = 60.0


def renew_interval(ttl: float) -> float:
    """Seconds between two lease renewals: ttl/3, at most :data:`MAX_RENEW_INTERVAL`."""
    return min(ttl / 3, MAX_RENEW_INTERVAL)


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one tick of one job came to.

    Attributes:
        job: the job's lease name.
        tick: the tick.
        report: the run's report when this replica ran it; None when it skipped the tick
            (lease held elsewhere, tick already taken) or could not reach the database.
        health: the job's health after the tick, when it could be read.
        exit_code: what ``daemon --once`` exits with for this job.
    """

    job: str
    tick: datetime
    report: SyncReport | None
    health: JobHealth | None
    exit_code: int


class TickRunner:
    """Runs a job's tick under its lease, fenced, with a heartbeat; stops the runs on demand.

    Args:
        config: the daemon's configuration (holder, lease TTL, timeout, grace, settings).
        metrics: the lease gauge to update, handed to the jobs as ``settings["metrics"]``.
        log: the daemon's logger (bound to its holder).
    """

    def __init__(self, config: DaemonConfig, *, metrics: Metrics | None, log: Logger) -> None:
        self.config = config
        self.metrics = metrics
        self.log = log
        self._runs: set[Stop] = set()
        #: When each held lease was claimed (monotonic seconds): the heartbeat counts the
        #: lease's validity from there until its first renewal.
        self._claimed_at: dict[Fence, float] = {}

    def stop_runs(self, name: str) -> None:
        """Stop every run in progress: the grace period after ``name`` (a signal) is over."""
        for stop in list(self._runs):
            stop.stop(f"stopped by {name} after the {self.config.grace:g}s grace period")

    async def hold(
        self, spec: JobSpec, store: Store, lease: str, tick: datetime
    ) -> tuple[SyncReport | None, int | None]:
        """Claim ``lease`` and, when this replica gets it, run the tick and release it.

        Returns:
            The run's report (None when the lease or the tick was taken elsewhere) and, when
            the handler raised one of our errors, that error's exit code.

        Raises:
            StoreError: the database failed.
        """
        cfg = self.config
        claimed_at = time.monotonic()
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
            return None, None
        self._lease(lease, True)
        self._claimed_at[fence] = claimed_at
        try:
            return await self._claimed(spec, store, fence, tick)
        finally:
            self._claimed_at.pop(fence, None)
            self._lease(lease, False)
            try:
                await store.release_lease(fence, cfg.holder)
            except StoreError as exc:
                self.log.warning("{}: cannot release lease: {}", lease, exc)

    def _lease(self, lease: str, held: bool) -> None:
        if self.metrics is not None:
            self.metrics.set_lease(lease, held)

    async def _claimed(
        self, spec: JobSpec, store: Store, fence: Fence, tick: datetime
    ) -> tuple[SyncReport | None, int | None]:
        """With the lease: take the tick, run the handler, record the run."""
        cfg = self.config
        lease = fence.lease
        abandoned = await store.abandon_runs(lease, fence=fence.token, holder=cfg.holder)
        if abandoned:
            self.log.warning(
                "{}: marked {} run(s) of a previous holder as abandoned", lease, abandoned
            )
        run_id = str(uuid.uuid4())
        # A shard's runs are its own: keyed by the lease name (sync-users:0/2), so every
        # shard runs every tick and the history tells the shards apart.
        record = RunRecord(
            run_id,
            lease,
            "running",
            datetime.now(UTC),
            scheduled_for=tick,
            holder=cfg.holder,
            fence=fence.token,
        )
        if not await store.begin_run(record):
            self.log.info("{} tick {}: skipped, already run", spec.name, tick.isoformat())
            return None, None
        log = self.log.bind(job=lease, run_id=run_id, event="tick_started")
        log.info(
            "{} tick {}: run {} started (fence {})",
            spec.name,
            tick.isoformat(),
            run_id,
            fence.token,
        )
        report, forced = await self._execute(spec, store, record, fence)
        await store.record_run(report, scheduled_for=tick, holder=cfg.holder, fence=fence.token)
        log.bind(event="tick_finished", **_fields(report)).info(
            "{} tick {}: run {} finished: {}", spec.name, tick.isoformat(), run_id, report.summary()
        )
        return report, forced

    async def _execute(
        self, spec: JobSpec, store: Store, record: RunRecord, fence: Fence
    ) -> tuple[SyncReport, int | None]:
        """Run the handler under its deadline; return its report and, when it raised one of
        our errors, that error's exit code."""
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
            settings={**cfg.settings, "shard": cfg.shard, "metrics": self.metrics},
            started_at=record.started_at,
        )
        heartbeat = asyncio.create_task(self._heartbeat(store, fence, stop), name="heartbeat")
        handler: asyncio.Task[SyncReport] = asyncio.create_task(_call(spec, ctx))
        try:
            # The job handles its own deadline and stop; this outer bound only catches a
            # handler that ignores both.
            done, _ = await asyncio.wait({handler}, timeout=cfg.timeout + cfg.grace + 10)
            if not done:
                await _cancel(handler)
                report = ctx.report(RunStatus.TIMEOUT, error=f"the run exceeded {cfg.timeout:g}s")
                return replace(report, cause="timeout"), None
            return self._outcome(spec, ctx, handler)
        except asyncio.CancelledError:
            # The daemon itself is being cancelled: take the handler down with it.
            await _cancel(handler)
            raise
        finally:
            self._runs.discard(stop)
            await _cancel(heartbeat)

    def _outcome(
        self, spec: JobSpec, ctx: JobContext, handler: asyncio.Task[SyncReport]
    ) -> tuple[SyncReport, int | None]:
        report, code = self._ended(spec, ctx, handler)
        if report.status in (RunStatus.ABORTED, RunStatus.TIMEOUT) and report.cause is None:
            # A plugin's report, or one made here: a bounded cause for the metrics.
            exc = None if handler.cancelled() else handler.exception()
            report = replace(report, cause=_cause_of(report, exc, handler.cancelled()))
        return report, code

    def _ended(
        self, spec: JobSpec, ctx: JobContext, handler: asyncio.Task[SyncReport]
    ) -> tuple[SyncReport, int | None]:
        if handler.cancelled():
            return ctx.report(RunStatus.ABORTED, error="the job was cancelled"), None
        exc = handler.exception()
        if exc is None:
            report = handler.result()
            if isinstance(report, SyncReport):
                return report, None
            return ctx.report(
                RunStatus.ABORTED,
                error=f"job {spec.name} returned {type(report).__name__}, not a SyncReport "
                "(return ctx.report(...))",
            ), None
        if isinstance(exc, SentinelError):
            partial = getattr(exc, "report", None)
            if isinstance(partial, SyncReport):
                return partial, exc.exit_code
            return ctx.report(RunStatus.ABORTED, error=str(exc)), exc.exit_code
        # A plugin's bug: one line in the run history, the traceback in the log.
        cause = _one_line(exc)
        self.log.opt(exception=exc).error("job {} failed: {}", spec.name, cause)
        return ctx.report(RunStatus.ABORTED, error=f"job {spec.name} failed: {cause}"), None

    async def _heartbeat(self, store: Store, fence: Fence, stop: Stop) -> None:
        """Renew the lease every :func:`renew_interval` (real seconds: the lease expires by
        the database's clock) until the run ends or :meth:`_renew` stops it."""
        every = renew_interval(self.config.lease_ttl)
        valid_from: float | None = self._claimed_at.get(fence, time.monotonic())
        while valid_from is not None:
            await asyncio.sleep(every)
            valid_from = await self._renew(store, fence, stop, valid_from, every)

    async def _renew(
        self, store: Store, fence: Fence, stop: Stop, valid_from: float, every: float
    ) -> float | None:
        """Renew the lease once, retrying a failed renewal while the lease is still ours.

        The lease is ours for ``lease_ttl`` seconds from the start of the last renewal the
        database answered (``valid_from``, monotonic; the database counts from a little
        later). A renewal that fails (the connection dropped, the database is down) is
        retried with a growing pause while that lasts. The run is stopped when the database
        answers that another holder has the lease, or when the lease ran out with no
        renewal answered.

        Returns:
            The new ``valid_from``, or None when the run was stopped.
        """
        ttl = self.config.lease_ttl
        pause = min(1.0, every / 4)
        failures = 0
        while (left := valid_from + ttl - time.monotonic()) > 0:
            started = time.monotonic()
            try:
                # Bounded by the lease: an answer after it ran out would come too late.
                async with asyncio.timeout(left):
                    held = await store.renew_lease(fence, self.config.holder, ttl)
            except (StoreError, TimeoutError) as exc:
                failures += 1
                left = valid_from + ttl - time.monotonic()
                self.log.bind(event="lease_retry").warning(
                    "lease {} renewal failed: {}; retrying in {:g}s, lease valid for {:,.1f}s more",
                    fence.lease,
                    str(exc) or "no answer in time",
                    pause,
                    max(left, 0.0),
                )
                await asyncio.sleep(min(pause, max(left, 0.0)))
                pause = min(pause * 2, every)
                continue
            if not held:
                self.log.warning(
                    "lease {} lost (fence {}): another replica took over; stopping the run",
                    fence.lease,
                    fence.token,
                )
                stop.stop(f"lease {fence.lease} lost: another replica took over", cause="other")
                return None
            if failures:
                self.log.info("lease {} renewed after {} failed attempt(s)", fence.lease, failures)
            return started
        self.log.error(
            "lease {} ran out: no renewal reached the database for {:g}s; stopping the run",
            fence.lease,
            ttl,
        )
        stop.stop(
            f"lease {fence.lease} expired: the database was unreachable for {ttl:g}s, "
            "no renewal answered",
            cause="store",
        )
        return None


async def _call(spec: JobSpec, ctx: JobContext) -> SyncReport:
    return await spec.handler(ctx)


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it to end, without swallowing our own cancellation:
    ``asyncio.wait`` never raises the task's error, and raises CancelledError only when the
    task *calling* it is cancelled."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: it ended with an error while being cancelled


def _cause_of(report: SyncReport, exc: BaseException | None, cancelled: bool) -> str:
    """The abort cause of a run whose report names none (from how it ended, never from
    its free text)."""
    if report.status is RunStatus.TIMEOUT:
        return "timeout"
    if cancelled:
        return "interrupted"
    if isinstance(exc, WrongSecret):
        return "wrong_secret"
    if isinstance(exc, StoreError):
        return "store"
    if exc is not None and not isinstance(exc, SentinelError):
        return "internal"
    return "other"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _fields(report: SyncReport) -> dict[str, Any]:
    return run_log_fields(report)
