"""``sentinel-kit runs`` and ``status``: the run history, and each job's health."""

from __future__ import annotations

import click

from .._config import shard_from_env
from .._models import RunRecord
from .._schedule import Schedule
from ..daemon._jobs import load_jobs
from ..ops import StatusReport, job_statuses
from ..ops._status import jobs_in_use
from ..stores import Store
from ..sync import SYNC_JOB_NAME
from ..sync._backlog import counts_users_backlog
from ..sync._registry import declared_syncs, opt_in_syncs
from ._options import (
    db_option,
    import_option,
    job_schedules,
    json_option,
    logging_options,
    min_synced_option,
    parse_duration,
    schedule_option,
    shard_job_name,
    status_shard_option,
    with_store,
)
from ._output import echo_json, echo_text, table

__all__ = ["runs", "status"]


@click.command()
@db_option
@click.option("--job", default=None, metavar="NAME", help="Only this job's runs.")
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="How many runs, newest first.",
)
@import_option(
    "Import a module that defines jobs (@sentinel_kit.job) or TornSync declarations "
    "(repeatable), as the other commands do."
)
@json_option
@logging_options
def runs(
    db: str | None, job: str | None, limit: int, imports: tuple[str, ...], as_json: bool
) -> None:
    """List recent runs from the run history, newest first."""
    # The same modules as every other command: one that fails says so here too.
    load_jobs(imports)

    async def load(store: Store) -> list[RunRecord]:
        return await store.list_runs(job=job, limit=limit)

    records = with_store(db, load)
    if as_json:
        echo_json([r.to_dict() for r in records])
        return
    echo_text(
        table(
            [
                "run_id",
                "job",
                "scheduled_for",
                "holder",
                "fence",
                "status",
                "started_at",
                "duration",
                "synced",
                "failed",
                "skipped",
            ],
            [
                [
                    r.run_id,
                    r.job,
                    r.scheduled_for.isoformat(timespec="seconds") if r.scheduled_for else "-",
                    r.holder or "-",
                    "-" if r.fence is None else str(r.fence),
                    r.status,
                    r.started_at.isoformat(timespec="seconds"),
                    f"{(r.finished_at - r.started_at).total_seconds():.1f}s"
                    if r.finished_at
                    else "-",
                    str(r.synced),
                    str(r.failed),
                    str(r.skipped),
                ]
                for r in records
            ],
        )
    )


@click.command()
@db_option
@click.option(
    "--job",
    "job_names",
    multiple=True,
    metavar="NAME",
    help="Jobs to show (repeatable). Default: sync-users (in a shard, the shard's own "
    "sync-users:I/N, see --shard), every imported job and every job a daemon registered "
    "in the database.",
)
@import_option(
    "Import a module that defines jobs (@sentinel_kit.job) or TornSync declarations (repeatable)."
)
@schedule_option(
    "A job's schedule as given to the daemon, JOB=CRON or JOB=SECONDS (repeatable; a bare "
    "CRON is sync-users'; SENTINEL_SCHEDULE_<JOB> too). Default: the one the daemon registered."
)
@click.option(
    "--interval",
    envvar="SENTINEL_INTERVAL",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Or its interval, as given to the daemon.",
)
@click.option(
    "--fail-if-older-than",
    "max_age",
    default=None,
    metavar="DURATION",
    help="Exit 1 when a job's last healthy run (by the health rule, see --min-synced) "
    "finished longer ago than this (e.g. 90m, 2h), or never: for health checks and monitors.",
)
@status_shard_option
@min_synced_option
@json_option
@logging_options
def status(
    db: str | None,
    job_names: tuple[str, ...],
    imports: tuple[str, ...],
    schedules: tuple[str, ...],
    interval: float | None,
    max_age: str | None,
    shard: str | None,
    min_synced: float,
    as_json: bool,
) -> None:
    """Show each job's health, lease holder, last run and next tick.

    A job is healthy when its latest counted run (not a dry run, not a re-run of a few
    users) is ok, or partial with at least --min-synced of its attempted keys synced; a job
    that has not run yet is healthy until its first tick plus the daemon's --timeout. The
    same rule as /healthz, alerts and `daemon --once`. In a shard's pod or container (see
    --shard), it checks that shard's own job, as the shard's /healthz does.
    """
    limit = parse_duration(max_age) if max_age else None
    specs = load_jobs(imports)
    mine = shard_from_env(shard)
    # Declared per-user syncs (sync-users aside) count their backlog by their own attempts;
    # a per-faction sync's units are factions and sync-key-info's keys, which the users'
    # backlog does not count (as their runs record none).
    declared = declared_syncs(imports)
    syncs = [n for n, s in declared.items() if n != SYNC_JOB_NAME and counts_users_backlog(s)]
    # The ready-made syncs show once they ran or a daemon registered them, or by --job.
    opt_in = opt_in_syncs(declared)
    names = list(job_names) or [
        shard_job_name(mine, SYNC_JOB_NAME),
        *(shard_job_name(mine, n) for n in specs if n != SYNC_JOB_NAME and n not in opt_in),
    ]
    given = job_schedules(schedules, interval, known={*specs, *declared}, strict=False)
    plans: dict[str, Schedule] = {shard_job_name(mine, j): p for j, p in given.plans.items()}

    async def gather(store: Store) -> StatusReport:
        shown = names
        if not job_names:
            # Every job a daemon registered or the run history holds too, imported here or
            # not (of this shard, in a shard's pod): what sentinel_kit.status() lists.
            keep = None if mine is None else (lambda n: _of_shard(n, mine))
            shown = await jobs_in_use(store, names, also=declared, keep=keep)
        return await job_statuses(store, shown, schedules=plans, min_synced=min_synced, syncs=syncs)

    report = with_store(db, gather)
    if as_json:
        echo_json(report.to_dict())
    else:
        echo_text(report.render_text())
    if limit is not None:
        now = report.checked_at
        stale = [
            j.job for j in report if j.last_healthy_at is None or now - j.last_healthy_at > limit
        ]
        if stale:
            click.echo(f"error: no healthy run within {max_age} for: {', '.join(stale)}", err=True)
            click.get_current_context().exit(1)


def _of_shard(job: str, shard: tuple[int, int]) -> bool:
    """Whether a registered job is one of this shard's (``NAME:I/N``)."""
    return job.endswith(f":{shard[0]}/{shard[1]}")


# -- migrate ---------------------------------------------------------------------------------
