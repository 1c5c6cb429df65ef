"""The syncs as daemon jobs: ``sync-users`` (the original worker's hourly sync), the
ready-made syncs (opt-in: ``sync/builtin/``) and every declared :class:`TornSync` a
``--import`` module holds.

The job layer (``daemon/``) knows no engine: this adapter registers the syncs with its
registry (``register_job``, ``add_job_source``). ``sentinel_kit`` imports it, so the jobs
are there whenever the daemon is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from ._client import DEFAULT_POOL_SIZE
from ._errors import ConfigError
from ._key_health import HealthPolicy
from ._plan import Coverage
from ._report import SYNC_JOB_NAME, SyncReport
from ._retry import RetryPolicy
from .daemon._jobs import (
    CoveragePlanner,
    JobContext,
    JobSpec,
    add_job_source,
    register_job,
)
from .sync import RunOptions, SyncJob, TornOptions, TornSync
from .sync._builtin import SYNC_USERS
from .sync._registry import declared_syncs

__all__ = [
    "coverage_of",
    "declared_jobs",
    "job_of",
    "plan_coverage",
    "sync_handler",
    "sync_job_from_settings",
    "sync_users",
]


def sync_job_from_settings(
    s: Mapping[str, Any],
    *,
    db: str,
    timeout: float | None,
    shard: tuple[int, int] | None = None,
    job: str = SYNC_JOB_NAME,
    sync: TornSync | None = None,
) -> SyncJob:
    """Build a SyncJob from the CLI's sync settings (shared by `sync` and the daemon); of
    ``sync`` (a declaration), the user sync by default."""
    torn = TornOptions(
        url=s["torn_url"],
        concurrency=s["concurrency"],
        max_rpm=s["max_rpm"],
        per_key_rpm=s["per_key_rpm"],
        request_timeout=s["request_timeout"],
        pool_size=s.get("pool_size", DEFAULT_POOL_SIZE),
        retry=RetryPolicy(attempts=s["max_attempts"], max_total=s["retry_budget"]),
    )
    health = HealthPolicy(
        suspend_for=timedelta(seconds=s["park_suspended"]),
        cooldown_for=timedelta(seconds=s["cooldown"]),
    )
    # The job's own time box (the daemon's default, from its schedule), else the one given.
    time_box = s.get("time_boxes", {}).get((sync or SYNC_USERS).name, s.get("time_box"))
    options = RunOptions(timeout=timeout, time_box=time_box, shard=shard)
    metrics = s.get("metrics")
    return SyncJob(
        db=db,
        secret=s["secret"],
        previous_secret=s.get("previous_secret"),
        torn=torn,
        options=options,
        health_policy=health,
        job=job,
        # The daemon's metrics count every Torn request by outcome.
        on_request=metrics.torn_request if metrics is not None else None,
        sync=sync,
    )


def sync_handler(spec: TornSync) -> Callable[[JobContext], Awaitable[SyncReport]]:
    """The daemon's handler of a declared sync: the engine, under the run's fence and
    deadline, with the daemon's settings (the same as ``sync-users``)."""

    async def run_sync(ctx: JobContext) -> SyncReport:
        sync = sync_job_from_settings(
            ctx.settings,
            db=ctx.store_url,
            timeout=ctx.timeout,
            shard=ctx.settings.get("shard"),
            job=ctx.job,
            sync=spec,
        )
        return await sync.arun(fence=ctx.fence, stop=ctx.stop, run_id=ctx.run_id, record=False)

    run_sync.__qualname__ = f"sync_handler.<{spec.name}>"
    return run_sync


async def plan_coverage(
    s: Mapping[str, Any],
    *,
    db: str,
    window_s: float,
    shard: tuple[int, int] | None = None,
    sync: TornSync | None = None,
) -> Coverage:
    """How this replica's runs of ``sync`` (sync-users by default) cover its users: the
    requests a run makes (its shard's keys, parked keys left out; one per user for a sync
    that asks one key per user) at the settings' ``max_rpm``, against a run's window.
    Reads the keys; sends nothing to Torn.

    Raises:
        StoreError: the database cannot be read.
    """
    spec = sync or SYNC_USERS
    job = sync_job_from_settings(s, db=db, timeout=None, shard=shard, sync=spec)
    plan = await job.aplan()
    if not spec.user_data_rules:
        # A declared per-user sync asks one key per user (the next only after a failure).
        asked: set[str] = set()
        entries = []
        for entry in plan.entries:
            if entry.action == "request":
                if entry.user_id in asked:
                    continue
                asked.add(entry.user_id)
            entries.append(entry)
        plan = replace(plan, entries=tuple(entries))
    return Coverage(plan.budget, window_s, shards=shard[1] if shard else 1)


def coverage_of(spec: TornSync) -> CoveragePlanner:
    """The daemon's coverage planner of one sync (:func:`plan_coverage` for it)."""

    async def plan(
        s: Mapping[str, Any], *, db: str, window_s: float, shard: tuple[int, int] | None = None
    ) -> Coverage:
        return await plan_coverage(s, db=db, window_s=window_s, shard=shard, sync=spec)

    return plan


def job_of(spec: TornSync) -> JobSpec:
    """The daemon's job of one sync: its schedule, the engine, its coverage planner.

    Raises:
        ConfigError: the sync has no schedule (it runs on demand only).
    """
    if spec.schedule is None:
        raise ConfigError(
            f"sync {spec.name} has no schedule: give its TornSync schedule= or interval= "
            "to run it from the daemon"
        )
    return JobSpec(
        spec.name,
        spec.schedule,
        sync_handler(spec),
        coverage=coverage_of(spec),
        after=(KEY_INFO,) if needs_key_info(spec) else (),
    )


#: The sync that learns each key's access and faction (``sentinel_key_info``).
KEY_INFO = "sync-key-info"


def needs_key_info(spec: TornSync) -> bool:
    """Whether a sync decides on key info: per faction (its units are the keys' factions),
    or ``needs=`` above public (keys known to have less are skipped). ``daemon --once``
    runs sync-key-info's tick before such a sync's, when both are among its jobs."""
    return spec.name != KEY_INFO and (spec.per == "faction" or spec.needs != "public")


def declared_jobs(imports: tuple[str, ...]) -> list[JobSpec]:
    """The daemon's jobs of the syncs the ``imports`` modules declare, run by the engine.

    Raises:
        ConfigError: a module cannot be imported, or two different syncs share a name.
    """
    return [
        job_of(spec)
        for spec in declared_syncs(imports).values()
        # A sync declared without schedule= or interval= is not a daemon job.
        if spec.schedule is not None
    ]


#: sync-users' handler (sync every key of this replica's shard under the run's fence and
#: deadline): the engine's, like every sync's.
sync_users = sync_handler(SYNC_USERS)

# Every sync registers the same way: the built-in one now (loading plugins here, while
# sentinel_kit itself is still being imported, would import them half-made), the declared
# ones when load_jobs calls declared_jobs.
register_job(job_of(SYNC_USERS))
# The ready-made syncs are jobs too, run only when named (`daemon --job sync-key-info`):
# declared_jobs offers them (declared_syncs knows them), or the user's sync that replaces one.
add_job_source(declared_jobs)
