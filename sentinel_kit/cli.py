"""The ``sentinel-kit`` command line: a thin shell around :class:`~sentinel_kit.SyncJob`.

Every :class:`~sentinel_kit.SentinelError` is caught once, at the top, and printed as one
``error: ...`` line on stderr with the error's exit code. Machine-readable output (``--json``)
goes to stdout; logs go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from loguru import logger

from . import __version__
from .builtin_jobs import sync_job_from_settings
from .client import DEFAULT_MAX_RPM, DEFAULT_PER_KEY_RPM, DEFAULT_POOL_SIZE
from .config import load_env_files, require_secret, resolve_db_url
from .crypto import KeyCipher
from .daemon import Daemon, DaemonConfig, default_holder
from .demo import run_demo
from .errors import ConfigError, DecryptError, SentinelError
from .health import KeyHealth
from .jobs import JobSpec, load_jobs
from .models import RunRecord, UserKey, key_fingerprint
from .replay import record, replay
from .schedule import Schedule, parse_schedule
from .sql import render_script
from .stores import open_store, redact_url
from .sync import SYNC_JOB_NAME
from .torn import DEFAULT_TORN_URL

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])

#: Anything shaped like a Torn key (16 letters and digits) is masked in log lines, as a second
#: line of defence behind never logging keys at all.
_KEY_LIKE = re.compile(r"\b[A-Za-z0-9]{16}\b")
_TORN_KEY = re.compile(r"^[A-Za-z0-9]{16}$")
_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def redact(text: str) -> str:
    """Mask every 16-character alphanumeric word (the shape of a Torn key)."""
    return _KEY_LIKE.sub("[redacted]", text)


def _redacting_patcher(record: Any) -> None:
    record["message"] = redact(record["message"])


def configure_logging(level: str, fmt: str = "text") -> None:
    """Send sentinel-kit's logs to stderr at ``level`` (text, or JSON lines), keys masked."""
    logger.remove()
    logger.configure(patcher=_redacting_patcher)
    logger.enable("sentinel_kit")
    # diagnose=False: loguru would otherwise print local variables (keys!) in tracebacks.
    logger.add(
        sys.stderr,
        level=level.upper(),
        format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}",
        serialize=fmt == "json",
        backtrace=False,
        diagnose=False,
        colorize=None,
    )


class SentinelGroup(click.Group):
    """A click group that turns every :class:`SentinelError` into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SentinelError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(130)


def _log_level_option(func: F) -> F:
    func = click.option(
        "--log-format",
        envvar="SENTINEL_LOG_FORMAT",
        show_envvar=True,
        default="text",
        show_default=True,
        type=click.Choice(["text", "json"]),
        help="Human-readable lines, or one JSON object per line (for log collectors).",
    )(func)
    return click.option(
        "--log-level",
        envvar="SENTINEL_LOG_LEVEL",
        show_envvar=True,
        default="INFO",
        show_default=True,
        type=click.Choice(_LEVELS, case_sensitive=False),
        help="Log level on stderr. DEBUG logs every request, with keys shown as fingerprints.",
    )(func)


def _db_option(func: F) -> F:
    return click.option(
        "--db",
        envvar="SENTINEL_DATABASE_URL",
        show_envvar=True,
        default=None,
        metavar="URL",
        help="Database URL: sqlite:///path.db, postgresql://... or https://<ref>.supabase.co. "
        "Defaults to NEXT_PUBLIC_SUPABASE_URL when set, else sqlite:///sentinel.db.",
    )(func)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@click.group(cls=SentinelGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sentinel-kit")
def cli() -> None:
    """Keep a database of Torn City players in step with the API keys they gave your app."""
    load_env_files()


# -- sync ------------------------------------------------------------------------------------


def _sync_options(func: F) -> F:
    """The options of a user sync, shared by `sync` and `daemon`."""
    for option in reversed(_SYNC_OPTIONS):
        func = option(func)
    return func


_SYNC_OPTIONS = [
    click.option(
        "--torn-url",
        envvar="TORN_API_URL",
        show_envvar=True,
        default=DEFAULT_TORN_URL,
        show_default=True,
        metavar="URL",
        help="Base URL of Torn's v2 API (or of a stand-in).",
    ),
    click.option(
        "--concurrency",
        type=click.IntRange(1, 1024),
        default=20,
        show_default=True,
        help="Users fetched at the same time.",
    ),
    click.option(
        "--max-rpm",
        type=click.IntRange(min=0),
        default=DEFAULT_MAX_RPM,
        show_default=True,
        help="Requests allowed in any rolling minute, for the whole run. 0 means no limit "
        "(for benchmarks and private stand-ins only: Torn allows 1000 per IP).",
    ),
    click.option(
        "--per-key-rpm",
        type=click.IntRange(min=0),
        default=DEFAULT_PER_KEY_RPM,
        show_default=True,
        help="Requests allowed per key in any rolling minute. 0 means no limit.",
    ),
    click.option(
        "--request-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=10.0,
        show_default=True,
        metavar="SECONDS",
        help="Time allowed for one Torn request.",
    ),
    click.option(
        "--max-attempts",
        type=click.IntRange(min=1),
        default=3,
        show_default=True,
        help="Attempts per key for transient failures (timeouts, 5xx, Torn codes 0/12/15/17).",
    ),
    click.option(
        "--retry-budget",
        type=click.FloatRange(min=0, min_open=True),
        default=30.0,
        show_default=True,
        metavar="SECONDS",
        help="Most time spent on one key, retries and rate-limit waits included.",
    ),
    click.option(
        "--park-suspended",
        envvar="SENTINEL_PARK_SUSPENDED",
        show_envvar=True,
        type=click.FloatRange(min=0),
        default=6 * 3600,
        show_default=True,
        metavar="SECONDS",
        help="How long a suspended key (Torn codes 10, 13, 18) is left alone before a new try.",
    ),
    click.option(
        "--cooldown",
        envvar="SENTINEL_COOLDOWN",
        show_envvar=True,
        type=click.FloatRange(min=0),
        default=300,
        show_default=True,
        metavar="SECONDS",
        help="How long an owner-throttled key (Torn codes 5, 14) rests before its next use.",
    ),
    click.option(
        "--pool-size",
        type=click.IntRange(min=1),
        default=DEFAULT_POOL_SIZE,
        show_default=True,
        help="Connections per HTTP client; the run uses concurrency/pool-size clients. "
        "Small pools keep httpx's per-request cost low at high concurrency.",
    ),
]


def _sync_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The sync options as keyword settings (validated), plus the ENCRYPTION_KEY."""
    return {
        "secret": require_secret(),
        "torn_url": options["torn_url"],
        "concurrency": options["concurrency"],
        "max_rpm": options["max_rpm"],
        "per_key_rpm": options["per_key_rpm"],
        "request_timeout": options["request_timeout"],
        "max_attempts": options["max_attempts"],
        "retry_budget": options["retry_budget"],
        "park_suspended": options["park_suspended"],
        "cooldown": options["cooldown"],
        "pool_size": options["pool_size"],
    }


@cli.command()
@_db_option
@_sync_options
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Time allowed for the whole run; keys fetched by then are written. No limit by default.",
)
@click.option(
    "--dry-run", is_flag=True, help="Fetch profiles but write nothing; list what would change."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
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
@_log_level_option
def sync(
    db: str | None,
    timeout: float | None,
    dry_run: bool,
    as_json: bool,
    replay_path: Path | None,
    record_path: Path | None,
    overwrite: bool,
    log_level: str,
    log_format: str,
    **options: Any,
) -> None:
    """Run the user sync once: fetch every key's profile and update user_data.

    Exit codes: 0 every key synced, 1 some keys failed, 2 usage or configuration error,
    3 the run was aborted (global Torn error, store failure, timeout).
    """
    configure_logging(log_level, log_format)
    if replay_path and record_path:
        raise click.UsageError("--replay and --record cannot be used together")
    job = sync_job_from_settings(_sync_settings(options), db=resolve_db_url(db), timeout=timeout)
    cassette: AbstractContextManager[Any] = nullcontext()
    if replay_path is not None:
        cassette = replay(replay_path)
    elif record_path is not None:
        cassette = record(record_path, overwrite=overwrite)
    # A progress bar only for a person watching: on a terminal, and never with --json.
    progress = sys.stderr.isatty() and not as_json
    with cassette:
        report = job.run(dry_run=dry_run, progress=progress)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.render_text())
    click.get_current_context().exit(report.exit_code)


# -- daemon, runs, status ----------------------------------------------------------------------


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ConfigError(f"--shard {value!r}: write I/N with 0 <= I < N, e.g. 0/3")
    return int(match[1]), int(match[2])


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: str) -> timedelta:
    """Parse ``90``, ``90s``, ``30m``, ``1h`` or ``2d`` into a timedelta."""
    match = _DURATION.match(value)
    if not match:
        raise ConfigError(f"{value!r} is not a duration: write e.g. 90s, 30m, 1h or 2d")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    return timedelta(seconds=float(match[1]) * scale)


@cli.command()
@_db_option
@click.option(
    "--job",
    "job_names",
    multiple=True,
    envvar="SENTINEL_JOBS",
    show_envvar=True,
    metavar="NAME",
    help="Run only these jobs (repeatable). Default: sync-users and every imported job.",
)
@click.option(
    "--import",
    "imports",
    multiple=True,
    envvar="SENTINEL_IMPORT",
    show_envvar=True,
    metavar="MODULE",
    help="Import a module that defines jobs with @sentinel_kit.job (repeatable).",
)
@click.option(
    "--schedule",
    envvar="SENTINEL_SCHEDULE",
    show_envvar=True,
    default=None,
    metavar="CRON",
    help="Cron schedule of sync-users, 5 fields in UTC. Default: '0 * * * *' (hourly).",
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
@click.option("--once", is_flag=True, help="Run one tick of each job, then exit.")
@click.option(
    "--shard",
    envvar="SENTINEL_SHARD",
    show_envvar=True,
    default=None,
    metavar="I/N",
    help="Sync only the users in shard I of N (stable hash of user_id), with its own lease.",
)
@click.option(
    "--holder",
    envvar="SENTINEL_HOLDER",
    show_envvar=True,
    default=None,
    help="This replica's name in leases and run history. Default: hostname:pid.",
)
@_sync_options
@_log_level_option
def daemon(
    db: str | None,
    job_names: tuple[str, ...],
    imports: tuple[str, ...],
    schedule: str | None,
    interval: float | None,
    timeout: float,
    lease_ttl: float | None,
    grace: float,
    run_on_start: bool,
    once: bool,
    shard: str | None,
    holder: str | None,
    log_level: str,
    log_format: str,
    **options: Any,
) -> None:
    """Run jobs on their schedules with a lease, fencing, a hard timeout and run history.

    Safe with one replica or many against the same database: each tick runs once.
    SIGTERM/SIGINT stops scheduling, lets the current run finish within --grace, records
    it, releases the lease and exits 0; a second signal exits at once.
    """
    configure_logging(log_level, log_format)
    specs = load_jobs(imports)
    imported = [n for n in specs if n != SYNC_JOB_NAME]
    wanted = list(job_names) or [SYNC_JOB_NAME, *imported]
    unknown = [n for n in wanted if n not in specs]
    if unknown:
        raise ConfigError(
            f"unknown job(s) {', '.join(unknown)}: known jobs are {', '.join(sorted(specs))} "
            "(add --import MODULE for your own)"
        )
    plans: list[tuple[JobSpec, Schedule]] = []
    for name in wanted:
        spec = specs[name]
        plan = spec.schedule
        if name == SYNC_JOB_NAME and (schedule or interval):
            plan = parse_schedule(schedule, interval)
        plans.append((spec, plan))
    config = DaemonConfig(
        db_url=resolve_db_url(db),
        jobs=plans,
        timeout=timeout,
        lease_ttl=lease_ttl if lease_ttl is not None else timeout + 60,
        grace=grace,
        run_on_start=run_on_start,
        once=once,
        shard=_parse_shard(shard),
        holder=holder or default_holder(),
        settings=_sync_settings(options),
    )
    click.get_current_context().exit(_run(Daemon(config).run()))


@cli.command()
@_db_option
@click.option("--job", default=None, metavar="NAME", help="Only this job's runs.")
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="How many runs, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
@_log_level_option
def runs(
    db: str | None, job: str | None, limit: int, as_json: bool, log_level: str, log_format: str
) -> None:
    """List recent runs from the run history, newest first."""
    configure_logging(log_level, log_format)
    store = open_store(resolve_db_url(db))

    async def load() -> list[RunRecord]:
        async with store:
            return await store.list_runs(job=job, limit=limit)

    records = _run(load())
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in records], indent=2))
        return
    click.echo(
        _table(
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


@cli.command()
@_db_option
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
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
@_log_level_option
def status(
    db: str | None,
    job_names: tuple[str, ...],
    imports: tuple[str, ...],
    schedule: str | None,
    interval: float | None,
    max_age: str | None,
    as_json: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Show each job's lease holder, last run, last success and next tick."""
    configure_logging(log_level, log_format)
    limit = parse_duration(max_age) if max_age else None
    specs = load_jobs(imports)
    names = list(job_names) or [SYNC_JOB_NAME, *(n for n in specs if n != SYNC_JOB_NAME)]
    store = open_store(resolve_db_url(db))
    now = datetime.now(UTC)

    async def gather() -> list[dict[str, Any]]:
        rows = []
        async with store:
            for name in names:
                spec = specs.get(name)
                plan = spec.schedule if spec else None
                if name == SYNC_JOB_NAME and (schedule or interval):
                    plan = parse_schedule(schedule, interval)
                lease = await store.get_lease(name)
                recent = await store.list_runs(job=name, limit=50)
                good = next((r for r in recent if r.status in ("ok", "partial")), None)
                held = (
                    lease is not None
                    and lease.holder
                    and lease.expires_at
                    and lease.expires_at > now
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

    rows = _run(gather())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(
            _table(
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


@cli.command()
@_db_option
@click.option(
    "--print",
    "print_sql",
    is_flag=True,
    help="Print the SQL instead of applying it, for the Supabase SQL editor or a "
    "supabase/migrations/ file (PostgreSQL unless --db names a SQLite database).",
)
@_log_level_option
def migrate(db: str | None, print_sql: bool, log_level: str, log_format: str) -> None:
    """Create the tables sentinel-kit needs; safe to run again (applies only what is missing)."""
    configure_logging(log_level, log_format)
    if print_sql:
        # Printing is for pasting into Supabase's SQL editor or a migrations folder, so it
        # is PostgreSQL unless a SQLite database was named.
        click.echo(render_script("sqlite" if db and db.startswith("sqlite:") else "postgres"))
        return
    store = open_store(resolve_db_url(db), create=True)

    async def apply() -> list[str]:
        async with store:
            return await store.migrate()

    applied = _run(apply())
    target = redact_url(store.label)
    if applied:
        click.echo(f"applied {len(applied)} migration(s) to {target}: {', '.join(applied)}")
    else:
        click.echo(f"{target} is up to date")


# -- keys ------------------------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """Add and inspect the encrypted keys in user_keys."""


def _read_api_key(value: str) -> str:
    if value == "-":
        value = sys.stdin.readline()
    key = value.strip()
    if not _TORN_KEY.match(key):
        raise ConfigError(
            "that does not look like a Torn API key (16 letters and digits): copy it again "
            "from Torn's Settings > API Keys"
        )
    return key


@keys.command("add")
@_db_option
@click.option("--user-id", required=True, help="The app's user id this key belongs to.")
@click.option(
    "--api-key",
    prompt="Torn API key",
    hide_input=True,
    help="The Torn key; '-' reads it from stdin. Prompted for (hidden) when omitted.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the new row (without the key) as JSON."
)
@_log_level_option
def keys_add(
    db: str | None, user_id: str, api_key: str, as_json: bool, log_level: str, log_format: str
) -> None:
    """Encrypt a key with ENCRYPTION_KEY and store it in user_keys, as the app would."""
    configure_logging(log_level, log_format)
    plaintext = _read_api_key(api_key)
    if not user_id.strip():
        raise ConfigError("--user-id is empty")
    cipher = KeyCipher(require_secret())
    row = UserKey(
        id=str(uuid.uuid4()),
        user_id=user_id.strip(),
        api_key=cipher.encrypt(plaintext),
        created_at=datetime.now(UTC).isoformat(),
    )
    store = open_store(resolve_db_url(db))

    async def add() -> None:
        async with store:
            await store.add_key(row)

    _run(add())
    fingerprint = key_fingerprint(plaintext)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "key_id": row.id,
                    "user_id": row.user_id,
                    "created_at": row.created_at,
                    "fingerprint": fingerprint,
                }
            )
        )
    else:
        click.echo(f"added key {row.id} for user {row.user_id} (fingerprint {fingerprint})")


@keys.command("list")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
@_log_level_option
def keys_list(db: str | None, as_json: bool, log_level: str, log_format: str) -> None:
    """List stored keys (never their plaintext); with ENCRYPTION_KEY set, check each decrypts."""
    configure_logging(log_level, log_format)
    store = open_store(resolve_db_url(db))
    try:
        cipher: KeyCipher | None = KeyCipher(require_secret())
    except (ConfigError, DecryptError):
        cipher = None

    async def collect() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        async with store:
            async for page in store.iter_key_pages():
                rows.extend(_key_row(k, cipher) for k in page)
        return rows

    rows = _run(collect())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(
        _table(
            ["key_id", "user_id", "created_at", "decrypts"],
            [[r["key_id"], r["user_id"], r["created_at"] or "", r["decrypts"]] for r in rows],
        )
    )


def _key_row(key: UserKey, cipher: KeyCipher | None) -> dict[str, Any]:
    status = "unchecked (no ENCRYPTION_KEY)"
    if cipher is not None:
        try:
            cipher.decrypt(key.api_key)
            status = "yes"
        except DecryptError:
            status = "no: decrypt_error"
    return {
        "key_id": key.id,
        "user_id": key.user_id,
        "created_at": key.created_at,
        "decrypts": status,
    }


@keys.command("health")
@_db_option
@click.option(
    "--reset",
    "reset_key",
    metavar="KEY_ID",
    default=None,
    help="Un-park this key so the next sync requests it again.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
@_log_level_option
def keys_health(
    db: str | None, reset_key: str | None, as_json: bool, log_level: str, log_format: str
) -> None:
    """Show parked keys (dead, suspended, cooling down), or un-park one with --reset."""
    configure_logging(log_level, log_format)
    store = open_store(resolve_db_url(db))

    if reset_key is not None:

        async def reset() -> bool:
            async with store:
                await store.check_schema()
                return await store.reset_key_health(reset_key)

        if not _run(reset()):
            raise ConfigError(
                f"key {reset_key} is not parked: `sentinel-kit keys health` lists them"
            )
        click.echo(f"key {reset_key} un-parked: the next sync will request it")
        return

    async def load() -> list[KeyHealth]:
        async with store:
            await store.check_schema()
            return list((await store.load_key_health()).values())

    result = _run(load())
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in result], indent=2))
        return
    if not result:
        click.echo("no parked keys: every key will be requested by the next sync")
        return
    click.echo(
        _table(
            ["key_id", "user_id", "state", "last_code", "since", "retry_after"],
            [
                [
                    h.key_id,
                    h.user_id,
                    h.state.value,
                    "" if h.last_code is None else str(h.last_code),
                    h.since.isoformat(timespec="seconds"),
                    h.retry_after.isoformat(timespec="seconds") if h.retry_after else "on re-save",
                ]
                for h in result
            ],
        )
    )


# -- demo ------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--db-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("sentinel-demo.db"),
    show_default=True,
    help="The SQLite file to create for the demo (replaced if it exists).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@_log_level_option
def demo(db_file: Path, as_json: bool, log_level: str, log_format: str) -> None:
    """Run a real sync offline: demo keys in a local SQLite file, Torn answers from a cassette.

    The demo data includes a dead key, a corrupt ciphertext and a Cloudflare 502 on purpose,
    so the report shows failures; the command still exits 0 when the demo ran.
    """
    configure_logging(log_level, log_format)
    if db_file.exists() and not _is_demo_database(db_file):
        raise ConfigError(f"{db_file} exists and is not a demo database: pass another --db-file")
    report, rows = run_demo(db_file)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "report": report.to_dict(),
                    "user_data": [
                        dict(zip(("user_id", "name", "player_id", "updated_at"), r, strict=True))
                        for r in rows
                    ],
                },
                indent=2,
            )
        )
        return
    click.echo(report.render_text())
    click.echo("")
    click.echo(f"user_data in {db_file}:")
    click.echo(
        _table(["user_id", "name", "player_id", "updated_at"], [[str(c) for c in r] for r in rows])
    )
    click.echo("")
    click.echo(f"Explore it: sentinel-kit keys list --db sqlite:///{db_file}")


def _is_demo_database(path: Path) -> bool:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            ids = [r[0] for r in conn.execute("SELECT DISTINCT user_id FROM user_keys")]
    except sqlite3.Error:
        return False
    return bool(ids) and all(str(i).startswith("demo-") for i in ids)


# -- helpers ---------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(h), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="sentinel-kit")


if __name__ == "__main__":  # pragma: no cover - `python -m sentinel_kit.cli`
    main()
