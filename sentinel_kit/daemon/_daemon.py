"""The daemon: runs jobs on their schedules, one run per tick across all replicas.

One scheduler loop sleeps until the earliest due tick of the jobs that are not running, and
starts that job's tick as a task of its own. For each tick::

    claim lease (job, or job:I/N)  ──held by another──▶ skip quietly
        │ fence
    begin_run(job, tick)           ──tick taken──────▶ skip quietly (another replica ran it)
        │
    handler(ctx)  ◀── heartbeat renews the lease every min(ttl/3, 60 s); the run stops when
        │             the database says another holder has the lease, or when no renewal
        │             answered before the lease ran out (a failed one is retried meanwhile)
        │             SIGTERM: grace period, then stop; --timeout: the run's own deadline
    record_run, release lease
        │
    health rule ──▶ metrics, alert state (compare-and-set in the database) ──▶ alert

Every ``user_data`` write carries the fence, and the store refuses a stale one in the same
transaction, so a paused or partitioned old holder can never overwrite newer data. Missed
ticks (a long run, a paused process) are coalesced into one run for the latest tick. A job
whose handler raises is recorded ``aborted`` with the one-line cause; the other jobs go on.

With ``once``, each job runs its latest due tick now, and :meth:`Daemon.run` returns 0 when
every job is healthy, else the highest exit code among them (2 the wrong secret, 3 aborted
or timed out, 1 partial below ``min_synced``): the entry point for a platform's cron.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from loguru import logger

from .._errors import ConfigError, SchemaMissing, SentinelError, StoreError
from .._models import JobState, RunRecord, RunStatus
from .._schedule import Schedule, schedule_spec
from .._secrets import SecretURL, mask_settings
from ..ops._alerts import Alerter, alert_message, record_alert_state
from ..ops._health_rule import (
    DEFAULT_MIN_SYNCED,
    JobHealth,
    check_min_synced,
    judge_job,
    run_exit_code,
    run_is_healthy,
)
from ..ops._status import RUNS_PER_JOB, job_backlog, job_statuses
from ..stores import Fence, Store, open_store
from ..sync import SYNC_JOB_NAME, Stop, SyncReport
from ..sync._plan import Coverage
from ._clock import Clock, SystemClock
from ._jobs import JobContext, JobSpec

if TYPE_CHECKING:
    from ..ops._metrics import Metrics

__all__ = [
    "MAX_RENEW_INTERVAL",
    "Daemon",
    "DaemonConfig",
    "TickResult",
    "default_holder",
    "renew_interval",
    "schedule_period",
]

#: Seconds ``/healthz`` may take to read the run history before it answers 503.
HEALTHZ_TIMEOUT = 10.0
#: Ticks looked at to find a cron schedule's shortest period.
PERIOD_TICKS = 48
#: The longest time between two lease renewals: NATs and cloud load balancers drop a TCP
#: connection idle for 4-6 minutes, and a renewal every ttl/3 (17 minutes by default) would
#: find its connection dropped every time.
MAX_RENEW_INTERVAL = 60.0


def renew_interval(ttl: float) -> float:
    """Seconds between two lease renewals: ttl/3, at most :data:`MAX_RENEW_INTERVAL`."""
    return min(ttl / 3, MAX_RENEW_INTERVAL)


def schedule_period(plan: Schedule, now: datetime) -> float:
    """The shortest time between two ticks of ``plan`` after ``now``, in seconds: the most
    a run may take before the next tick is due (``0 9,17 * * *`` gives 8 hours)."""
    gaps = []
    tick = plan.next_after(now)
    for _ in range(PERIOD_TICKS):
        following = plan.next_after(tick)
        gaps.append((following - tick).total_seconds())
        tick = following
    return min(gaps)


def default_holder() -> str:
    """``hostname:pid``: names this replica in leases and run history."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class DaemonConfig:
    """How the daemon runs.

    Attributes:
        db_url: the database URL (held as a :class:`~sentinel_kit.SecretURL`: it prints
            with its password masked).
        jobs: the jobs to run, each with the schedule it runs on.
        timeout: a run's time budget in seconds.
        lease_ttl: seconds a lease lasts without renewal; must exceed ``timeout``.
        grace: seconds a run gets to finish after SIGTERM/SIGINT.
        run_on_start: run the latest tick at once instead of waiting for the next.
        once: run each job's latest due tick now, then exit.
        shard: ``(i, n)`` when this replica syncs one shard of the users.
        holder: this replica's name.
        settings: settings passed to job handlers (see ``JobContext.settings``); the
            secrets among them are held as :class:`~sentinel_kit.Secret`.
        min_synced: the share of attempted keys a partial run must sync to be healthy.
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
    min_synced: float = DEFAULT_MIN_SYNCED

    def __post_init__(self) -> None:
        self.db_url = SecretURL(self.db_url)
        self.settings = mask_settings(dict(self.settings))
        if self.lease_ttl <= self.timeout:
            raise ConfigError(
                f"--lease-ttl ({self.lease_ttl:g}s) must be longer than --timeout "
                f"({self.timeout:g}s), so a lease never expires under a run that is still allowed"
            )
        if not self.jobs:
            raise ConfigError("no job to run: check --job and --import")
        check_min_synced(self.min_synced)


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


@dataclass(slots=True)
class _Slot:
    """A job in the scheduler: its next tick, and its tick task while one runs."""

    spec: JobSpec
    plan: Schedule
    next_tick: datetime
    task: asyncio.Task[TickResult] | None = None
    done: bool = False
    first_tick: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.first_tick = self.next_tick


class Daemon:
    """Runs the configured jobs until stopped (or once each with ``once``).

    >>> daemon = Daemon(DaemonConfig(db_url="postgresql://...", jobs=[(spec, schedule)]))
    >>> exit_code = await daemon.run()                # doctest: +SKIP

    Args:
        config: how to run.
        clock: the scheduler's clock (a :class:`FakeClock` in tests).
        metrics: Prometheus metrics to update (see ``--metrics-port``).
        alerter: where to send health alerts (see ``--alert``).
    """

    def __init__(
        self,
        config: DaemonConfig,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        alerter: Alerter | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.metrics = metrics
        self.alerter = alerter
        self.results: list[TickResult] = []
        self._stopping = asyncio.Event()
        self._runs: set[Stop] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._registered: set[str] = set()
        #: When each held lease was claimed (monotonic seconds): the heartbeat counts the
        #: lease's validity from there until its first renewal.
        self._claimed_at: dict[Fence, float] = {}
        self._slots = self._make_slots()
        self._signals = 0
        self.log = logger.bind(holder=config.holder)
        #: How sync-users' runs cover the users, as planned at start (None until then).
        self.coverage: Coverage | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> int:
        """Run every job on its schedule until a signal or :meth:`stop` (or, with ``once``,
        until each ran its latest due tick).

        Args:
            handle_signals: install SIGTERM/SIGINT handlers (the CLI); in-process callers
                that own their signals pass False and call :meth:`stop`.

        Returns:
            0; with ``once``, the highest exit code among the jobs' ticks (0 all healthy).

        Raises:
            SchemaMissing: the database lacks a migration (nothing was run).
        """
        loop = asyncio.get_running_loop()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._on_signal, signum)
        names = ", ".join(f"{spec.name} ({plan.describe()})" for spec, plan in self.config.jobs)
        self.log.info("daemon {} started: {}", self.config.holder, names)
        try:
            await self._schedule()
        finally:
            if handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
            if self._background:
                # Alerts still being delivered (each bounded by the alerter's timeout).
                await asyncio.wait(self._background)
        self.log.info("daemon {} stopped", self.config.holder)
        if not self.config.once:
            return 0
        return max((r.exit_code for r in self.results), default=0)

    def stop(self, reason: str = "stopped") -> None:
        """Start no new tick; the current runs get ``grace`` seconds, then are stopped."""
        if self._stopping.is_set():
            return
        self.log.info(
            "{}: no new runs; the current run has {:g}s to finish", reason, self.config.grace
        )
        self._stopping.set()
        asyncio.get_running_loop().call_later(self.config.grace, self._stop_runs, reason)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1:
            self.log.warning("second {}: exiting now", name)
            os._exit(1)
        self.stop(name)

    def _stop_runs(self, name: str) -> None:
        for stop in list(self._runs):
            stop.stop(f"stopped by {name} after the {self.config.grace:g}s grace period")

    # -- the budget ----------------------------------------------------------------------------

    def run_window(self, plan: Schedule) -> float:
        """Seconds a sync-users run may start users for: its time box, else the shorter of
        the schedule's period and the timeout."""
        time_box = self.config.settings.get("time_box")
        if time_box:
            return float(time_box)
        return min(schedule_period(plan, self.clock.now()), self.config.timeout)

    async def _announce_budget(self) -> None:
        """Log sync-users' coverage, then the process's one Torn budget: made from
        --max-rpm for every job here, one line per job with its share, and the total."""
        from .._budget import JobDemand, daemon_budget, log_budget

        await self._announce_coverage()
        now = self.clock.now()
        planned = self.coverage.budget.requests if self.coverage is not None else None
        demands = [
            JobDemand(
                self.lease_name(spec),
                schedule_period(plan, now),
                planned if spec.name == SYNC_JOB_NAME else None,
            )
            for spec, plan in self.config.jobs
        ]
        log_budget(self.log, daemon_budget(self.config.settings), demands)

    async def _announce_coverage(self) -> None:
        """Log how long a full pass of sync-users takes and how many users a run reaches;
        warn when a run cannot cover every user, saying how many shards or what --max-rpm
        would. Reads the keys (no request to Torn); a database it cannot read yet is left
        to the ticks, which report it."""
        # Imported here: importing _sync_users registers the sync-users job.
        from ._sync_users import plan_coverage

        found = [(spec, plan) for spec, plan in self.config.jobs if spec.name == SYNC_JOB_NAME]
        if not found or "secret" not in self.config.settings:
            return  # no sync-users here, or a library caller without the CLI's settings
        spec, plan = found[0]
        lease = self.lease_name(spec)
        try:
            coverage = await plan_coverage(
                self.config.settings,
                db=self.config.db_url,
                window_s=self.run_window(plan),
                shard=self.config.shard,
            )
        except SentinelError as exc:
            self.log.warning("{}: cannot plan the request budget yet: {}", lease, exc)
            return
        self.coverage = coverage
        self.log.bind(job=lease, event="budget", **coverage.to_dict()).info(
            "{} budget: {}", lease, coverage.budget.describe()
        )
        warning = coverage.warning(lease)
        if warning is not None:
            self.log.bind(job=lease, event="budget_warning").warning(warning)

    # -- scheduling ----------------------------------------------------------------------------

    def lease_name(self, spec: JobSpec) -> str:
        """The lease (and run-history job name) of a job: its name, or ``name:I/N``."""
        shard = self.config.shard
        return spec.name if shard is None else f"{spec.name}:{shard[0]}/{shard[1]}"

    def job_names(self) -> list[str]:
        """The lease names of the configured jobs (what ``/healthz`` judges)."""
        return [self.lease_name(spec) for spec, _ in self.config.jobs]

    def _first_tick(self, plan: Schedule, now: datetime) -> datetime:
        if self.config.once or self.config.run_on_start:
            return plan.latest_at_or_before(now)
        return plan.next_after(now)

    def _make_slots(self) -> list[_Slot]:
        now = self.clock.now()
        return [_Slot(spec, plan, self._first_tick(plan, now)) for spec, plan in self.config.jobs]

    async def _schedule(self) -> None:
        slots = self._slots = self._make_slots()
        await self._register(slots, fail=True)
        await self._announce_budget()
        stopping = asyncio.create_task(self._stopping.wait(), name="sentinel-stopping")
        try:
            while True:
                running = {s.task: s for s in slots if s.task is not None}
                idle = [s for s in slots if s.task is None and not s.done]
                waiters: set[asyncio.Future[Any]] = set(running)
                sleeper = None
                if not self._stopping.is_set() and idle:
                    due = min(s.next_tick for s in idle)
                    sleeper = asyncio.create_task(self.clock.sleep_until(due), name="sentinel-tick")
                    waiters |= {sleeper, stopping}
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
                        self._finished(slot, task)
                if not self._stopping.is_set():
                    self._start_due(slots)
        finally:
            stopping.cancel()
            await asyncio.wait({stopping})
            leftover = [s.task for s in slots if s.task is not None]
            for task in leftover:
                task.cancel()
            if leftover:
                await asyncio.wait(leftover)

    def _finished(self, slot: _Slot, task: asyncio.Task[TickResult]) -> None:
        slot.task = None
        self.results.append(task.result())  # _tick never raises but CancelledError
        if self.config.once:
            slot.done = True
        else:
            slot.next_tick = slot.plan.next_after(slot.next_tick)

    def _start_due(self, slots: list[_Slot]) -> None:
        now = self.clock.now()
        for slot in slots:
            if slot.task is not None or slot.done or slot.next_tick > now:
                continue
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
                self._tick(slot.spec, slot.next_tick), name=f"sentinel-{slot.spec.name}"
            )

    async def _register(self, slots: list[_Slot], *, fail: bool) -> None:
        """Write each job's schedule, timeout and first tick to ``sentinel_jobs`` (once).

        ``status`` runs in another process: this is how it knows when a job that has not
        run yet is due. A missing migration stops the daemon at start (``fail``); a database
        that is down is retried before every tick.
        """
        todo = [s for s in slots if self.lease_name(s.spec) not in self._registered]
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

    # -- one tick ------------------------------------------------------------------------------

    async def _tick(self, spec: JobSpec, tick: datetime) -> TickResult:
        """:meth:`run_tick`, with every failure logged and turned into an exit code."""
        try:
            await self._register(self._slots, fail=False)
            return await self.run_tick(spec, tick)
        except SentinelError as exc:
            # The database is down or misconfigured: log, keep the schedule, try next tick.
            self.log.error("{} tick {}: {}", spec.name, tick.isoformat(), exc)
            return TickResult(self.lease_name(spec), tick, None, None, exc.exit_code)
        except Exception as exc:
            # A bug of ours must not end the other jobs' schedules either.
            self.log.opt(exception=exc).error(
                "{} tick {}: unexpected {}: {}",
                spec.name,
                tick.isoformat(),
                type(exc).__name__,
                exc,
            )
            return TickResult(self.lease_name(spec), tick, None, None, 3)

    async def run_tick(self, spec: JobSpec, tick: datetime) -> TickResult:
        """Run one tick of a job if this replica gets both the lease and the tick.

        Then judge the job by the health rule, update the metrics and, when the job's
        health changed (compare-and-set in the database), send the alert.

        Raises:
            StoreError: the database failed.
        """
        cfg = self.config
        lease = self.lease_name(spec)
        report: SyncReport | None = None
        forced: int | None = None
        async with open_store(cfg.db_url) as store:
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
            else:
                self._lease(lease, True)
                self._claimed_at[fence] = claimed_at
                try:
                    report, forced = await self._claimed(spec, store, fence, tick)
                finally:
                    self._claimed_at.pop(fence, None)
                    self._lease(lease, False)
                    try:
                        await store.release_lease(fence, cfg.holder)
                    except StoreError as exc:
                        self.log.warning("{}: cannot release lease: {}", lease, exc)
            health = await self._judge(store, lease, report)
        if report is None:
            code = health.exit_code
        elif forced is not None:
            code = forced
        else:
            code = run_exit_code(_record_of(report), cfg.min_synced)
        return TickResult(lease, tick, report, health, code)

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

    async def _judge(self, store: Store, lease: str, report: SyncReport | None) -> JobHealth:
        """The health rule after a tick; metrics and the alert that a change calls for."""
        runs = await store.list_runs(job=lease, limit=RUNS_PER_JOB)
        states = await store.get_job_states([lease])
        health = judge_job(
            lease,
            runs,
            now=self.clock.now(),
            state=states.get(lease),
            min_synced=self.config.min_synced,
        )
        if self.metrics is not None:
            if report is not None:
                healthy = run_is_healthy(_record_of(report), self.config.min_synced)
                self.metrics.observe_run(report, healthy=healthy)
                if report.keys_total:
                    self.metrics.set_parked((await store.load_key_health()).values())
                await self._observe_backlog(store, lease)
            self.metrics.observe_health(lease, health.healthy, health.last_run)
        if await record_alert_state(store, health) and self.alerter is not None:
            title, body = alert_message(health, report, holder=self.config.holder)
            self._spawn(self.alerter.send(title, body, failure=not health.healthy))
        return health

    async def _observe_backlog(self, store: Store, lease: str) -> None:
        """Set the backlog gauges of a sync job after its run (ops._status.job_backlog)."""
        if self.metrics is None:
            return
        plans = {self.lease_name(spec): plan for spec, plan in self.config.jobs}
        try:
            backlog = await job_backlog(store, lease, plan=plans.get(lease), now=self.clock.now())
        except StoreError as exc:  # metrics must never end the daemon's loop
            self.log.warning("{}: could not read the backlog for the metrics: {}", lease, exc)
            return
        self.metrics.set_backlog(lease, backlog)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` beside the schedule (an alert must never hold up the next tick)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
                return ctx.report(
                    RunStatus.TIMEOUT, error=f"the run exceeded {cfg.timeout:g}s"
                ), None
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
                stop.stop(f"lease {fence.lease} lost: another replica took over")
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
            "no renewal answered"
        )
        return None

    # -- health over HTTP ----------------------------------------------------------------------

    def healthz(self) -> tuple[int, dict[str, Any]]:
        """``/healthz``: 200 when every job of this daemon is healthy, else 503, with the
        body of DESIGN.md. Called on the metrics server's thread, with a store of its own."""

        async def judge() -> dict[str, Any]:
            schedules = {self.lease_name(spec): plan for spec, plan in self.config.jobs}
            # Until the jobs are registered, /healthz judges by what this daemon knows.
            known = {
                self.lease_name(slot.spec): JobState(
                    self.lease_name(slot.spec),
                    schedule_spec(slot.plan),
                    self.config.timeout,
                    slot.first_tick,
                )
                for slot in self._slots
            }
            async with asyncio.timeout(HEALTHZ_TIMEOUT), open_store(self.config.db_url) as store:
                report = await job_statuses(
                    store,
                    self.job_names(),
                    schedules=schedules,
                    min_synced=self.config.min_synced,
                    now=self.clock.now(),
                    known=known,
                    backlog=False,
                )
            return report.healthz()

        try:
            body = asyncio.run(judge())
        except (SentinelError, TimeoutError) as exc:
            reason = str(exc) or f"no answer from the database within {HEALTHZ_TIMEOUT:g}s"
            return 503, {"healthy": False, "jobs": {}, "error": reason}
        return (200 if body["healthy"] else 503), body


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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _record_of(report: SyncReport) -> RunRecord:
    """The run-history view of a report, for the health rule."""
    return RunRecord(
        report.run_id,
        report.job,
        report.status.value,
        report.started_at,
        report.finished_at,
        keys_total=report.keys_total,
        synced=report.synced,
        failed=report.failed,
        skipped=report.skipped,
        written=report.written,
        error=report.error,
        deferred=report.deferred,
        counted=report.counted,
    )


def _fields(report: SyncReport) -> dict[str, Any]:
    from ..sync._job import run_log_fields

    return run_log_fields(report)
