"""The backlog a whole run leaves, measured at its end for the run history.

``status`` shows a job's backlog now; the run history keeps the one each run left, so plots
and alerts can tell whether the backlog grows run over run.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from loguru import logger

from .._errors import SentinelError
from .._report import SyncReport
from .._schedule import Schedule, parse_schedule_spec
from ..ops._status import schedule_interval
from ..stores import Store
from ._spec import TornSync

__all__ = ["counts_users_backlog", "with_backlog"]


def counts_users_backlog(spec: TornSync) -> bool:
    """Whether a sync's runs leave a users' backlog: a per-user sync's do. A per-faction
    sync's units are factions, and sync-key-info's are keys (each asked again when its info
    is ``refresh`` old, so most users are not attempted run after run, by design): the
    users' backlog does not count them, and their runs record none."""
    return spec.per == "user" and not spec.key_info_rules


async def with_backlog(
    store: Store,
    report: SyncReport,
    *,
    attempts: str | None,
    shard: tuple[int, int] | None,
    declared: Schedule | None,
    now: datetime,
) -> SyncReport:
    """``report`` with the backlog its sync and shard are left with at ``now``.

    Args:
        store: the run's open store.
        report: the finished run's report.
        attempts: whose attempts order the keys: None for sync-users'
            (``sentinel_user_attempts``), a declared sync's name for its own.
        shard: the run's shard.
        declared: the sync's own schedule, used when no daemon registered one for the
            job (as ``status`` does; neither: its default interval).
        now: the end of the run.

    Returns:
        The report with ``stale_users`` and ``oldest_attempt_at``; unchanged when the
        database cannot tell (migration 011 missing, a declared sync on Supabase) or fails:
        the run is recorded without its backlog, never lost for it.
    """
    try:
        # The schedule a daemon registered for this job (a shard's too), as `status` reads it.
        state = (await store.get_job_states([report.job])).get(report.job)
        plan = parse_schedule_spec(state.schedule if state else None) or declared
        since = now - schedule_interval(plan, now)
        stats = await store.attempt_stats(since=since, shard=shard, sync=attempts)
    except SentinelError as exc:
        logger.bind(job=report.job, run_id=report.run_id).debug(
            "run {}: no backlog recorded: {}", report.run_id, exc
        )
        return report
    return replace(report, stale_users=stats.stale_users, oldest_attempt_at=stats.oldest_attempt_at)
