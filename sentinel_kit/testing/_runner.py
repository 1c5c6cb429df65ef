"""Run a job once, as the daemon would, and return its report: the heart of ``run_job``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from .._blocking import run_blocking
from .._errors import ConfigError, SentinelError
from .._models import RunRecord, RunStatus
from .._secrets import Secret, SecretURL
from .._torn import DEFAULT_TORN_URL
from ..daemon._jobs import Handler, JobContext, JobSpec, load_jobs, registered_jobs
from ..stores import open_store
from ..sync import Stop, SyncJob, SyncReport

__all__ = ["DEFAULT_JOB_SETTINGS", "run_job"]

#: ``JobContext.settings`` a job gets in tests unless told otherwise: the daemon's own keys
#: (see ``sentinel-kit daemon --help``), with no global rate limit and short timeouts so
#: tests stay fast.
DEFAULT_JOB_SETTINGS: Mapping[str, Any] = {
    "concurrency": 4,
    "max_rpm": 0,
    "per_key_rpm": 0,
    "request_timeout": 5.0,
    "max_attempts": 3,
    "retry_budget": 10.0,
    "park_suspended": 6 * 3600,
    "cooldown": 300,
    "pool_size": 4,
    "time_box": None,
    "shard": None,
}


def _handler_for(job: str | JobSpec | Handler) -> tuple[str, Handler]:
    if isinstance(job, JobSpec):
        return job.name, job.handler
    if isinstance(job, str):
        spec = registered_jobs().get(job) or load_jobs().get(job)
        if spec is None:
            known = ", ".join(sorted(registered_jobs())) or "none"
            raise ConfigError(
                f"no job named {job!r} is registered (registered: {known}): import the "
                "module that defines it, e.g. in conftest.py"
            )
        return spec.name, spec.handler
    if callable(job):
        for spec in registered_jobs().values():
            if spec.handler is job:
                return spec.name, spec.handler
        return getattr(job, "__name__", "job"), job
    raise ConfigError(f"run_job needs a job name, a @job handler or a SyncJob, not {job!r}")


def run_job(
    job: str | JobSpec | Handler | SyncJob,
    *,
    store_url: str | Secret,
    secret: str | Secret,
    torn_url: str = DEFAULT_TORN_URL,
    settings: Mapping[str, Any] | None = None,
    timeout: float = 60.0,
    dry_run: bool = False,
    users: Collection[str] | None = None,
    holder: str = "pytest",
) -> SyncReport:
    """Run a job once and return its report, the way the daemon runs one tick.

    A registered job (by name, or its ``@job`` handler) gets a :class:`JobContext` like the
    daemon's: the store URL, a real lease and its fence, a stop event, the timeout and the
    settings; the run is recorded in ``sentinel_runs``. A :class:`SentinelError` the handler
    raises ends the run ``aborted``, as under the daemon; any other exception reaches the
    test. A :class:`SyncJob` simply runs (``job.run()``).

    Args:
        job: a registered job's name, its handler or ``JobSpec``, or a ``SyncJob``.
        store_url: the database the job works on.
        secret: the ``ENCRYPTION_KEY`` (``settings["secret"]``).
        torn_url: Torn's base URL (``settings["torn_url"]``).
        settings: more ``JobContext.settings``, over :data:`DEFAULT_JOB_SETTINGS`.
        timeout: the run's time budget in seconds; past it the run ends ``timeout``.
        dry_run: for a ``SyncJob``: fetch but write nothing.
        users: for a ``SyncJob``: only these users.
        holder: the lease holder's name.

    Returns:
        The run's :class:`SyncReport`.

    Raises:
        ConfigError: no such job, or its lease is held by another holder.
    """
    if isinstance(job, SyncJob):
        return job.run(dry_run=dry_run, users=users)
    name, handler = _handler_for(job)
    merged = {**DEFAULT_JOB_SETTINGS, "secret": secret, "torn_url": torn_url, **(settings or {})}

    async def arun() -> SyncReport:
        async with open_store(store_url) as store:
            fence = await store.claim_lease(name, holder, timeout + 60)
            if fence is None:
                raise ConfigError(f"the lease of job {name!r} is held by another holder")
            started = datetime.now(UTC)
            ctx = JobContext(
                job=name,
                run_id=str(uuid.uuid4()),
                scheduled_for=started,
                store_url=SecretURL(store_url),
                fence=fence,
                stop=Stop(),
                timeout=timeout,
                settings=merged,
                started_at=started,
            )
            record = RunRecord(
                ctx.run_id,
                name,
                "running",
                started,
                scheduled_for=started,
                holder=holder,
                fence=fence.token,
            )
            await store.begin_run(record)
            try:
                report = await asyncio.wait_for(handler(ctx), timeout)
            except TimeoutError:
                report = ctx.report(RunStatus.TIMEOUT, error=f"the run exceeded {timeout:g}s")
            except SentinelError as exc:
                report = ctx.report(RunStatus.ABORTED, error=str(exc))
            await store.record_run(report, scheduled_for=started, holder=holder, fence=fence.token)
            await store.release_lease(fence, holder)
            return report

    return run_blocking(arun)
