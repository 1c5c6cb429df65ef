"""A second Torn job for the shared-budget tests: the user sync of another database
(``BUDGET_MIRROR_DB``), loaded with `sentinel-kit daemon --import tests.budget_jobs`.

It obeys ``ctx.settings["max_rpm"]`` as a plugin author would; before the process budget,
that made two jobs send twice ``--max-rpm`` together.
"""

from __future__ import annotations

import os

from sentinel_kit import JobContext, SyncJob, SyncReport, job


@job("sync-mirror", interval=3600)
async def sync_mirror(ctx: JobContext) -> SyncReport:
    """Sync the mirror database's keys with the daemon's Torn settings."""
    s = ctx.settings
    mirror = SyncJob(
        db=os.environ["BUDGET_MIRROR_DB"],
        secret=s["secret"],
        torn_url=s["torn_url"],
        concurrency=s["concurrency"],
        max_rpm=s["max_rpm"],
        per_key_rpm=s["per_key_rpm"],
        time_box=s.get("time_box"),
        job=ctx.job,
    )
    return await mirror.arun(stop=ctx.stop, run_id=ctx.run_id, record=False)
