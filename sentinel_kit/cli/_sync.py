"""``sentinel-kit sync``: one run of a sync (``--job``; the user sync by default)."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from .._config import resolve_db_url, shard_from_env
from .._errors import WrongSecret
from .._replay import record, replay
from .._sync_jobs import sync_job_from_settings
from ..ops import Alerter, announce, judge_job
from ..ops._status import RUNS_PER_JOB
from ..stores import Store
from ..sync import SYNC_JOB_NAME, Budget, SyncReport
from ..sync._registry import find_sync
from ._options import (
    alert_option,
    db_option,
    import_option,
    json_option,
    logging_options,
    make_alerter,
    min_synced_option,
    shard_job_name,
    shard_option,
    sync_options,
    sync_settings,
    with_store,
)
from ._output import echo_json, echo_text

__all__ = ["sync"]


def _print_report(report: SyncReport, as_json: bool, budget: Budget | None = None) -> None:
    if as_json:
        data = report.to_dict()
        if budget is not None:
            data["budget"] = budget.to_dict()
        echo_json(data)
    else:
        echo_text(report.render_text())
        if budget is not None:
            click.echo(f"  budget: {budget.describe()}")


@click.command()
@db_option
@sync_options
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Hard deadline of the whole run, a failure (exit 3); keys fetched by then are "
    "written. No limit by default.",
)
@click.option(
    "--time-box",
    envvar="SENTINEL_TIME_BOX",
    show_envvar=True,
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Stop starting requests after SECONDS; those in flight finish, and the rest "
    "(users waiting on --max-rpm included) is deferred to the next run (not a failure).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Fetch profiles but write nothing; list what would change, and how long a full "
    "pass takes at --max-rpm (and how many users fit in --time-box).",
)
@json_option
@click.option(
    "--replay",
    "replay_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="CASSETTE",
    help="Answer Torn requests from a recorded cassette instead of the network.",
)
@click.option(
    "--record",
    "record_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="CASSETTE",
    help="Record Torn traffic into a new cassette (keys replaced by fingerprints).",
)
@click.option("--overwrite", is_flag=True, help="With --record, replace an existing cassette.")
@click.option(
    "--job",
    "job_name",
    default=SYNC_JOB_NAME,
    show_default=True,
    metavar="NAME",
    help="The sync to run: sync-users, or one a module declares (TornSync; see --import).",
)
@import_option("Import a module that declares syncs (repeatable).")
@shard_option
@alert_option
@min_synced_option
@logging_options
def sync(
    db: str | None,
    timeout: float | None,
    time_box: float | None,
    dry_run: bool,
    as_json: bool,
    replay_path: Path | None,
    record_path: Path | None,
    overwrite: bool,
    shard: str | None,
    alert_urls: tuple[str, ...],
    min_synced: float,
    job_name: str,
    imports: tuple[str, ...],
    **options: Any,
) -> None:
    """Run one sync once: the one named by --job (sync-users by default, which fetches every
    key's profile into user_data), or one a module declares (--import).

    Exit codes: 0 every key synced, 1 some keys failed, 2 usage or configuration error,
    3 the run was aborted (global Torn error, Torn unreachable, store failure, timeout),
    130 interrupted (what was fetched is written, and the report printed).
    """
    if replay_path and record_path:
        raise click.UsageError("--replay and --record cannot be used together")
    spec = find_sync(job_name, imports)
    settings = {**sync_settings(options), "time_box": time_box}
    alerter = make_alerter(alert_urls)
    where = shard_from_env(shard)
    job = sync_job_from_settings(
        settings,
        db=resolve_db_url(db),
        timeout=timeout,
        shard=where,
        # A shard's runs are its own job, as under the daemon: `status` finds them there.
        job=shard_job_name(where, spec.name),
        sync=spec,
    )
    # A dry run also says how Torn's budget covers the keys (read before any request).
    budget = job.plan().budget if dry_run else None
    cassette: AbstractContextManager[Any] = nullcontext()
    if replay_path is not None:
        cassette = replay(replay_path)
    elif record_path is not None:
        cassette = record(record_path, overwrite=overwrite)
    # A progress bar only for a person watching: on a terminal, and never with --json.
    progress = sys.stderr.isatty() and not as_json
    try:
        with cassette as used:
            report = job.run(dry_run=dry_run, progress=progress)
        if record_path is not None and len(used) == 0:
            # An empty recording is not written (and an existing cassette is left as it was).
            click.echo("nothing was sent to Torn: no cassette written", err=True)
    except KeyboardInterrupt:
        if job.last_report is not None:
            _print_report(job.last_report, as_json, budget)
        click.echo("error: interrupted: what was fetched is written", err=True)
        click.get_current_context().exit(130)
    except WrongSecret as exc:
        if as_json and exc.report is not None:
            echo_json(exc.report.to_dict())
        _alert(db, job.job, alerter, exc.report, min_synced)
        raise
    _print_report(report, as_json, budget)
    _alert(db, job.job, alerter, report, min_synced)
    click.get_current_context().exit(report.exit_code)


def _alert(
    db: str | None,
    name: str,
    alerter: Alerter | None,
    report: SyncReport | None,
    min_synced: float,
) -> None:
    """With --alert: judge the job by the health rule and send the alert a change calls for.

    The alert state is in the database, so a daemon beside this run never repeats it.
    """
    if alerter is None:
        return

    async def judge(store: Store) -> None:
        runs = await store.list_runs(job=name, limit=RUNS_PER_JOB)
        states = await store.get_job_states([name])
        health = judge_job(
            name, runs, now=datetime.now(UTC), state=states.get(name), min_synced=min_synced
        )
        await announce(store, health, alerter, report=report)

    with_store(db, judge)
