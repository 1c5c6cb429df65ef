"""Observing the daemon's jobs: the health rule after each tick, metrics, alerts, ``/healthz``.

::

    tick finished ──▶ health rule ──▶ metrics, alert state (compare-and-set in the database)
                                        ──▶ alert (sent beside the schedule, never holding it up)

``/healthz`` answers on the metrics server's thread with a store of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .._errors import SentinelError, StoreError
from .._models import JobState, RunRecord
from .._report import SyncReport
from .._schedule import Schedule
from ..ops._alerts import Alerter, alert_message, record_alert_state
from ..ops._health_rule import JobHealth, judge_job, run_is_healthy
from ..ops._status import RUNS_PER_JOB, job_backlog, job_statuses
from ..stores import Store, open_store
from ._clock import Clock
from ._scheduler import alert_interval

if TYPE_CHECKING:
    from loguru import Logger

    from ..ops._metrics import Metrics
    from ._daemon import DaemonConfig

__all__ = ["HEALTHZ_TIMEOUT", "Observer", "record_of"]

#: Seconds ``/healthz`` may take to read the run history before it answers 503.
HEALTHZ_TIMEOUT = 10.0


class Observer:
    """Judges a job after each tick; keeps the metrics and the alert state; answers /healthz.

    Args:
        config: the daemon's configuration (database, holder, ``min_synced``).
        clock: the scheduler's clock (the health rule's "now").
        metrics: Prometheus metrics to update, or None.
        alerter: where to send health alerts, or None.
        schedules: each job's lease name and schedule (the backlog and ``/healthz`` use them).
        log: the daemon's logger (bound to its holder).
    """

    def __init__(
        self,
        config: DaemonConfig,
        *,
        clock: Clock,
        metrics: Metrics | None,
        alerter: Alerter | None,
        schedules: Mapping[str, Schedule],
        log: Logger,
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.alerter = alerter
        self.schedules = dict(schedules)
        self.log = log
        self._background: set[asyncio.Task[Any]] = set()
        for lease in self.schedules:
            self._observe_interval(lease)

    def _observe_interval(self, lease: str) -> None:
        """Set the job's ``sentinel_job_interval_seconds`` (a cron schedule's gaps may
        differ from tick to tick: set again after each)."""
        plan = self.schedules.get(lease)
        if self.metrics is not None and plan is not None:
            self.metrics.set_interval(lease, alert_interval(plan, self.clock.now()))

    async def judge(self, store: Store, lease: str, report: SyncReport | None) -> JobHealth:
        """The health rule after a tick; metrics and the alert that a change calls for."""
        runs = await store.list_runs(job=lease, limit=RUNS_PER_JOB)
        if report is not None:
            # The run just made knows why its keys were skipped (a database before migration
            # 018 does not keep it).
            skipped_by = dict(report.skipped_by)
            runs = [
                replace(r, skipped_by=skipped_by) if r.run_id == report.run_id else r for r in runs
            ]
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
                healthy = run_is_healthy(record_of(report), self.config.min_synced)
                self.metrics.observe_run(report, healthy=healthy)
                if report.keys_total:
                    self.metrics.set_parked((await store.load_key_health()).values())
                await self._observe_backlog(store, lease, report)
            self._observe_interval(lease)
            self.metrics.observe_health(
                lease, health.healthy, health.last_run, last_healthy_at=health.last_healthy_at
            )
        if await record_alert_state(store, health) and self.alerter is not None:
            title, body = alert_message(health, report, holder=self.config.holder)
            self._spawn(self.alerter.send(title, body, failure=not health.healthy))
        return health

    async def observe_history(self) -> None:
        """At start: each job's ``sentinel_job_healthy`` and last success from the run
        history, so /metrics has them (and their alerts can fire) across a restart, before
        each job's next run. A database it cannot read is left to the ticks."""
        if self.metrics is None:
            return
        try:
            async with open_store(self.config.db_url) as store:
                states = await store.get_job_states(list(self.schedules))
                for lease in self.schedules:
                    runs = await store.list_runs(job=lease, limit=RUNS_PER_JOB)
                    health = judge_job(
                        lease,
                        runs,
                        now=self.clock.now(),
                        state=states.get(lease),
                        min_synced=self.config.min_synced,
                    )
                    self.metrics.observe_health(
                        lease,
                        health.healthy,
                        health.last_run,
                        last_healthy_at=health.last_healthy_at,
                    )
        except SentinelError as exc:  # metrics must never end the daemon's loop
            self.log.warning("could not read the run history for the metrics: {}", exc)

    async def _observe_backlog(self, store: Store, lease: str, report: SyncReport) -> None:
        """Set the backlog gauges of a sync job after its run: the backlog the run recorded
        in its history, else ops._status.job_backlog."""
        if self.metrics is None:
            return
        if report.stale_users is not None:
            at = report.oldest_attempt_at
            age = (report.finished_at - at).total_seconds() if at is not None else None
            self.metrics.set_backlog_values(lease, report.stale_users, age)
            return
        try:
            backlog = await job_backlog(
                store, lease, plan=self.schedules.get(lease), now=self.clock.now()
            )
        except StoreError as exc:  # metrics must never end the daemon's loop
            self.log.warning("{}: could not read the backlog for the metrics: {}", lease, exc)
            return
        self.metrics.set_backlog(lease, backlog)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` beside the schedule (an alert must never hold up the next tick)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for the alerts still being delivered (each bounded by the alerter's timeout)."""
        if self._background:
            await asyncio.wait(self._background)

    def healthz(self, known: Mapping[str, JobState]) -> tuple[int, dict[str, Any]]:
        """``/healthz``: 200 when every job of this daemon is healthy, else 503, with a body
        naming each job's health. Called on the metrics server's thread, with a store of its
        own.

        Args:
            known: each job's registration as this daemon knows it: until the jobs are
                registered in the database, ``/healthz`` judges by it.

        Returns:
            The HTTP status and the JSON body.
        """

        async def judge() -> dict[str, Any]:
            async with asyncio.timeout(HEALTHZ_TIMEOUT), open_store(self.config.db_url) as store:
                report = await job_statuses(
                    store,
                    list(self.schedules),
                    schedules=self.schedules,
                    min_synced=self.config.min_synced,
                    now=self.clock.now(),
                    known=dict(known),
                    backlog=False,
                )
            return report.healthz()

        try:
            body = asyncio.run(judge())
        except (SentinelError, TimeoutError) as exc:
            reason = str(exc) or f"no answer from the database within {HEALTHZ_TIMEOUT:g}s"
            return 503, {"healthy": False, "jobs": {}, "error": reason}
        return (200 if body["healthy"] else 503), body


def record_of(report: SyncReport) -> RunRecord:
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
        skipped_by=dict(report.skipped_by),
        stale_users=report.stale_users,
        oldest_attempt_at=report.oldest_attempt_at,
        unit=report.unit,
    )
