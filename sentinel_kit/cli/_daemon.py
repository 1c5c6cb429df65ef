"""``sentinel-kit daemon``: jobs on their schedules, one run per tick across replicas."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import click
from loguru import logger

from .._config import resolve_db_url, shard_from_env
from .._errors import ConfigError
from .._plan import default_time_box
from .._schedule import Schedule
from .._sync_jobs import coverage_of, sync_handler
from ..daemon import Daemon, DaemonConfig, default_holder
from ..daemon._jobs import JobSpec, load_jobs
from ..daemon._scheduler import schedule_period
from ..sync import SYNC_JOB_NAME
from ..sync._registry import declared_syncs, opt_in_syncs
from ._options import (
    alert_option,
    db_option,
    import_option,
    job_schedules,
    logging_options,
    make_alerter,
    min_synced_option,
    schedule_option,
    shard_option,
    sync_options,
    sync_settings,
)

__all__ = ["daemon"]

#: Seconds, beyond the retry budget of the last users started, to write what they fetched.
FLUSH_MARGIN_S = 5.0


@click.command()
@db_option
@click.option(
    "--job",
    "job_names",
    multiple=True,
    envvar="SENTINEL_JOBS",
    show_envvar=True,
    metavar="NAME",
    help="Run only these jobs (repeatable). Default: sync-users and every imported job.",
)
@import_option(
    "Import a module that defines jobs (@sentinel_kit.job) or TornSync declarations (repeatable)."
)
@schedule_option(
    "A job's schedule, JOB=CRON (5 fields, UTC) or JOB=SECONDS (an interval on multiples "
    "of it since the Unix epoch), e.g. sync-key-info='*/5 * * * *' (repeatable; wins over "
    "SENTINEL_SCHEDULE_<JOB>, the name upper-cased with '-' and '.' as '_'). A bare CRON "
    "is sync-users' schedule. Default: each job's own ('0 * * * *', hourly, for sync-users)."
)
@click.option(
    "--interval",
    envvar="SENTINEL_INTERVAL",
    show_envvar=True,
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Or run sync-users every SECONDS, on multiples of it since the Unix epoch.",
)
@click.option(
    "--timeout",
    envvar="SENTINEL_TIMEOUT",
    show_envvar=True,
    type=click.FloatRange(min=0, min_open=True),
    default=3000.0,
    show_default=True,
    metavar="SECONDS",
    help="Hard deadline of one run; keys fetched by then are written.",
)
@click.option(
    "--lease-ttl",
    envvar="SENTINEL_LEASE_TTL",
    show_envvar=True,
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="How long a lease outlives its last renewal; longer than --timeout. "
    "Default: --timeout + 60.",
)
@click.option(
    "--grace",
    envvar="SENTINEL_GRACE",
    show_envvar=True,
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Time a run gets to finish after SIGTERM/SIGINT before it is stopped.",
)
@click.option("--run-on-start", is_flag=True, help="Run the latest tick at once on start.")
@click.option(
    "--once",
    is_flag=True,
    help="Run each job's latest due tick now (unless a replica already ran it), then exit: "
    "0 when every job is healthy, else the highest exit code (1 partial below --min-synced, "
    "2 the wrong secret or a configuration error, 3 aborted or timed out). For a "
    "platform's cron: schedule it like --schedule.",
)
@shard_option
@click.option(
    "--holder",
    envvar="SENTINEL_HOLDER",
    show_envvar=True,
    default=None,
    help="This replica's name in leases and run history. Default: hostname:pid.",
)
@click.option(
    "--time-box",
    envvar="SENTINEL_TIME_BOX",
    show_envvar=True,
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Stop starting requests this long into a sync-users run; the rest (users waiting "
    "on --max-rpm included) is deferred to the next run (not a failure). Default: the "
    "schedule's period or --timeout, whichever is shorter, less a margin for the users in "
    "flight and the writes (2700 for the hourly default); 0 turns it off.",
)
@min_synced_option
@click.option(
    "--metrics-port",
    envvar="SENTINEL_METRICS_PORT",
    show_envvar=True,
    type=click.IntRange(1, 65535),
    default=None,
    metavar="PORT",
    help="Serve Prometheus /metrics and /healthz (200 healthy, 503 not) on this port.",
)
@click.option(
    "--metrics-host",
    envvar="SENTINEL_METRICS_HOST",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="Address of the metrics server; 0.0.0.0 in a container.",
)
@alert_option
@sync_options
@logging_options
def daemon(
    db: str | None,
    job_names: tuple[str, ...],
    imports: tuple[str, ...],
    schedules: tuple[str, ...],
    interval: float | None,
    timeout: float,
    lease_ttl: float | None,
    grace: float,
    run_on_start: bool,
    once: bool,
    shard: str | None,
    holder: str | None,
    time_box: float | None,
    min_synced: float,
    metrics_port: int | None,
    metrics_host: str,
    alert_urls: tuple[str, ...],
    **options: Any,
) -> None:
    """Run jobs on their schedules with a lease, fencing, a hard timeout and run history.

    Safe with one replica or many against the same database: each tick runs once.
    SIGTERM/SIGINT stops scheduling, lets the current run finish within --grace, records
    it, releases the lease and exits 0; a second signal exits at once. With --once it runs
    each job's latest due tick and exits with the jobs' health (see --once).
    """
    specs = load_jobs(imports)
    declared = declared_syncs(imports)
    given = job_schedules(schedules, interval, known={*specs, *declared})
    # The ready-made syncs (sync-key-info...) run only when named with --job.
    opt_in = opt_in_syncs(declared)
    imported = [n for n in specs if n != SYNC_JOB_NAME and n not in opt_in]
    wanted = list(job_names) or [SYNC_JOB_NAME, *imported]
    for name in wanted:
        sync = declared.get(name)
        if name not in specs and sync is not None and name in given.plans:
            # A sync declared without a schedule, given one here: a daemon job after all.
            specs[name] = JobSpec(
                name, given.plans[name], sync_handler(sync), coverage=coverage_of(sync)
            )
    unknown = [n for n in wanted if n not in specs]
    for name in unknown:
        sync = declared.get(name)
        if sync is not None and sync.schedule is None:
            raise ConfigError(
                f"sync {name} has no schedule: give its TornSync schedule= (a cron "
                "expression) or interval= (seconds), or --schedule "
                f"{name}=CRON, to run it under the daemon; "
                f"`sentinel-kit sync --job {name}` runs it once"
            )
    if unknown:
        raise ConfigError(
            f"unknown job(s) {', '.join(unknown)}: known jobs are {', '.join(sorted(specs))} "
            "(add --import MODULE for your own)"
        )
    idle = sorted(given.named - set(wanted))
    if idle:
        raise ConfigError(
            f"--schedule names {', '.join(idle)}, which this daemon does not run: add "
            + " ".join(f"--job {n}" for n in idle)
            + " (with every other job it should run)"
        )
    for name in sorted(set(given.from_env) - set(wanted)):
        logger.debug(
            "{} gives {} a schedule, which this daemon does not run: ignored (add --job {} "
            "to run it)",
            given.from_env[name],
            name,
            name,
        )
    plans: list[tuple[JobSpec, Schedule]] = [
        (specs[name], given.plans.get(name, specs[name].schedule)) for name in wanted
    ]
    # By plan, each job its own: a run stops starting users in time to finish before its
    # next tick and the deadline. An explicit --time-box applies to every job (0: none).
    time_boxes: dict[str, float | None] = {}
    if time_box is None:
        now = datetime.now(UTC)
        finish_s = options["retry_budget"] + FLUSH_MARGIN_S
        for spec, plan in plans:
            period = schedule_period(plan, now)
            time_boxes[spec.name] = default_time_box(period, timeout, finish_s=finish_s)
    elif time_box == 0:
        time_box = None
    config = DaemonConfig(
        db_url=resolve_db_url(db),
        jobs=plans,
        timeout=timeout,
        lease_ttl=lease_ttl if lease_ttl is not None else timeout + 60,
        grace=grace,
        run_on_start=run_on_start,
        once=once,
        shard=shard_from_env(shard),
        holder=holder or default_holder(),
        settings={**sync_settings(options), "time_box": time_box, "time_boxes": time_boxes},
        min_synced=min_synced,
    )
    alerter = make_alerter(alert_urls)
    metrics = None
    if metrics_port is not None:
        from ..ops._metrics import Metrics

        metrics = Metrics()
    runner = Daemon(config, metrics=metrics, alerter=alerter)
    server = None
    if metrics is not None and metrics_port is not None:
        from ..ops._metrics import MetricsServer

        server = MetricsServer(
            metrics, runner.healthz, host=metrics_host, port=metrics_port
        ).start()
    try:
        code = asyncio.run(runner.run())
    finally:
        if server is not None:
            server.stop()
    click.get_current_context().exit(code)
