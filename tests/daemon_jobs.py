"""A second daemon job, loaded with `sentinel-kit daemon --import tests.daemon_jobs`."""

from __future__ import annotations

from sentinel_kit import JobContext, RunStatus, SyncReport, job


@job("heartbeat-check", interval=1)
async def heartbeat_check(ctx: JobContext) -> SyncReport:
    """A job with its own schedule (every second) that does no Torn work."""
    return ctx.report(RunStatus.OK)
