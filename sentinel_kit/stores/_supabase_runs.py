"""The Supabase store's daemon state: runs, leases and the jobs' rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from loguru import logger
from postgrest.types import ReturnMethod

from .._models import JobState, LeaseInfo, RunRecord
from ._dataapi import RequestFailed
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
from ._supabase_core import SUPABASE_MAX_ROWS, SupabaseCore, _json

if TYPE_CHECKING:
    from .._report import SyncReport


class SupabaseRuns(SupabaseCore):
    """Runs, leases and job state (a mixin of :class:`~._supabase.SupabaseStore`)."""

    async def begin_run(self, record: RunRecord) -> bool:
        """Insert a ``running`` row for a tick; False when (job, scheduled_for) is taken."""
        row = _json(
            {
                "run_id": record.run_id,
                "job": record.job,
                "scheduled_for": record.scheduled_for,
                "holder": record.holder,
                "fence": record.fence,
                "status": record.status,
                "started_at": record.started_at,
            }
        )
        with self._errors("claiming a tick"):
            try:
                # Idempotent by the run id: see the conflict below.
                await self._retrying(partial(self._insert, "sentinel_runs", [row]), retry=True)
            except RequestFailed as exc:
                if exc.failure.code != "23505":
                    raise  # converted by _errors
                # Unique (job, scheduled_for): the tick is taken, by another replica or by
                # this very insert, sent again after a dropped connection lost its answer.
                return await self._run_exists(record.run_id)
        return True

    async def _run_exists(self, run_id: str) -> bool:
        response = await self._call(
            "claiming a tick",
            lambda: (
                self.client.table("sentinel_runs").select("run_id").eq("run_id", run_id).execute()
            ),
            retry=True,
        )
        return bool(response.data)

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
        (018), each when the table has its columns: a project before them records runs."""
        row = run_row(report, scheduled_for=scheduled_for, holder=holder, fence=fence)
        extra = {**backlog_row(report), **skips_row(report)}

        async def record(lacking: tuple[str, ...]) -> None:
            await self._record_row({**row, **{c: v for c, v in extra.items() if c not in lacking}})

        # The lambda keeps this module the warning's source in the log.
        await with_run_columns(
            record,
            self._probe_runs,
            warn=lambda note: logger.warning(note),
            fix="paste `sentinel-kit migrate --print` into the SQL editor",
        )

    async def _record_row(self, row: dict[str, Any]) -> None:
        await self._call(
            "recording the run",
            partial(self._upsert, "sentinel_runs", _json(row), "run_id"),
            retry=True,
        )

    async def _probe_runs(self, columns: Sequence[str]) -> None:
        """Read these columns of ``sentinel_runs`` (a store error when it lacks one)."""
        await self._call(
            "reading sentinel_runs",
            lambda: self.client.table("sentinel_runs").select(",".join(columns)).limit(0).execute(),
            retry=True,
        )

    async def list_runs(self, *, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Return recent runs, newest first (with their backlog from migration 017 on, why
        their keys were skipped from 018 on)."""
        columns = (*RUN_COLUMNS, *BACKLOG_COLUMNS, *SKIP_COLUMNS)

        async def read(lacking: tuple[str, ...]) -> list[RunRecord]:
            return await self._runs([c for c in columns if c not in lacking], job, limit)

        return await with_run_columns(read, self._probe_runs)

    async def _runs(self, columns: Sequence[str], job: str | None, limit: int) -> list[RunRecord]:
        def query() -> Any:
            builder = self.client.table("sentinel_runs").select(",".join(columns))
            if job:
                builder = builder.eq("job", job)
            return (
                builder.order("started_at", desc=True)
                .limit(min(limit, SUPABASE_MAX_ROWS))
                .execute()
            )

        response = await self._call("reading sentinel_runs", query, retry=True)
        return [run_record(r) for r in response.data or []]

    async def abandon_runs(self, job: str, *, fence: int, holder: str) -> int:
        """Mark older tenures' ``running`` rows of ``job`` as ``abandoned``."""
        change = {
            "status": "abandoned",
            "finished_at": datetime.now(UTC).isoformat(),
            "error": abandon_note(holder, fence),
        }
        response = await self._call(
            "marking abandoned runs",
            lambda: (
                self.client.table("sentinel_runs")
                .update(change, returning=ReturnMethod.representation)
                .eq("job", job)
                .eq("status", "running")
                .lt("fence", fence)
                .execute()
            ),
            retry=True,
        )
        return len(response.data or [])

    async def get_lease(self, name: str) -> LeaseInfo | None:
        """Return a lease's holder, token and expiry."""
        response = await self._call(
            "reading sentinel_leases",
            lambda: (
                self.client.table("sentinel_leases")
                .select("name,holder,fence,expires_at")
                .eq("name", name)
                .execute()
            ),
            retry=True,
        )
        rows = response.data or []
        if not rows:
            return None
        r = rows[0]
        return LeaseInfo(r["name"], r["holder"], int(r["fence"]), parse_time(r["expires_at"]))

    async def claim_lease(self, name: str, holder: str, ttl: float) -> Fence | None:
        """Take lease ``name`` for ``ttl`` seconds; None while another holder's is unexpired."""
        token = await self._rpc(
            "sentinel_claim_lease", {"p_name": name, "p_holder": holder, "p_ttl_s": ttl}
        )
        return Fence(name, int(token)) if token is not None else None

    async def renew_lease(self, fence: Fence, holder: str, ttl: float) -> bool:
        """Extend a lease still held under ``fence``; False when it was lost."""
        return bool(
            await self._rpc(
                "sentinel_renew_lease",
                {"p_name": fence.lease, "p_holder": holder, "p_fence": fence.token, "p_ttl_s": ttl},
                retry=True,
            )
        )

    async def release_lease(self, fence: Fence, holder: str) -> bool:
        """Give a lease up; False when it was no longer ours."""
        return bool(
            await self._rpc(
                "sentinel_release_lease",
                {"p_name": fence.lease, "p_holder": holder, "p_fence": fence.token},
                retry=True,
            )
        )

    # -- job state ---------------------------------------------------------------------------
    # Writes go through the SQL functions of migration 010 (the compare-and-set must be one
    # statement on the server); reads are a plain select.

    async def register_job(
        self, job: str, *, schedule: str, timeout_s: float, first_tick: datetime
    ) -> None:
        """Insert or refresh a job's row, keeping the first ``first_tick`` ever registered."""
        await self._rpc(
            "sentinel_register_job",
            _json(
                {
                    "p_job": job,
                    "p_schedule": schedule,
                    "p_timeout_s": timeout_s,
                    "p_first_tick": first_tick,
                }
            ),
            retry=True,
        )

    async def get_job_states(self, jobs: Sequence[str] | None = None) -> dict[str, JobState]:
        """Return the ``sentinel_jobs`` rows of these jobs (all for None), by job name."""
        if jobs is not None and not jobs:
            return {}

        def query() -> Any:
            builder = self.client.table("sentinel_jobs").select(",".join(JOB_COLUMNS))
            if jobs is not None:
                builder = builder.in_("job", list(dict.fromkeys(jobs)))
            return builder.order("job").limit(SUPABASE_MAX_ROWS).execute()

        response = await self._call("reading sentinel_jobs", query, retry=True)
        found = [job_state(r) for r in response.data or []]
        return {s.job: s for s in found}

    async def set_alert_state(self, job: str, *, healthy: bool, as_of: datetime) -> bool:
        """Compare-and-set a job's alert state; True when this call changed it."""
        # Not retried: a lost answer to a change that happened would read as "not changed",
        # and the alert would be lost rather than sent twice.
        return bool(
            await self._rpc(
                "sentinel_set_alert_state",
                _json(
                    {
                        "p_job": job,
                        "p_state": "healthy" if healthy else "unhealthy",
                        "p_as_of": as_of,
                    }
                ),
            )
        )
