"""The daemon: runs jobs on their schedules, one run per tick across all replicas.

:class:`Daemon` composes three concerns, each in a module of its own:

- ``_scheduler.py``: when each job's next tick is due; the loop that starts tick tasks,
  coalesces missed ticks and registers the jobs for ``status``;
- ``_tick.py``: one tick under its lease: claim, fence, take the tick, run the handler with
  a heartbeat, record the run, release;
- ``_observe.py``: the health rule after a tick, metrics, alerts and ``/healthz``.

A job whose handler raises is recorded ``aborted`` with the one-line cause; the other jobs go
on. With ``once``, each job runs its latest due tick now, and :meth:`Daemon.run` returns 0
when every job is healthy, else the highest exit code among them (2 the wrong secret, 3
aborted or timed out, 1 partial below ``min_synced``): the entry point for a platform's cron.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from loguru import logger

from .._budget import JobDemand, daemon_budget, log_budget
from .._errors import ConfigError, SentinelError
from .._plan import Coverage
from .._report import SYNC_JOB_NAME, SyncReport
from .._schedule import Schedule
from .._secrets import SecretURL, mask_settings
from ..ops._alerts import Alerter
from ..ops._health_rule import DEFAULT_MIN_SYNCED, check_min_synced, run_exit_code
from ..stores import open_store
from ._clock import Clock, SystemClock
from ._jobs import JobSpec
from ._observe import Observer, record_of
from ._scheduler import Scheduler, schedule_period
from ._tick import MAX_RENEW_INTERVAL, TickResult, TickRunner, renew_interval

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
        self._signals = 0
        self.log = logger.bind(holder=config.holder)
        self._scheduler = Scheduler(config, clock=self.clock, log=self.log)
        self._runner = TickRunner(config, metrics=metrics, log=self.log)
        self._observer = Observer(
            config,
            clock=self.clock,
            metrics=metrics,
            alerter=alerter,
            schedules={self.lease_name(spec): plan for spec, plan in config.jobs},
            log=self.log,
        )
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
            await self._observer.drain()
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
        self._runner.stop_runs(name)

    # -- the budget ----------------------------------------------------------------------------

    def run_window(self, plan: Schedule, name: str = SYNC_JOB_NAME) -> float:
        """Seconds a run of job ``name`` may start users for: its time box, else the
        shorter of the schedule's period and the timeout."""
        settings = self.config.settings
        time_box = settings.get("time_boxes", {}).get(name, settings.get("time_box"))
        if time_box:
            return float(time_box)
        return min(schedule_period(plan, self.clock.now()), self.config.timeout)

    async def _announce_budget(self) -> None:
        """Log each job's coverage, then the process's one Torn budget: made from
        --max-rpm for every job here, one line per job with its share, and the total."""
        planned: dict[str, int] = {}
        for spec, plan in self.config.jobs:
            coverage = await self._announce_coverage(spec, plan)
            if coverage is not None:
                planned[spec.name] = coverage.budget.requests
                if spec.name == SYNC_JOB_NAME:
                    self.coverage = coverage
        now = self.clock.now()
        demands = [
            JobDemand(self.lease_name(spec), schedule_period(plan, now), planned.get(spec.name))
            for spec, plan in self.config.jobs
        ]
        log_budget(self.log, daemon_budget(self.config.settings), demands)

    async def _announce_coverage(self, spec: JobSpec, plan: Schedule) -> Coverage | None:
        """Log how long a full pass of a sync takes and how many users a run reaches;
        warn when a run cannot cover every user, saying how many shards or what --max-rpm
        would. Reads the keys (no request to Torn); a database it cannot read yet is left
        to the ticks, which report it. None for a job without a planner."""
        planner = spec.coverage  # offered by the sync's adapter; the daemon knows no engine
        if planner is None or "secret" not in self.config.settings:
            return None  # not a sync, or a library caller without the CLI's settings
        lease = self.lease_name(spec)
        try:
            coverage = await planner(
                self.config.settings,
                db=self.config.db_url,
                window_s=self.run_window(plan, spec.name),
                shard=self.config.shard,
            )
        except SentinelError as exc:
            self.log.warning("{}: cannot plan the request budget yet: {}", lease, exc)
            return None
        self.log.bind(job=lease, event="budget", **coverage.to_dict()).info(
            "{} budget: {}", lease, coverage.budget.describe()
        )
        warning = coverage.warning(lease)
        if warning is not None:
            self.log.bind(job=lease, event="budget_warning").warning(warning)
        return coverage

    # -- scheduling ----------------------------------------------------------------------------

    def lease_name(self, spec: JobSpec) -> str:
        """The lease (and run-history job name) of a job: its name, or ``name:I/N``."""
        return self._scheduler.lease_name(spec)

    def job_names(self) -> list[str]:
        """The lease names of the configured jobs (what ``/healthz`` judges)."""
        return [self.lease_name(spec) for spec, _ in self.config.jobs]

    async def _schedule(self) -> None:
        scheduler = self._scheduler
        scheduler.slots = scheduler.make_slots()
        await scheduler.register(fail=True)
        await self._observer.observe_history()
        await self._announce_budget()
        await scheduler.loop(self._tick, self._stopping, self.results.append)

    # -- one tick ------------------------------------------------------------------------------

    async def _tick(self, spec: JobSpec, tick: datetime) -> TickResult:
        """:meth:`run_tick`, with every failure logged and turned into an exit code."""
        try:
            await self._scheduler.register(fail=False)
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
        lease = self.lease_name(spec)
        report: SyncReport | None = None
        forced: int | None = None
        async with open_store(self.config.db_url) as store:
            report, forced = await self._runner.hold(spec, store, lease, tick)
            health = await self._observer.judge(store, lease, report)
        if report is None:
            code = health.exit_code
        elif forced is not None:
            code = forced
        else:
            code = run_exit_code(record_of(report), self.config.min_synced)
        return TickResult(lease, tick, report, health, code)

    # -- health over HTTP ----------------------------------------------------------------------

    def healthz(self) -> tuple[int, dict[str, Any]]:
        """``/healthz``: 200 when every job of this daemon is healthy, else 503, with a body
        naming each job's health. Called on the metrics server's thread, with a store of its
        own."""
        return self._observer.healthz(self._scheduler.known())
