"""Options shared by several commands, declared once, and the parsing they need."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from .._blocking import run_blocking
from .._client import DEFAULT_MAX_RPM, DEFAULT_PER_KEY_RPM, DEFAULT_POOL_SIZE
from .._config import previous_secret, require_secret, resolve_db_url
from .._errors import ConfigError
from .._schedule import (
    SCHEDULE_ENV_PREFIX,
    IntervalSchedule,
    Schedule,
    job_plan,
    job_schedule,
    schedule_env_name,
)
from .._secrets import register_secret
from .._torn import DEFAULT_TORN_URL
from ..ops import DEFAULT_MIN_SYNCED, Alerter, parse_alert_urls
from ..stores import Store, open_store
from ..sync import SYNC_JOB_NAME
from ._output import LEVELS, configure_logging

__all__ = [
    "JobSchedules",
    "alert_option",
    "db_option",
    "job_schedules",
    "json_option",
    "logging_options",
    "make_alerter",
    "min_synced_option",
    "parse_duration",
    "schedule_option",
    "shard_job_name",
    "shard_option",
    "status_shard_option",
    "sync_options",
    "sync_settings",
    "with_store",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def logging_options(func: F) -> F:
    """``--log-level`` and ``--log-format``; logging is set up before the command runs."""

    @functools.wraps(func)
    def wrapper(*args: Any, log_level: str, log_format: str, **kwargs: Any) -> Any:
        configure_logging(log_level, log_format)
        return func(*args, **kwargs)

    wrapper = click.option(
        "--log-format",
        envvar="SENTINEL_LOG_FORMAT",
        show_envvar=True,
        default="text",
        show_default=True,
        type=click.Choice(["text", "json"]),
        help="Human-readable lines, or one JSON object per line (for log collectors).",
    )(wrapper)
    wrapper = click.option(
        "--log-level",
        envvar="SENTINEL_LOG_LEVEL",
        show_envvar=True,
        default="INFO",
        show_default=True,
        type=click.Choice(LEVELS, case_sensitive=False),
        help="Log level on stderr. DEBUG logs every request, with keys shown as fingerprints.",
    )(wrapper)
    return wrapper  # type: ignore[return-value]


def db_option(func: F) -> F:
    """``--db URL`` (env ``SENTINEL_DATABASE_URL``)."""
    return click.option(
        "--db",
        envvar="SENTINEL_DATABASE_URL",
        show_envvar=True,
        default=None,
        metavar="URL",
        help="Database URL: sqlite:///path.db, postgresql://... or https://<ref>.supabase.co. "
        "Defaults to NEXT_PUBLIC_SUPABASE_URL when set, else sqlite:///sentinel.db.",
    )(func)


def json_option(func: F) -> F:
    """``--json``: machine-readable output on stdout."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON on stdout (logs stay on stderr)."
    )(func)


def with_store(db: str | None, work: Callable[[Store], Awaitable[T]], *, create: bool = False) -> T:
    """Open the store ``--db`` names, run ``work(store)`` in it, close it."""
    store = open_store(resolve_db_url(db), create=create)

    async def go() -> T:
        async with store:
            return await work(store)

    return run_blocking(go)


_SHARD_SOURCES = (
    "Default: SENTINEL_SHARD=I/N; else, with SENTINEL_SHARDS=N, the index of an Indexed Job "
    "(JOB_COMPLETION_INDEX) or a StatefulSet pod's ordinal (the number ending its hostname)."
)


def import_option(help_text: str) -> Callable[[F], F]:
    """``--import MODULE`` (repeatable, env ``SENTINEL_IMPORT``): modules that declare syncs or
    define jobs; each command says in ``help_text`` what it does with them."""
    return click.option(
        "--import",
        "imports",
        multiple=True,
        envvar="SENTINEL_IMPORT",
        show_envvar=True,
        metavar="MODULE",
        help=help_text,
    )


def shard_option(func: F) -> F:
    """``--shard I/N``; without it, the shard comes from the environment (see
    :func:`~sentinel_kit._config.resolve_shard`)."""
    return click.option(
        "--shard",
        default=None,
        metavar="I/N",
        help="Only the users in shard I of N (a stable hash of user_id), under the job "
        f"NAME:I/N (NAME: the sync of --job, sync-users by default). {_SHARD_SOURCES}",
    )(func)


def status_shard_option(func: F) -> F:
    """``status --shard I/N``: check that shard's jobs (``sync-users:I/N``)."""
    return click.option(
        "--shard",
        default=None,
        metavar="I/N",
        help="Check the jobs of shard I of N (sync-users:I/N), as that shard's /healthz "
        f"does. {_SHARD_SOURCES}",
    )(func)


def shard_job_name(shard: tuple[int, int] | None, job: str = SYNC_JOB_NAME) -> str:
    """A shard's job (and lease) name, as the daemon names it: ``sync-users:I/N``."""
    return job if shard is None else f"{job}:{shard[0]}/{shard[1]}"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: str) -> timedelta:
    """Parse ``90``, ``90s``, ``30m``, ``1h`` or ``2d`` into a timedelta.

    Raises:
        ConfigError: not a duration.
    """
    match = _DURATION.match(value)
    if not match:
        raise ConfigError(f"{value!r} is not a duration: write e.g. 90s, 30m, 1h or 2d")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    return timedelta(seconds=float(match[1]) * scale)


def _torn_url(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """Refuse a Torn URL no request could go to, before any key is read."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"{value!r} is not an http(s) URL: e.g. {DEFAULT_TORN_URL}")
    return value


_SYNC_OPTIONS = [
    click.option(
        "--torn-url",
        envvar="TORN_API_URL",
        show_envvar=True,
        default=DEFAULT_TORN_URL,
        show_default=True,
        metavar="URL",
        callback=_torn_url,
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
        help="Requests allowed in any rolling minute, for the whole process: every job "
        "shares it in turns. 0 means no limit "
        "(for benchmarks and private stand-ins only: Torn allows 1000 per IP).",
    ),
    click.option(
        "--per-key-rpm",
        type=click.IntRange(min=0),
        default=DEFAULT_PER_KEY_RPM,
        show_default=True,
        help="Requests allowed per player (all their keys, every job of the process) in "
        "any rolling minute. 0 means no limit.",
    ),
    click.option(
        "--request-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=10.0,
        show_default=True,
        metavar="SECONDS",
        help="Time allowed for one whole Torn request, from sending it to its body's last byte.",
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


def sync_options(func: F) -> F:
    """The options of a user sync, shared by ``sync`` and ``daemon``."""
    for option in reversed(_SYNC_OPTIONS):
        func = option(func)
    return func


_SYNC_KEYS = (
    "torn_url",
    "concurrency",
    "max_rpm",
    "per_key_rpm",
    "request_timeout",
    "max_attempts",
    "retry_budget",
    "park_suspended",
    "cooldown",
    "pool_size",
)


def sync_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The sync options as keyword settings (see ``JobContext.settings``), plus the secrets."""
    return {
        "secret": require_secret(),
        "previous_secret": previous_secret(),
        **{k: options[k] for k in _SYNC_KEYS},
    }


# -- health and alerts (daemon, status, sync) -------------------------------------------------


def min_synced_option(func: F) -> F:
    """``--min-synced SHARE`` (env ``SENTINEL_MIN_SYNCED``): the health rule's threshold."""
    return click.option(
        "--min-synced",
        envvar="SENTINEL_MIN_SYNCED",
        show_envvar=True,
        type=click.FloatRange(0, 1),
        default=DEFAULT_MIN_SYNCED,
        show_default=True,
        metavar="SHARE",
        help="A partial run is healthy when it synced at least this share of the keys it "
        "attempted (every key but parked and deferred ones); ok runs always are.",
    )(func)


def alert_option(func: F) -> F:
    """``--alert URL`` (repeatable; env ``SENTINEL_ALERT_URLS``, comma/space separated)."""
    return click.option(
        "--alert",
        "alert_urls",
        multiple=True,
        envvar="SENTINEL_ALERT_URLS",
        show_envvar=True,
        metavar="URL",
        help="Send a message to this Apprise URL (discord://, slack://, json://host/path, ...) "
        "when a job turns unhealthy and when it recovers; once per change, whatever the "
        "replicas. Repeatable; the variable takes several, separated by commas or spaces. "
        "Needs the alerts extra.",
    )(func)


def make_alerter(values: tuple[str, ...]) -> Alerter | None:
    """The :class:`Alerter` of ``--alert`` values, or None without any.

    Raises:
        ConfigError: Apprise is missing, or a URL is not one it knows.
    """
    urls = parse_alert_urls(values)
    for url in urls:
        register_secret(url)  # webhook URLs carry tokens: never in a log line
    return Alerter(urls) if urls else None


# -- schedules: --schedule [JOB=]CRON, --interval, SENTINEL_SCHEDULE_<JOB> --------------------


class _ScheduleText(click.ParamType[str]):
    """A ``--schedule`` value. ``SENTINEL_SCHEDULE`` holds one, or several separated by
    ``;`` (a cron expression holds spaces and commas, never a semicolon)."""

    name = "schedule"
    envvar_list_splitter = ";"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(value)


def schedule_option(help_text: str) -> Callable[[F], F]:
    """``--schedule [JOB=]CRON`` (repeatable; env ``SENTINEL_SCHEDULE``) with ``help_text``."""
    return click.option(
        "--schedule",
        "schedules",
        multiple=True,
        envvar="SENTINEL_SCHEDULE",
        show_envvar=True,
        type=_ScheduleText(),
        metavar="[JOB=]CRON",
        help=help_text,
    )


@dataclass(frozen=True, slots=True)
class JobSchedules:
    """The schedules given without code, by job name.

    Attributes:
        plans: job -> the schedule it runs on instead of its declared one.
        named: the jobs that ``--schedule JOB=...`` named on the command line (the daemon
            refuses one it does not run, rather than ignore it).
        from_env: job -> the variable its plan came from, for a plan the environment gave
            (no flag overrode it): a daemon that does not run the job ignores it (the
            environment may be shared by replicas running other jobs), in one DEBUG line.
    """

    plans: Mapping[str, Schedule]
    named: frozenset[str]
    from_env: Mapping[str, str] = field(default_factory=dict)


def _given(
    items: Sequence[str], interval: float | None, *, source: str, default_job: str
) -> tuple[dict[str, Schedule], set[str]]:
    """The schedules of one source (the command line, or ``SENTINEL_SCHEDULE`` and
    ``SENTINEL_INTERVAL``), and the jobs it names with ``JOB=``."""
    plans: dict[str, Schedule] = {}
    named: set[str] = set()
    for item in (i for i in items if i.strip()):
        job, plan = job_schedule(item, default_job=default_job, source=source)
        plans[job] = plan
        if "=" in item:
            named.add(job)
    if interval is not None:
        if default_job in plans:
            raise ConfigError(
                f"--schedule and --interval cannot be used together for {default_job}"
            )
        plans[default_job] = IntervalSchedule(interval)
    return plans, named


def job_schedules(
    items: Sequence[str],
    interval: float | None,
    *,
    known: Collection[str],
    env: Mapping[str, str] | None = None,
    strict: bool = True,
    default_job: str = SYNC_JOB_NAME,
) -> JobSchedules:
    """The schedules ``--schedule``/``--interval`` and the environment give, by job.

    From the weakest to the strongest: ``SENTINEL_SCHEDULE``/``SENTINEL_INTERVAL``, then
    ``SENTINEL_SCHEDULE_<JOB>``, then the command line's ``--schedule``/``--interval``: the
    flag wins over the environment. A bare cron expression (``--schedule '0 * * * *'``) and
    ``--interval`` are ``default_job``'s, as in 0.2.

    Args:
        items: the ``--schedule`` values (click folds in ``SENTINEL_SCHEDULE``).
        interval: the ``--interval`` value (click folds in ``SENTINEL_INTERVAL``).
        known: the jobs that may be named.
        env: the environment (default ``os.environ``).
        strict: refuse a ``SENTINEL_SCHEDULE_<JOB>`` that names no known job (the daemon);
            else ignore it (``status``, which may not import every job).
        default_job: the job of a bare cron expression and of ``--interval``.

    Raises:
        ConfigError: a bad expression, no job before ``=``, an unknown job, or
            ``--schedule`` and ``--interval`` both for one job (one line each).
    """
    environ = os.environ if env is None else env
    ctx = click.get_current_context(silent=True)

    def from_env(name: str) -> bool:
        source = ctx.get_parameter_source(name) if ctx is not None else None
        return source is click.core.ParameterSource.ENVIRONMENT

    env_items = items if from_env("schedules") else ()
    flag_items = () if from_env("schedules") else items
    env_interval = interval if from_env("interval") else None
    flag_interval = None if from_env("interval") else interval
    base, env_named = _given(
        env_items, env_interval, source="SENTINEL_SCHEDULE", default_job=default_job
    )
    flags, named = _given(flag_items, flag_interval, source="--schedule", default_job=default_job)
    by_variable = {schedule_env_name(job): job for job in known}
    per_job: dict[str, Schedule] = {}
    base_source = "SENTINEL_SCHEDULE" if env_items else "SENTINEL_INTERVAL"
    sources = dict.fromkeys(base, base_source)
    for variable, value in environ.items():
        if not variable.startswith(SCHEDULE_ENV_PREFIX) or not value.strip():
            continue
        job = by_variable.get(variable)
        if job is None:
            if strict:
                raise ConfigError(
                    f"{variable} names no known job: known jobs are "
                    f"{', '.join(sorted(known))} (unset it, fix the name, or add "
                    "--import MODULE for your own)"
                )
            continue
        per_job[job] = job_plan(value, label=f"{variable}={value!r}")
        sources[job] = variable
    for job in sorted((env_named | named) - set(known)):
        source = "--schedule" if job in named else "SENTINEL_SCHEDULE"
        raise ConfigError(
            f"{source} names unknown job {job}: known jobs are {', '.join(sorted(known))} "
            "(add --import MODULE for your own)"
        )
    env_sources = {job: source for job, source in sources.items() if job not in flags}
    return JobSchedules({**base, **per_job, **flags}, frozenset(named), env_sources)
