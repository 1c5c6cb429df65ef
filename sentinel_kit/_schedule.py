"""Schedules as a common grid: every replica computes the same ticks.

Cron ticks are wall-clock times in UTC (croniter); ``--interval S`` ticks are the multiples of
S seconds since the Unix epoch, not since the process started, so two replicas name the same
tick by the same time and the run history's unique (job, scheduled_for) can arbitrate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from croniter import croniter

from ._errors import ConfigError

__all__ = [
    "CronSchedule",
    "IntervalSchedule",
    "Schedule",
    "parse_schedule",
    "parse_schedule_spec",
    "schedule_spec",
]


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


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A 5-field cron expression, evaluated in UTC."""

    expression: str

    def __post_init__(self) -> None:
        if len(self.expression.split()) != 5 or not croniter.is_valid(self.expression):
            raise ConfigError(
                f"invalid cron expression {self.expression!r}: use 5 fields, "
                "minute hour day-of-month month day-of-week, e.g. '0 * * * *' (hourly)"
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
        if not self.seconds > 0:
            raise ConfigError("--interval must be a positive number of seconds")

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


def parse_schedule(cron: str | None = None, interval: float | None = None) -> Schedule:
    """Build a schedule from ``--schedule`` or ``--interval`` (exactly one of them).

    Raises:
        ConfigError: both or neither given, or an invalid expression.
    """
    if cron and interval:
        raise ConfigError("--schedule and --interval cannot be used together")
    if interval is not None:
        return IntervalSchedule(interval)
    if cron:
        return CronSchedule(cron)
    raise ConfigError("a schedule needs --schedule CRON or --interval SECONDS")


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
