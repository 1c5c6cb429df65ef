"""Schedules as a common grid: every replica computes the same ticks.

Cron ticks are wall-clock times in UTC (croniter); ``--interval S`` ticks are the multiples of
S seconds since the Unix epoch, not since the process started, so two replicas name the same
tick by the same time and the run history's unique (job, scheduled_for) can arbitrate.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from croniter import croniter

from ._errors import ConfigError

__all__ = [
    "SCHEDULE_ENV_PREFIX",
    "CronSchedule",
    "IntervalSchedule",
    "Schedule",
    "job_plan",
    "job_schedule",
    "parse_schedule_spec",
    "schedule_env_name",
    "schedule_spec",
]

#: The prefix of a job's schedule variable: ``SENTINEL_SCHEDULE_SYNC_KEY_INFO``.
SCHEDULE_ENV_PREFIX = "SENTINEL_SCHEDULE_"


class Schedule(Protocol):
    """A grid of ticks."""

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment``."""
        ...

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last tick at or before ``moment``."""
        ...

    def describe(self) -> str:
        """A short human description."""
        ...


#: Each cron field's name and the range of its values (day-of-week 7 is Sunday, as 0).
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)


def _field_problem(fields: list[str]) -> str | None:
    """The first numeric value or step outside its field's range, said with the field's
    name (croniter refuses out-of-range values without naming the field, and accepts a step
    larger than the range, which silently means "the first value only")."""
    for (name, low, high), field in zip(_FIELDS, fields, strict=True):
        for part in field.split(","):
            base, _, step = part.partition("/")
            for value in base.split("-"):
                if value.isdigit() and not low <= int(value) <= high:
                    return f"{name} {int(value)} is out of range {low}-{high}"
            if step.isdigit() and int(step) == 0:
                return f"{name} step 0 is not allowed: use 1 or more"
            if step.isdigit() and int(step) > high - low + 1:
                return f"{name} step {int(step)} is larger than the range {low}-{high}"
    return None


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A 5-field cron expression, evaluated in UTC."""

    expression: str

    def __post_init__(self) -> None:
        fields = self.expression.split()
        problem = _field_problem(fields) if len(fields) == 5 else None
        if problem is None and len(fields) == 5 and croniter.is_valid(self.expression):
            return
        raise ConfigError(
            f"invalid cron expression {self.expression!r}: "
            + (
                problem
                or "use 5 fields, minute hour day-of-month month day-of-week, "
                "e.g. '0 * * * *' (hourly)"
            )
        )

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment``."""
        result: datetime = croniter(self.expression, moment.astimezone(UTC)).get_next(datetime)
        return result

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last tick at or before ``moment``."""
        probe = moment.astimezone(UTC) + timedelta(microseconds=1)
        result: datetime = croniter(self.expression, probe).get_prev(datetime)
        return result

    def describe(self) -> str:
        """The expression, in UTC."""
        return f"cron '{self.expression}' (UTC)"


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    """Every ``seconds`` seconds, on multiples of it since the Unix epoch."""

    seconds: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ConfigError(
                f"an interval must be a positive number of seconds, not {self.seconds:g}"
            )

    def next_after(self, moment: datetime) -> datetime:
        """The first multiple of the interval strictly after ``moment``."""
        n = math.floor(moment.timestamp() / self.seconds) + 1
        return datetime.fromtimestamp(n * self.seconds, UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last multiple of the interval at or before ``moment``."""
        n = math.floor(moment.timestamp() / self.seconds)
        return datetime.fromtimestamp(n * self.seconds, UTC)

    def describe(self) -> str:
        """The interval."""
        return f"every {self.seconds:g}s (epoch-aligned)"


def schedule_spec(plan: Schedule) -> str:
    """A schedule as text another process can rebuild: ``cron:<expr>`` or ``interval:<s>``.

    The daemon stores it in ``sentinel_jobs`` so ``status`` knows each job's next tick.
    """
    if isinstance(plan, IntervalSchedule):
        return f"interval:{plan.seconds:g}"
    if isinstance(plan, CronSchedule):
        return f"cron:{plan.expression}"
    return f"other:{plan.describe()}"


def parse_schedule_spec(spec: str | None) -> Schedule | None:
    """Rebuild a schedule from :func:`schedule_spec`'s text; None when it cannot be."""
    kind, _, value = (spec or "").partition(":")
    try:
        if kind == "interval":
            return IntervalSchedule(float(value))
        if kind == "cron":
            return CronSchedule(value)
    except (ConfigError, ValueError):
        return None
    return None


def schedule_env_name(job: str) -> str:
    """The environment variable that changes ``job``'s schedule: ``SENTINEL_SCHEDULE_`` and
    the name upper-cased, every character but letters and digits (``-``, ``.``) as ``_``:
    ``sync-faction-members`` -> ``SENTINEL_SCHEDULE_SYNC_FACTION_MEMBERS``."""
    return SCHEDULE_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", job).upper()


def job_plan(value: str, *, label: str) -> Schedule:
    """A job's schedule from its text: a number of seconds (an interval, on multiples of it
    since the Unix epoch), else a 5-field cron expression in UTC.

    Args:
        value: the text.
        label: where it was given, for the error (``--schedule sync-key-info='...'``).

    Raises:
        ConfigError: neither a positive number nor a valid cron expression.
    """
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    try:
        if seconds is not None:
            return IntervalSchedule(seconds)
        return CronSchedule(text)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def job_schedule(
    item: str, *, default_job: str, source: str = "--schedule"
) -> tuple[str, Schedule]:
    """One ``--schedule`` value: ``JOB=CRON`` or ``JOB=SECONDS`` (a cron expression, or an
    interval in seconds on multiples of it since the Unix epoch), or a bare cron expression,
    which is ``default_job``'s (the form of 0.2: ``--schedule '*/15 * * * *'``).

    Returns:
        The job's name and its schedule.

    Raises:
        ConfigError: no job name before ``=``, or a bad expression (one line naming both).
    """
    if "=" not in item:
        try:
            return default_job, CronSchedule(item.strip())
        except ConfigError as exc:
            raise ConfigError(
                f"{source} {item!r}: {exc}; or give JOB=CRON (e.g. "
                f"{default_job}='*/15 * * * *') to schedule another job"
            ) from None
    job, _, value = item.partition("=")
    job = job.strip()
    if not job:
        raise ConfigError(
            f"{source} {item!r} names no job: give JOB=CRON, e.g. {default_job}='0 * * * *'"
        )
    return job, job_plan(value, label=f"{source} {job}={value!r}")
