"""``sentinel_kit.status()``: each job's health, lease, last run and next tick.

The logic ``sentinel-kit status`` prints, ``/healthz`` answers and alerts act on, as a
library call for notebooks and scripts::

    >>> import sentinel_kit
    >>> report = sentinel_kit.status("sqlite:///sentinel.db")     # doctest: +SKIP
    >>> report.healthy, report["sync-users"].reason               # doctest: +SKIP

The verdict itself is :func:`~sentinel_kit.ops._health_rule.judge_job`; this module gathers
what it needs from a store.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .._blocking import run_blocking
from .._display import html_table, to_dataframe
from .._errors import SchemaMissing
from .._key_health import STRIKES_TO_PARK, HealthState, KeyHealth, KeyRecord
from .._models import JobState, RunRecord
from .._plots import BacklogPoint, backlog_figure, run_backlog
from .._schedule import Schedule, parse_schedule_spec
from .._secrets import Secret
from ..stores import KeyStore, Store, open_store
from ..stores._protocols import AttemptStats
from ._health_rule import DEFAULT_MIN_SYNCED, JobHealth, check_min_synced, judge_job

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_BACKLOG_INTERVAL",
    "Backlog",
    "JobStatus",
    "StatusReport",
    "astatus",
    "job_backlog",
    "job_statuses",
    "status",
]

#: Runs read per job: the latest counted run is almost always among the newest few, but a
#: burst of one-user re-runs (not counted) must not hide it.
RUNS_PER_JOB = 100
#: The job sync-users, named here to keep ``ops`` free of the sync package.
_DEFAULT_JOB = "sync-users"
#: sync-users and its shards' jobs (``sync-users:0/3``): the jobs whose users are the keys'.
_SYNC_JOB = re.compile(r"sync-users(?::(\d+)/(\d+))?")
#: Any job's name, or a shard's ``NAME:I/N``.
_SHARDED = re.compile(r"([^:]+)(?::(\d+)/(\d+))?")
#: The interval ``stale_users`` is judged over when the job's schedule is unknown (no
#: daemon registered it and no ``--schedule``/``--interval`` was given): an hour, the
#: daemon's default schedule for sync-users and the original worker's.
DEFAULT_BACKLOG_INTERVAL = timedelta(hours=1)

_COLUMNS = (
    "job",
    "healthy",
    "reason",
    "last_run_status",
    "last_healthy_at",
    "lease_holder",
    "next_tick",
)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


@dataclass(frozen=True, slots=True)
class Backlog:
    """How far behind a sync job is with its users (the keys' users, of its shard).

    Attributes:
        users: distinct users in ``user_keys`` (of the job's shard).
        stale_users: users not attempted within the last interval (``interval_s`` before
            the time of the check), never-attempted ones included.
        never_attempted: users no run ever attempted.
        oldest_attempt_age_s: seconds since the oldest last attempt among the users (None
            when none was ever attempted).
        interval_s: the interval judged over: the time between two ticks of the job's
            schedule, or :data:`DEFAULT_BACKLOG_INTERVAL` when it is unknown.
    """

    users: int
    stale_users: int
    never_attempted: int
    oldest_attempt_age_s: float | None
    interval_s: float

    def describe(self) -> str:
        """One line for humans: ``12 of 150 users not attempted within 1h (...)``."""
        line = (
            f"{self.stale_users} of {self.users} users not attempted within "
            f"{_duration(self.interval_s)}"
        )
        extra = []
        if self.never_attempted:
            extra.append(f"{self.never_attempted} never")
        if self.oldest_attempt_age_s is not None:
            extra.append(f"oldest attempt {_duration(self.oldest_attempt_age_s)} ago")
        return f"{line} ({', '.join(extra)})" if extra else line


def _duration(seconds: float) -> str:
    """A short duration: ``45s``, ``12m``, ``3h05m``, ``2d04h``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, _ = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{minutes}m"
    days, hours = divmod(hours, 24)
    if not days:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    return f"{days}d{hours:02d}h"


def sync_shard(job: str) -> tuple[bool, tuple[int, int] | None]:
    """Whether ``job`` syncs the keys' users, and of which shard: ``sync-users`` is every
    user, ``sync-users:I/N`` shard I of N; any other job has no backlog."""
    match = _SYNC_JOB.fullmatch(job)
    if match is None:
        return False, None
    if match.group(1) is None:
        return True, None
    index, count = int(match.group(1)), int(match.group(2))
    return (True, (index, count)) if 0 <= index < count else (False, None)


def schedule_interval(plan: Schedule | None, now: datetime) -> timedelta:
    """The time between the tick at or before ``now`` and the next one (the default when
    there is no schedule)."""
    if plan is None:
        return DEFAULT_BACKLOG_INTERVAL
    return plan.next_after(now) - plan.latest_at_or_before(now)


def declared_shard(job: str, syncs: Collection[str]) -> tuple[str | None, tuple[int, int] | None]:
    """Which of the declared per-user ``syncs`` ``job`` runs (its name, or a shard's
    ``NAME:I/N``), and of which shard; (None, None) for any other job."""
    match = _SHARDED.fullmatch(job)
    if match is None or match.group(1) not in syncs:
        return None, None
    if match.group(2) is None:
        return match.group(1), None
    index, count = int(match.group(2)), int(match.group(3))
    return (match.group(1), (index, count)) if 0 <= index < count else (None, None)


async def job_backlog(
    store: KeyStore,
    job: str,
    *,
    plan: Schedule | None,
    now: datetime,
    syncs: Collection[str] = (),
) -> Backlog | None:
    """The backlog of a sync job (None for any other job): users not attempted within one
    interval of its schedule before ``now``, and the age of the oldest attempt.

    Args:
        store: an open store.
        job: ``sync-users`` or a shard's ``sync-users:I/N``; or one of ``syncs``.
        plan: the job's schedule (None: :data:`DEFAULT_BACKLOG_INTERVAL`).
        now: the time of the check.
        syncs: names of declared per-user syncs, whose backlog is by their own attempts
            (``sentinel_unit_attempts``).

    Raises:
        StoreError: the database failed; SchemaMissing when migration 011 (or, for a
            declared sync, 013) is missing.
    """
    declared, shard = declared_shard(job, syncs)
    if declared is not None:
        interval = schedule_interval(plan, now)
        stats = await store.attempt_stats(since=now - interval, shard=shard, sync=declared)
        return _backlog(stats, now=now, interval=interval)
    users_sync, shard = sync_shard(job)
    if not users_sync:
        return None
    interval = schedule_interval(plan, now)
    stats = await store.attempt_stats(since=now - interval, shard=shard)
    return _backlog(stats, now=now, interval=interval)


def _backlog(stats: AttemptStats, *, now: datetime, interval: timedelta) -> Backlog:
    """The backlog of ``stats`` as of ``now``, judged over ``interval``."""
    oldest = stats.oldest_attempt_at
    return Backlog(
        users=stats.users,
        stale_users=stats.stale_users,
        never_attempted=stats.never_attempted,
        oldest_attempt_age_s=(now - oldest).total_seconds() if oldest is not None else None,
        interval_s=interval.total_seconds(),
    )


@dataclass(frozen=True, slots=True)
class JobStatus:
    """One job's health and whereabouts.

    Attributes:
        job: the job name (``sync-users``, ``sync-users:0/3``, a plugin job).
        health: the health rule's verdict.
        lease_holder: the replica holding the job's lease now (None when free).
        lease_fence: the lease's latest fencing token.
        latest_run: the newest run of any kind (counted or not, running or finished).
        last_success_at: when the latest ``ok`` or ``partial`` counted run finished.
        next_tick: the job's next tick, when its schedule is known.
        schedule: the schedule the daemon registered (``cron:...``, ``interval:...``).
        backlog: how far behind the job is with its users (None for jobs other than
            sync-users and its shards).
        no_success_parked: keys parked after three runs with no success anywhere (see
            ``keys health``), with the latest such reason; None for other jobs.
        recent_runs: the job's recent runs, newest first (what :meth:`StatusReport.plot`
            draws the backlog over).
    """

    job: str
    health: JobHealth
    lease_holder: str | None
    lease_fence: int | None
    latest_run: RunRecord | None
    last_success_at: datetime | None
    next_tick: datetime | None
    schedule: str | None
    backlog: Backlog | None = None
    no_success_parked: tuple[int, str] | None = None
    recent_runs: tuple[RunRecord, ...] = field(default=(), repr=False)

    @property
    def stale_users(self) -> int | None:
        """Users not attempted within the last interval (None for other jobs)."""
        return self.backlog.stale_users if self.backlog else None

    @property
    def oldest_attempt_age_s(self) -> float | None:
        """Seconds since the oldest last attempt among the job's users."""
        return self.backlog.oldest_attempt_age_s if self.backlog else None

    @property
    def healthy(self) -> bool:
        """The health rule's verdict."""
        return self.health.healthy

    @property
    def reason(self) -> str:
        """Why the job is (un)healthy, in a few words."""
        return self.health.reason

    @property
    def last_healthy_at(self) -> datetime | None:
        """When the latest healthy counted run finished."""
        return self.health.last_healthy_at

    @property
    def last_run_status(self) -> str | None:
        """The status of the latest counted, finished run (the one the verdict rests on)."""
        return self.health.last_run_status

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of ``status --json`` (one object per job)."""
        return {
            "job": self.job,
            "healthy": self.healthy,
            "reason": self.reason,
            "last_healthy_at": _iso(self.last_healthy_at),
            "last_run_status": self.last_run_status,
            "lease_holder": self.lease_holder,
            "lease_fence": self.lease_fence,
            "last_run": self.latest_run.to_dict() if self.latest_run else None,
            "last_success_at": _iso(self.last_success_at),
            "next_tick": _iso(self.next_tick),
            "schedule": self.schedule,
            "stale_users": self.stale_users,
            "oldest_attempt_age_s": (
                round(self.oldest_attempt_age_s, 3)
                if self.oldest_attempt_age_s is not None
                else None
            ),
            "never_attempted": self.backlog.never_attempted if self.backlog else None,
            "backlog_interval_s": self.backlog.interval_s if self.backlog else None,
            "parked_after_no_success": (
                self.no_success_parked[0] if self.no_success_parked else None
            ),
        }

    def healthz(self) -> dict[str, Any]:
        """The job's entry in the ``/healthz`` body."""
        return {
            "healthy": self.healthy,
            "last_run_status": self.last_run_status,
            "last_healthy_at": _iso(self.last_healthy_at),
        }

    def _row(self) -> list[Any]:
        return [
            self.job,
            "yes" if self.healthy else "NO",
            self.reason,
            self.last_run_status or "-",
            _iso(self.last_healthy_at) or "never",
            self.lease_holder or "-",
            _iso(self.next_tick) or "-",
        ]


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Every selected job's :class:`JobStatus`; renders as a table, ``to_dict()`` for JSON."""

    jobs: tuple[JobStatus, ...]
    checked_at: datetime
    min_synced: float

    @property
    def healthy(self) -> bool:
        """True when every job is healthy."""
        return all(j.healthy for j in self.jobs)

    def __iter__(self) -> Iterator[JobStatus]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, job: str) -> JobStatus:
        for item in self.jobs:
            if item.job == job:
                return item
        raise KeyError(job)

    def to_dict(self) -> list[dict[str, Any]]:
        """The JSON of ``status --json``: one object per job."""
        return [j.to_dict() for j in self.jobs]

    def healthz(self) -> dict[str, Any]:
        """The ``/healthz`` body: ``{"healthy": bool, "jobs": {name: {...}}}``."""
        return {"healthy": self.healthy, "jobs": {j.job: j.healthz() for j in self.jobs}}

    def render_text(self) -> str:
        """A plain-text table, one line per job, then one backlog line per sync job."""
        rows = [j._row() for j in self.jobs]
        if not rows:
            return "(no jobs)"
        # Long reasons (an incident's, a store error's) are cut in the table; `--json` and
        # the run's own record keep them whole.
        cells = [[_cell(str(c)) for c in r] for r in rows]
        widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(_COLUMNS)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(_COLUMNS, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
        lines += [f"backlog {j.job}: {j.backlog.describe()}" for j in self.jobs if j.backlog]
        lines += [
            f"parked {j.job}: {j.no_success_parked[0]} keys {j.no_success_parked[1]} "
            "(`sentinel-kit keys health` lists them; `keys health --reset --code 2 --since T` "
            "un-parks them)"
            for j in self.jobs
            if j.no_success_parked and j.no_success_parked[0]
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render_text()

    def _repr_html_(self) -> str:
        return html_table(_COLUMNS, [j._row() for j in self.jobs], caption="job status")

    def to_pandas(self) -> Any:
        """The jobs as a pandas DataFrame (needs the ``pandas`` extra)."""
        return to_dataframe([dict(zip(_COLUMNS, j._row(), strict=True)) for j in self], _COLUMNS)

    def plot(self) -> Figure:
        """Draw each job's backlog (stale users, the oldest attempt's age) over its recent
        runs, as each run recorded it, and now.

        Returns:
            A matplotlib ``Figure``; a notebook shows it, ``savefig`` writes it.

        Raises:
            ConfigError: matplotlib is not installed (``pip install 'sentinel-kit[notebook]'``).
        """
        points: list[BacklogPoint] = []
        for job in self.jobs:
            points += run_backlog(job.recent_runs)
            if job.backlog is not None:
                points.append(
                    BacklogPoint(
                        job.job,
                        self.checked_at,
                        job.backlog.stale_users,
                        job.backlog.oldest_attempt_age_s,
                    )
                )
        drawn = {p.job for p in points}
        return backlog_figure(points, others=[j.job for j in self.jobs if j.job not in drawn])


#: The widest a cell of the status table gets.
MAX_CELL = 100


def _cell(text: str) -> str:
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


#: How many of the latest runs ``status`` reads for the names of the jobs that ran.
RECENT_RUNS = 1000


async def jobs_in_use(
    store: Store,
    first: Sequence[str] = (_DEFAULT_JOB,),
    *,
    also: Iterable[str] = (),
    keep: Callable[[str], bool] | None = None,
) -> list[str]:
    """The jobs ``status`` lists by default: ``first`` (sync-users, imported jobs), then,
    sorted, every other job a daemon registered or the run history holds (among its
    latest :data:`RECENT_RUNS` runs; any run at all of the jobs named in ``also``). So a
    ready-made sync run with ``sync --job`` shows without a daemon.

    Args:
        store: an open store.
        first: the jobs listed first, in their order, run or not.
        also: more job names to list when they have a run.
        keep: which of the found jobs to list (a shard's pod: its own only).
    """
    found = set(await store.get_job_states(None))
    found.update(r.job for r in await store.list_runs(limit=RECENT_RUNS))
    for name in sorted(set(also) - found - set(first)):
        if await store.list_runs(job=name, limit=1):
            found.add(name)
    more = sorted(n for n in found - set(first) if keep is None or keep(n))
    return [*first, *more]


async def job_statuses(
    store: Store,
    jobs: Sequence[str] | None = None,
    *,
    schedules: Mapping[str, Schedule] | None = None,
    min_synced: float = DEFAULT_MIN_SYNCED,
    now: datetime | None = None,
    known: Mapping[str, JobState] | None = None,
    backlog: bool = True,
    syncs: Collection[str] = (),
) -> StatusReport:
    """Judge jobs against the health rule with an already open store.

    Args:
        store: an open store.
        jobs: job names; None means what ``sentinel-kit status`` lists: sync-users and
            every job a daemon registered or the run history holds.
        schedules: schedules by job name, overriding the ones the daemon registered.
        known: job states to use for jobs the database has no row for yet (the daemon's
            own, before it could register them).
        min_synced: the share of attempted keys a partial run must sync.
        now: the time to judge at (default: now).
        backlog: also count each sync job's backlog (a scan of ``user_keys``; ``/healthz``
            does not show it and skips it).
        syncs: names of declared per-user syncs: their backlog is by their own attempts.

    Returns:
        The :class:`StatusReport`.

    Raises:
        StoreError: the database failed; SchemaMissing when a migration is missing.
    """
    check_min_synced(min_synced)
    moment = now or datetime.now(UTC)
    names = list(jobs) if jobs is not None else await jobs_in_use(store)
    states = await store.get_job_states(names)
    found: list[JobStatus] = []
    health: dict[str, KeyHealth] | None = None
    records: dict[str, KeyRecord] | None = None
    for name in names:
        state = states.get(name) or (known or {}).get(name)
        runs = await store.list_runs(job=name, limit=RUNS_PER_JOB)
        lease = await store.get_lease(name)
        held = bool(
            lease is not None and lease.holder and lease.expires_at and lease.expires_at > moment
        )
        plan = (schedules or {}).get(name) or parse_schedule_spec(state.schedule if state else None)
        success = next(
            (r for r in runs if r.counted and r.status in ("ok", "partial") and r.finished_at),
            None,
        )
        behind = None
        struck: tuple[int, str] | None = None
        # Without migration 011 there is no backlog, but health is still judged.
        with suppress(SchemaMissing):
            behind = (
                await job_backlog(store, name, plan=plan, now=moment, syncs=syncs)
                if backlog
                else None
            )
        if backlog and sync_shard(name)[0]:
            health = health if health is not None else await store.load_key_health()
            records = records if records is not None else await _key_records(store)
            struck = _no_success_parked(health.values(), records)
        found.append(
            JobStatus(
                job=name,
                health=judge_job(name, runs, now=moment, state=state, min_synced=min_synced),
                lease_holder=lease.holder if held and lease else None,
                lease_fence=lease.fence if lease else None,
                latest_run=runs[0] if runs else None,
                last_success_at=success.finished_at if success else None,
                next_tick=plan.next_after(moment) if plan else None,
                schedule=state.schedule if state else None,
                backlog=behind,
                no_success_parked=struck,
                recent_runs=tuple(runs),
            )
        )
    return StatusReport(tuple(found), moment, min_synced)


async def _key_records(store: Store) -> dict[str, KeyRecord]:
    """The store's key records; none from a store written for 0.2 (without the method)."""
    load = getattr(store, "load_key_records", None)
    return await load() if load is not None else {}


def _no_success_parked(
    health: Iterable[KeyHealth], records: Mapping[str, KeyRecord]
) -> tuple[int, str]:
    """How many keys are parked after runs with no success anywhere, and the latest reason.

    Known by the stored facts, not the words: a key parked dead whose record (for the same
    ciphertext) holds :data:`STRIKES_TO_PARK` strikes or more.
    """

    def struck(h: KeyHealth) -> bool:
        record = records.get(h.key_id)
        return (
            h.state is HealthState.DEAD
            and record is not None
            and record.fingerprint == h.fingerprint
            and record.strikes >= STRIKES_TO_PARK
        )

    parked = sorted((h for h in health if struck(h)), key=lambda h: h.since)
    return len(parked), (parked[-1].reason or "") if parked else ""


async def astatus(
    db: str | Secret | Store | None = None,
    jobs: Sequence[str] | None = None,
    *,
    schedules: Mapping[str, Schedule] | None = None,
    min_synced: float = DEFAULT_MIN_SYNCED,
    now: datetime | None = None,
) -> StatusReport:
    """The async twin of :func:`status`."""
    store: Store = open_store(db) if db is None or isinstance(db, str | Secret) else db
    async with store:
        return await job_statuses(store, jobs, schedules=schedules, min_synced=min_synced, now=now)


def status(
    db: str | Secret | Store | None = None,
    jobs: Sequence[str] | None = None,
    *,
    schedules: Mapping[str, Schedule] | None = None,
    min_synced: float = DEFAULT_MIN_SYNCED,
    now: datetime | None = None,
) -> StatusReport:
    """Each job's health by the one rule of ``status``, ``/healthz``, alerts and
    ``daemon --once``, with its lease holder, latest run and next tick. Safe in Jupyter.

    A job is healthy when its latest counted run is ``ok``, or ``partial`` with at least
    ``min_synced`` of its attempted keys synced; a job with no counted run yet is healthy
    until its first tick plus the daemon's ``--timeout``.

    Args:
        db: a database URL (see :func:`~sentinel_kit.open_store`) or a store.
        jobs: job names; None means what ``sentinel-kit status`` lists: sync-users and
            every job a daemon registered or the run history holds.
        schedules: schedules by job name, overriding the ones the daemon registered.
        min_synced: the share of attempted keys a partial run must sync (0 to 1).
        now: the time to judge at (default: now).

    Returns:
        A :class:`StatusReport`: iterate it, index it by job name, print it, or
        ``to_dict()`` it.

    Raises:
        ConfigError: ``min_synced`` is not between 0 and 1, or the URL is not supported.
        SchemaMissing: a migration is missing (``sentinel-kit migrate``).
        StoreError: the database cannot be reached.
    """
    return run_blocking(
        lambda: astatus(db, jobs, schedules=schedules, min_synced=min_synced, now=now)
    )
