"""``sentinel-kit runs`` and ``status``: the run history, and each job's health."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from .._models import RunRecord
from .._schedule import parse_schedule
from ..daemon._jobs import load_jobs
from ..stores import Store
from ..sync import SYNC_JOB_NAME
from ._options import db_option, json_option, logging_options, parse_duration, with_store
from ._output import echo_json, table

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
@json_option
@logging_options
def runs(db: str | None, job: str | None, limit: int, as_json: bool) -> None:
    """List recent runs from the run history, newest first."""

    async def load(store: Store) -> list[RunRecord]:
        return await store.list_runs(job=job, limit=limit)

    records = with_store(db, load)
    if as_json:
        echo_json([r.to_dict() for r in records])
        return
    click.echo(
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
    help="Jobs to show (repeatable). Default: sync-users and every imported job.",
)
@click.option(
    "--import",
    "imports",
    multiple=True,
    envvar="SENTINEL_IMPORT",
    metavar="MODULE",
    help="Import a module that defines jobs.",
)
@click.option(
    "--schedule",
    envvar="SENTINEL_SCHEDULE",
    default=None,
    metavar="CRON",
    help="sync-users' schedule, as given to the daemon.",
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
    help="Exit 1 when a job's last successful run (ok or partial) finished longer ago than "
    "this (e.g. 90m, 2h), or never: for health checks and monitors.",
)
@json_option
@logging_options
def status(
    db: str | None,
    job_names: tuple[str, ...],
    imports: tuple[str, ...],
    schedule: str | None,
    interval: float | None,
    max_age: str | None,
    as_json: bool,
) -> None:
    """Show each job's lease holder, last run, last success and next tick."""
    limit = parse_duration(max_age) if max_age else None
    specs = load_jobs(imports)
    names = list(job_names) or [SYNC_JOB_NAME, *(n for n in specs if n != SYNC_JOB_NAME)]
    now = datetime.now(UTC)

    async def gather(store: Store) -> list[dict[str, Any]]:
        rows = []
        for name in names:
            spec = specs.get(name)
            plan = spec.schedule if spec else None
            if name == SYNC_JOB_NAME and (schedule or interval):
                plan = parse_schedule(schedule, interval)
            lease = await store.get_lease(name)
            recent = await store.list_runs(job=name, limit=50)
            good = next((r for r in recent if r.status in ("ok", "partial")), None)
            held = (
                lease is not None and lease.holder and lease.expires_at and lease.expires_at > now
            )
            rows.append(
                {
                    "job": name,
                    "lease_holder": lease.holder if held and lease else None,
                    "lease_fence": lease.fence if lease else None,
                    "last_run": recent[0].to_dict() if recent else None,
                    "last_success_at": good.finished_at.isoformat()
                    if good and good.finished_at
                    else None,
                    "next_tick": plan.next_after(now).isoformat() if plan else None,
                }
            )
        return rows

    rows = with_store(db, gather)
    if as_json:
        echo_json(rows)
    else:
        click.echo(
            table(
                ["job", "lease holder", "last run", "last status", "last success", "next tick"],
                [
                    [
                        r["job"],
                        r["lease_holder"] or "-",
                        (r["last_run"] or {}).get("started_at") or "never",
                        (r["last_run"] or {}).get("status") or "-",
                        r["last_success_at"] or "never",
                        r["next_tick"] or "-",
                    ]
                    for r in rows
                ],
            )
        )
    if limit is not None:
        stale = [
            r["job"]
            for r in rows
            if r["last_success_at"] is None
            or now - datetime.fromisoformat(r["last_success_at"]) > limit
        ]
        if stale:
            click.echo(
                f"error: no successful run within {max_age} for: {', '.join(stale)}", err=True
            )
            click.get_current_context().exit(1)


# -- migrate ---------------------------------------------------------------------------------
