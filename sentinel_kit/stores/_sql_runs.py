"""The SQL store's daemon state: runs, leases and the jobs' rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from loguru import logger

from .._errors import StaleFence
from .._models import JobState, LeaseInfo, RunRecord
from ._protocols import Fence, abandon_note
from ._rows import (
    BACKLOG_COLUMNS,
    JOB_COLUMNS,
    RUN_COLUMNS,
    SKIP_COLUMNS,
    backlog_row,
    job_state,
    parse_time,
    run_record,
    run_row,
    skips_row,
    with_run_columns,
)
from ._sql_core import Session, SQLCore, _columns, _marks

if TYPE_CHECKING:
    from .._report import SyncReport


class SQLRuns(SQLCore):
    """Runs, leases and job state (a mixin of :class:`~._sql.SQLStore`)."""

    async def begin_run(self, record: RunRecord) -> bool:
        """Insert a ``running`` row for a tick; False when (job, scheduled_for) is taken."""
        columns = ("run_id", "job", "scheduled_for", "holder", "fence", "status", "started_at")
        values = [getattr(record, c) for c in columns]
        changed = await self._execute(
            "claiming a tick",
            f"INSERT INTO sentinel_runs ({_columns(columns)}) VALUES ({_marks(len(columns))}) "  # noqa: S608
            "ON CONFLICT (job, scheduled_for) DO NOTHING",
            values,
        )
        if changed > 0:
            return True
        # Taken: by another replica, or by this very insert, sent again after a dropped
        # connection took its answer. The run id tells which.
        return await self._run_exists(record.run_id)

    async def _run_exists(self, run_id: str) -> bool:
        rows = await self._fetch(
            "claiming a tick", "SELECT 1 FROM sentinel_runs WHERE run_id = ?", [run_id]
        )
        return bool(rows)

    async def record_run(
        self,
        report: SyncReport,
        *,
        scheduled_for: datetime | None = None,
        holder: str | None = None,
        fence: int | None = None,
    ) -> None:
        """Insert or complete (by run_id) a run's row in ``sentinel_runs``, with the backlog
        it left when the run measured one (migration 017) and why its keys were skipped
        (018), each when the table has its columns: a database before them records runs."""
        row = run_row(report, scheduled_for=scheduled_for, holder=holder, fence=fence)
        extra = {**backlog_row(report), **skips_row(report)}

        async def record(lacking: tuple[str, ...]) -> None:
            kept = {c: v for c, v in extra.items() if c not in lacking}
            await self._record_row({**row, **kept}, (*RUN_COLUMNS, *kept))

        # The lambda keeps this module the warning's source in the log.
        await with_run_columns(
            record,
            self._probe_runs,
            warn=lambda note: logger.warning(note),
            fix="run `sentinel-kit migrate`",
        )

    async def _record_row(self, row: dict[str, Any], columns: Sequence[str]) -> None:
        kept = ("run_id", "job", "scheduled_for", "holder", "fence", "started_at")
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in kept)
        await self._execute(
            "recording the run",
            f"INSERT INTO sentinel_runs ({_columns(columns)}) "  # noqa: S608 (fixed names)
            f"VALUES ({_marks(len(columns))}) ON CONFLICT (run_id) DO UPDATE SET {updates}",
            self._values(row, columns),
        )

    async def _probe_runs(self, columns: Sequence[str]) -> None:
        """Read these columns of ``sentinel_runs`` (a store error when it lacks one)."""
        await self._fetch(
            "reading sentinel_runs",
            f"SELECT {_columns(columns)} FROM sentinel_runs LIMIT 0",  # noqa: S608
        )

    async def list_runs(self, *, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Return recent runs, newest first (with their backlog from migration 017 on, why
        their keys were skipped from 018 on)."""
        columns = (*RUN_COLUMNS, *BACKLOG_COLUMNS, *SKIP_COLUMNS)

        async def read(lacking: tuple[str, ...]) -> list[RunRecord]:
            return await self._runs([c for c in columns if c not in lacking], job, limit)

        return await with_run_columns(read, self._probe_runs)

    async def _runs(self, columns: Sequence[str], job: str | None, limit: int) -> list[RunRecord]:
        where, params = ("WHERE job = ?", [job, limit]) if job else ("", [limit])
        rows = await self._fetch(
            "reading sentinel_runs",
            f"SELECT {_columns(columns)} FROM sentinel_runs {where} "  # noqa: S608 (fixed text)
            "ORDER BY started_at DESC LIMIT ?",
            params,
        )
        return [run_record(dict(zip(columns, r, strict=True))) for r in rows]

    async def abandon_runs(self, job: str, *, fence: int, holder: str) -> int:
        """Mark older tenures' ``running`` rows of ``job`` as ``abandoned``."""
        return await self._execute(
            "marking abandoned runs",
            "UPDATE sentinel_runs SET status = 'abandoned', finished_at = ?, error = ? "
            "WHERE job = ? AND status = 'running' AND fence < ?",
            [datetime.now(UTC), abandon_note(holder, fence), job, fence],
        )

    async def get_lease(self, name: str) -> LeaseInfo | None:
        """Return a lease's holder, token and expiry."""
        rows = await self._fetch(
            "reading sentinel_leases",
            "SELECT name, holder, fence, expires_at FROM sentinel_leases WHERE name = ?",
            [name],
        )
        if not rows:
            return None
        r = rows[0]
        return LeaseInfo(r[0], r[1], int(r[2]), parse_time(r[3]))

    @staticmethod
    def _stale(fence: Fence) -> StaleFence:
        return StaleFence(
            f"write refused: fencing token {fence.token} of lease {fence.lease} is stale "
            "(another holder claimed the lease)"
        )

    # -- job state ---------------------------------------------------------------------------

    async def register_job(
        self, job: str, *, schedule: str, timeout_s: float, first_tick: datetime
    ) -> None:
        """Insert or refresh a job's row, keeping the first ``first_tick`` ever registered."""
        now = datetime.now(UTC)
        await self._execute(
            "registering the job",
            "INSERT INTO sentinel_jobs "
            "(job, schedule, timeout_s, first_tick, registered_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job) DO UPDATE SET "
            "schedule = excluded.schedule, timeout_s = excluded.timeout_s, "
            "first_tick = COALESCE(sentinel_jobs.first_tick, excluded.first_tick), "
            "updated_at = excluded.updated_at",
            [job, schedule, timeout_s, first_tick, now, now],
        )

    async def get_job_states(self, jobs: Sequence[str] | None = None) -> dict[str, JobState]:
        """Return the ``sentinel_jobs`` rows of these jobs (all for None), by job name."""
        select = f"SELECT {_columns(JOB_COLUMNS)} FROM sentinel_jobs"  # noqa: S608 (fixed names)
        if jobs is None:
            rows = await self._fetch("reading sentinel_jobs", select)
        elif not jobs:
            return {}
        else:
            names = list(dict.fromkeys(jobs))
            rows = await self._fetch(
                "reading sentinel_jobs", f"{select} WHERE job IN ({_marks(len(names))})", names
            )
        found = [job_state(dict(zip(JOB_COLUMNS, r, strict=True))) for r in rows]
        return {s.job: s for s in found}

    async def set_alert_state(self, job: str, *, healthy: bool, as_of: datetime) -> bool:
        """Compare-and-set a job's alert state in one transaction; True when it changed."""
        state = "healthy" if healthy else "unhealthy"
        now = datetime.now(UTC)

        async def compare_and_set(session: Session) -> int:
            await session.execute(
                "INSERT INTO sentinel_jobs (job, registered_at, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (job) DO NOTHING",
                [job, self._value(now), self._value(now)],
            )
            return await session.execute(
                "UPDATE sentinel_jobs SET alert_state = ?, alert_as_of = ?, alert_changed_at = ? "
                "WHERE job = ? AND alert_state <> ? AND (alert_as_of IS NULL OR alert_as_of < ?)",
                [state, self._value(as_of), self._value(now), job, state, self._value(as_of)],
            )

        # Not idempotent in its answer: sent again after an unseen commit it says "not
        # changed", and the alert would be lost.
        changed = await self._run(
            "setting the alert state", compare_and_set, transaction=True, idempotent=False
        )
        return changed > 0
