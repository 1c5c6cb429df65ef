"""A custom sentinel-kit job: give new sign-ups their Torn name within minutes.

The built-in ``sync-users`` refreshes everyone once an hour. This job runs every five minutes
and runs that same declared sync for the users who have a key but no ``user_data`` row yet,
so a player who just linked their key sees their name at once::

    sentinel-kit daemon --import newcomers --job sync-users --job welcome-newcomers

The engine does the Torn part, as for every sync: a dead key is parked (and not asked again,
by any sync, until it is re-saved), a global stop (IP block, API disabled) ends the run
``aborted``, the shard, time box, rate limits, fence and stop of the daemon hold, and keys
appear in logs as fingerprints only.
"""

from __future__ import annotations

from sentinel_kit import JobContext, RetryPolicy, RunStatus, SyncJob, SyncReport, job, open_store

JOB_NAME = "welcome-newcomers"


@job(JOB_NAME, schedule="*/5 * * * *")
async def welcome_newcomers(ctx: JobContext) -> SyncReport:
    """Run sync-users for the users who have a key but no user_data row yet."""
    pending: set[str] = set()
    async with open_store(ctx.store_url) as store:
        async for page in store.iter_key_pages():
            users = sorted({key.user_id for key in page})
            known = await store.fetch_user_data(users)
            pending.update(user for user in users if user not in known)
    if not pending:
        return ctx.report(RunStatus.OK)
    s = ctx.settings
    sync = SyncJob(
        db=ctx.store_url,
        secret=s["secret"],
        previous_secret=s.get("previous_secret"),
        job=ctx.job,
        torn_url=s["torn_url"],
        concurrency=s["concurrency"],
        max_rpm=s["max_rpm"],
        per_key_rpm=s["per_key_rpm"],
        request_timeout=s["request_timeout"],
        policy=RetryPolicy(attempts=s["max_attempts"], max_total=s["retry_budget"]),
        timeout=ctx.seconds_left(),
        time_box=s.get("time_box"),
        shard=s.get("shard"),
    )
    return await sync.arun(
        users=pending, fence=ctx.fence, stop=ctx.stop, run_id=ctx.run_id, record=False
    )
