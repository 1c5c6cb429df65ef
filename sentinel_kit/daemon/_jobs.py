"""Pluggable jobs: a name, a default schedule and an async handler that returns a report.

A job is one module with a decorator::

    # my_jobs.py
    from sentinel_kit import JobContext, RunStatus, job

    @job("refresh-factions", schedule="*/15 * * * *")
    async def refresh_factions(ctx: JobContext):
        ...            # ctx.store_url, ctx.fence, ctx.stop, ctx.deadline, ctx.seconds_left()
        return ctx.report(RunStatus.OK)

and is found with ``sentinel-kit daemon --import my_jobs``, or through the
``sentinel_kit.jobs`` entry point group of an installed package.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from .._errors import ConfigError
from .._models import RunStatus
from .._plan import Coverage
from .._plugins import ENTRY_POINT_GROUP, load_modules
from .._report import SyncReport
from .._schedule import CronSchedule, IntervalSchedule, Schedule
from .._secrets import SecretURL, mask_settings
from .._stop import Stop
from ..stores import Fence

__all__ = [
    "ENTRY_POINT_GROUP",
    "CoveragePlanner",
    "JobContext",
    "JobSource",
    "JobSpec",
    "add_job_source",
    "job",
    "load_jobs",
    "register_job",
    "registered_jobs",
]


@dataclass(slots=True)
class JobContext:
    """What a job's handler receives for one run.

    Attributes:
        job: the job name.
        run_id: the run's id (also the row in ``sentinel_runs``).
        scheduled_for: the tick this run is for.
        store_url: the database URL; open your own connection with ``open_store``. A
            :class:`~sentinel_kit.SecretURL`: a ``str`` that prints with its password
            masked; ``.reveal()`` gives it plain.
        fence: the lease tenure: pass it to ``Store.upsert_user_data(..., fence=...)``.
        stop: set when the run must end early (deadline handled by the job, signal, lost
            lease); long handlers should check it.
        timeout: the run's time budget in seconds (``--timeout``); see :attr:`deadline`.
        settings: daemon settings (``torn_url``, ``concurrency``, ``secret``, ``shard``, ...).
            ``secret`` and ``previous_secret`` are :class:`~sentinel_kit.Secret` values:
            ``KeyCipher``, ``SyncJob`` and ``decrypt_api_key`` take them as they are; call
            ``.reveal()`` where your own code needs the plain text.

    The context prints masked: logging it, or an error quoting it, shows no secret.
    """

    job: str
    run_id: str
    scheduled_for: datetime
    store_url: str
    fence: Fence
    stop: Stop
    timeout: float
    settings: dict[str, Any] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        # Whoever built the context (the daemon, run_job, a test), its secrets print masked.
        self.store_url = SecretURL(self.store_url)
        self.settings = mask_settings(dict(self.settings))

    @property
    def deadline(self) -> datetime:
        """When the run's time is up (UTC): ``started_at`` plus ``timeout``.

        A handler that loops checks it with :meth:`seconds_left` (and ``stop``): past it,
        the daemon records the run ``timeout`` after its grace period.
        """
        return self.started_at + timedelta(seconds=self.timeout)

    def seconds_left(self) -> float:
        """Seconds until :attr:`deadline` by the wall clock (negative once it passed)."""
        return (self.deadline - datetime.now(UTC)).total_seconds()

    def report(self, status: RunStatus = RunStatus.OK, *, error: str | None = None) -> SyncReport:
        """A report for a job that has no keys to count."""
        return SyncReport(
            run_id=self.run_id,
            job=self.job,
            status=status,
            started_at=self.started_at,
            finished_at=datetime.now(UTC),
            keys_total=0,
            synced=0,
            failed=0,
            skipped=0,
            written=0,
            error=error,
        )


Handler = Callable[[JobContext], Awaitable[SyncReport]]


class CoveragePlanner(Protocol):
    """How a job's runs cover its units, planned from the daemon's settings (reads the
    database, sends nothing to Torn); logged at the daemon's start."""

    async def __call__(
        self,
        settings: Mapping[str, Any],
        /,
        *,
        db: str,
        window_s: float,
        shard: tuple[int, int] | None = None,
    ) -> Coverage: ...


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A registered job.

    ``coverage`` plans the request budget of a job that has one (a sync); None for a
    plain ``@job`` handler. ``after`` names jobs whose tick ``daemon --once`` runs first
    when they are among its jobs (a sync that needs what sync-key-info learns).
    """

    name: str
    schedule: Schedule
    handler: Handler
    coverage: CoveragePlanner | None = None
    after: tuple[str, ...] = ()


#: Jobs that other layers offer from the modules ``--import`` names (the syncs a module
#: declares): called by :func:`load_jobs` after importing them. The job layer knows no
#: engine; the engine plugs in here (``sentinel_kit/_sync_jobs.py``).
JobSource = Callable[[tuple[str, ...]], Iterable[JobSpec]]

_REGISTRY: dict[str, JobSpec] = {}
_SOURCES: list[JobSource] = []


def register_job(spec: JobSpec) -> None:
    """Register a built job (what :func:`job` does for a decorated handler).

    Raises:
        ConfigError: the name is taken by another job.
    """
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing != spec and not _same_handler(existing, spec):
        raise ConfigError(f"two jobs are named {spec.name!r}: rename one of them")
    _REGISTRY[spec.name] = spec


def _same_handler(a: JobSpec, b: JobSpec) -> bool:
    # A module imported twice (as a script and by name) defines the same handler again.
    return (a.handler.__module__, a.handler.__qualname__) == (
        b.handler.__module__,
        b.handler.__qualname__,
    )


def add_job_source(source: JobSource) -> None:
    """Offer jobs found in imported modules: ``source(imports)`` is called by every
    :func:`load_jobs`, and the jobs it yields are registered unless a name is taken."""
    if source not in _SOURCES:
        _SOURCES.append(source)


def job(
    name: str, *, schedule: str | None = None, interval: float | None = None
) -> Callable[[Handler], Handler]:
    """Register an async handler as a daemon job.

    Args:
        name: the job name (also its lease name and its key in the run history).
        schedule: a 5-field cron expression (UTC); hourly at minute 0 by default.
        interval: or a period in seconds, epoch-aligned.

    Raises:
        ConfigError: the name is taken by another handler, or the schedule is invalid.
    """
    plan: Schedule = (
        IntervalSchedule(interval) if interval else CronSchedule(schedule or "0 * * * *")
    )

    def register(handler: Handler) -> Handler:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.handler is handler:
            _REGISTRY[name] = JobSpec(name, plan, handler, existing.coverage)
        else:
            register_job(JobSpec(name, plan, handler))
        return handler

    return register


def registered_jobs() -> dict[str, JobSpec]:
    """Every job registered so far, by name."""
    return dict(_REGISTRY)


def load_jobs(imports: tuple[str, ...] | list[str] = ()) -> dict[str, JobSpec]:
    """Import job modules (``--import``) and entry points; return every registered job.

    Raises:
        ConfigError: a module cannot be imported: one line naming it and the cause; the
            plugin's own error is chained (``__cause__``), and its traceback is logged at
            DEBUG (``--log-level DEBUG``). Or a job of another layer (a declared sync) has
            the name of an ``@job``.
    """
    load_modules(imports)
    # What other layers find in those modules (their declared syncs) are jobs too.
    for source in _SOURCES:
        for spec in source(tuple(imports)):
            _REGISTRY.setdefault(spec.name, spec)
    return registered_jobs()
