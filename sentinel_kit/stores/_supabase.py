"""The Supabase backend, through supabase-py (PostgREST, Supabase's Data API).

- Keys are read in fair order through the ``sentinel_key_page`` function (``.rpc()``), keyset
  paged on (last attempt, user_id, id), 10,000 keys a call as one JSON array (a single
  value, which Supabase's ``db-max-rows`` cap of 1000 rows does not cut), so the run's own
  attempt writes, which reorder the users, skip no one (offsets would). The original worker
  read one page of 1000. Other tables are read with ``.range()`` and an exact count.
- ``user_data`` is upserted with ``on_conflict="user_id"`` and minimal returning, in chunks,
  deduplicated; retried on transient failures because the upsert is idempotent.
- Leases and fenced writes go through the ``sentinel_*`` SQL functions (``.rpc()``), which
  make them atomic. supabase-py's own GET retries are off: ours apply, to idempotent requests
  only, on PostgREST's connection faults (``PGRST000``-``PGRST003``) and the gateway's
  502/503/504; what a failure means is decided in :mod:`._postgrest`.
- DDL cannot go through the Data API: ``migrate`` says to paste ``migrate --print`` into the
  SQL editor, or to use the database's ``postgresql://`` connection string.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
from postgrest.exceptions import APIError
from postgrest.types import CountMethod, ReturnMethod

from .._errors import ConfigError, SchemaMissing, StoreError
from .._key_health import KeyAccess, KeyHealth, KeyRecord
from .._models import JobState, LeaseInfo, RunRecord, StoredUser, UserDataRow, UserKey
from .._secrets import Secret
from .._security import SecurityFacts, integer_column
from ._chunks import ChunkedWrites, chunks, fence_values
from ._dataapi import DataAPISession, RequestFailed
from ._paging import Cursor, KeyQuery, KeysetPaging
from ._protocols import (
    DEFAULT_CHUNK_SIZE,
    AttemptStats,
    CiphertextChange,
    Fence,
    abandon_note,
)
from ._rows import (
    HEALTH_COLUMNS,
    JOB_COLUMNS,
    RECORD_COLUMNS,
    RUN_COLUMNS,
    USER_COLUMNS,
    ciphertext_change_row,
    health_row,
    job_state,
    key_health,
    key_record,
    numeric_id,
    parse_time,
    quoted,
    record_row,
    run_record,
    run_row,
    stored_user,
    user_data_row,
    user_key,
    writable_table,
)
from ._sql import DEFAULT_READ_AHEAD, SQL_TABLES

if TYPE_CHECKING:
    from .._report import SyncReport

__all__ = ["SUPABASE_MAX_ROWS", "SupabaseStore"]

#: Supabase's default cap on rows per response.
SUPABASE_MAX_ROWS = 1000


class SupabaseStore(KeysetPaging[dict[str, Any]], ChunkedWrites, DataAPISession):
    """A :class:`~sentinel_kit.Store` on a Supabase project's Data API. The paging
    (:mod:`._paging`) and chunk loops (:mod:`._chunks`) are the ones every store shares;
    this class supplies their primitives: one function call, one request.

    Args:
        url, service_key, timeout, attempts, retry_wait, transport: the session's, see
            :class:`~sentinel_kit.stores._dataapi.DataAPISession`.
        chunk_size: rows per upsert request.
    """

    def __init__(
        self,
        url: str | Secret,
        *,
        service_key: str | Secret | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float = 30.0,
        attempts: int = 3,
        retry_wait: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            url,
            service_key=service_key,
            timeout=timeout,
            attempts=attempts,
            retry_wait=retry_wait,
            transport=transport,
        )
        self.chunk_size = chunk_size
        #: Keys one ``sentinel_key_page`` call returns (see ``iter_key_pages``).
        self.read_ahead = DEFAULT_READ_AHEAD
        self.write_calls = 0
        self._integer_id_column: bool | None = None

    _connection_state = ("_http", "_client", "_integer_id_column")
    #: Users per read of ``user_data``: their ids go in the URL, which must stay short.
    _read_batch = 200

    async def _enter(self) -> None:
        await super()._enter()
        self.write_calls = 0
        self._integer_id_column = None

    # -- the Store protocol -------------------------------------------------------------------

    async def check_schema(self) -> None:
        """Raise SchemaMissing unless every table a sync touches is visible to the API."""
        for table in SQL_TABLES:
            await self._call(
                "checking the schema",
                lambda t=table: self.client.table(t).select("*").limit(0).execute(),  # type: ignore[misc]
                retry=True,
            )

    async def migrate(self) -> list[str]:
        """DDL cannot run through the Data API: raise a ConfigError saying what to do."""
        raise ConfigError(
            "Supabase's Data API cannot create tables: paste `sentinel-kit migrate --print` into "
            "the Supabase SQL editor (or save it under supabase/migrations/), or run "
            "`sentinel-kit migrate --db postgresql://...` with the project's connection string"
        )

    async def count_keys(self) -> int:
        """Return how many rows ``user_keys`` holds (an exact count, no rows transferred)."""
        response = await self._call(
            "counting keys",
            lambda: (
                self.client.table("user_keys")
                .select("id", count=CountMethod.exact)
                .limit(1)
                .execute()
            ),
            retry=True,
        )
        return int(response.count or 0)

    async def _key_page(
        self, query: KeyQuery, after: Cursor | None, limit: int
    ) -> list[dict[str, Any]]:
        """One call of ``sentinel_key_page`` (migration 011; with ``sync``, of
        ``sentinel_unit_key_page``, migration 013, by that sync's own attempts): up to
        ``limit`` keys after ``after`` in fair order, as one JSON array, which
        ``db-max-rows`` does not cut (:mod:`._paging`)."""
        # The keys in this order: the request's body is the same byte for byte (cassettes).
        params: dict[str, Any] = {"p_limit": limit}
        if query.attempted_before is not None:
            params["p_before"] = query.attempted_before
        if query.shard is not None:
            params["p_shard"], params["p_shards"] = query.shard
        function = "sentinel_key_page" if query.sync is None else "sentinel_unit_key_page"
        if query.sync is not None:
            params["p_sync"] = query.sync
        if after is not None:
            params["p_after_attempt"], params["p_after_user"], params["p_after_id"] = after
        # Retried on transient failures: a read.
        rows = await self._rpc(function, _json(params), retry=True)
        if not isinstance(rows, list):
            raise StoreError(
                "Supabase sent an unreadable page of keys (sentinel_key_page): is "
                "migration 011 applied? Print it with `sentinel-kit migrate --print`"
            )
        return rows

    def _key_of(self, row: dict[str, Any]) -> UserKey:
        return user_key(row)

    def _cursor_of(self, row: dict[str, Any]) -> Cursor:
        return (row["attempted_at"], row["user_id"], row["id"])

    async def _write_attempts(
        self,
        user_ids: Sequence[str],
        *,
        at: datetime,
        job: str | None,
        fence: Fence | None,
        sync: str | None,
    ) -> None:
        """One call of ``sentinel_record_attempts``, or with ``sync`` of
        ``sentinel_record_unit_attempts`` (:class:`._chunks.ChunkedWrites`)."""
        lease, token = fence_values(fence)
        # Retried: idempotent, and fenced (see ChunkedWrites.record_attempts).
        if sync is not None:
            unit = {
                "p_sync": sync,
                "p_unit_ids": list(user_ids),
                "p_at": at,
                "p_lease": lease,
                "p_fence": token,
            }
            await self._rpc("sentinel_record_unit_attempts", _json(unit), retry=True)
            return
        params = {
            "p_user_ids": list(user_ids),
            "p_at": at,
            "p_job": job,
            "p_lease": lease,
            "p_fence": token,
        }
        await self._rpc("sentinel_record_attempts", _json(params), retry=True)

    async def attempt_stats(
        self, *, since: datetime, shard: tuple[int, int] | None = None, sync: str | None = None
    ) -> AttemptStats:
        """Return the backlog of the users in ``user_keys`` (function
        ``sentinel_attempt_stats``): sync-users' only.

        Raises:
            SchemaMissing: ``sync`` was given: no function counts a declared sync's
                attempts through the Data API yet (``status`` then shows no backlog).
        """
        if sync is not None:
            raise SchemaMissing(
                f"no database function counts the backlog of {sync} through Supabase's Data API yet"
            )
        params: dict[str, Any] = {"p_since": since}
        if shard is not None:
            params["p_shard"], params["p_shards"] = shard
        rows = await self._rpc("sentinel_attempt_stats", _json(params), retry=True) or []
        found = rows[0] if rows else {}
        return AttemptStats(
            int(found.get("users") or 0),
            int(found.get("stale_users") or 0),
            int(found.get("never_attempted") or 0),
            parse_time(found.get("oldest_attempt_at")),
        )

    async def _write_user_data(self, rows: Sequence[UserDataRow], fence: Fence | None) -> None:
        """One request of ``user_data`` rows; a fenced one through the SQL function
        ``sentinel_upsert_user_data`` (:class:`._chunks.ChunkedWrites`)."""
        chunk = [_json(user_data_row(r)) for r in rows]
        if fence is None:
            await self._call(
                "writing user_data",
                partial(self._upsert, "user_data", chunk, "user_id"),
                retry=True,
            )
        else:
            # Retried: see ChunkedWrites.upsert_user_data.
            await self._rpc(
                "sentinel_upsert_user_data",
                {"p_lease": fence.lease, "p_fence": fence.token, "p_rows": chunk},
                retry=True,
            )

    async def _write_rows(
        self,
        table: str,
        key: tuple[str, ...],
        rows: Sequence[Mapping[str, Any]],
        fence: Fence | None,
    ) -> None:
        """One call of the generic fenced SQL function ``sentinel_upsert_rows`` (migration
        013), which quotes every name (:class:`._chunks.ChunkedWrites`)."""
        lease, token = fence_values(fence)
        # Retried: see ChunkedWrites.upsert_rows.
        await self._rpc(
            "sentinel_upsert_rows",
            {
                "p_table": table,
                "p_key": list(key),
                "p_rows": [_json(dict(r)) for r in rows],
                "p_lease": lease,
                "p_fence": token,
            },
            retry=True,
        )

    async def _read_user_data(self, user_ids: Sequence[str]) -> Iterable[StoredUser]:
        """One request of ``user_data`` rows (:class:`._chunks.ChunkedWrites`)."""
        response = await self._call(
            "reading user_data",
            lambda: (
                self.client.table("user_data")
                .select(",".join(USER_COLUMNS))
                .in_("user_id", list(user_ids))
                .execute()
            ),
            retry=True,
        )
        return [stored_user(r) for r in response.data or []]

    async def list_rows(
        self,
        table: str,
        *,
        order_by: Sequence[str],
        limit: int = 100,
        users: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Return up to ``limit`` rows of a declared table (of ``users`` when given)."""
        writable_table(table)
        for name in order_by:
            quoted(name)

        def query() -> Any:
            request = self.client.table(table).select("*")
            if users is not None:
                request = request.in_("user_id", list(dict.fromkeys(users))[:200])
            for name in order_by:
                request = request.order(name)
            return request.limit(min(limit, SUPABASE_MAX_ROWS)).execute()

        response = await self._call(f"reading {table}", query, retry=True)
        return [dict(r) for r in response.data or []]

    async def list_user_data(self, *, limit: int = 100) -> list[StoredUser]:
        """Return up to ``limit`` rows of ``user_data`` ordered by user_id."""
        response = await self._call(
            "reading user_data",
            lambda: (
                self.client.table("user_data")
                .select(",".join(USER_COLUMNS))
                .order("user_id")
                .limit(min(limit, SUPABASE_MAX_ROWS))
                .execute()
            ),
            retry=True,
        )
        return [stored_user(r) for r in response.data or []]

    async def add_key(self, key: UserKey) -> str:
        """Insert one ``user_keys`` row (a missing ``created_at`` takes the default); return
        its id (made by the database for an integer ``id`` column and a non-numeric id)."""
        rows = await self._insert_keys("adding a key", [_key_json(key)], returning=True)
        return str(rows[0]["id"]) if rows else key.id

    async def add_keys(self, keys: Sequence[UserKey]) -> int:
        """Insert many ``user_keys`` rows, one request per chunk."""
        for chunk in chunks(keys, self.chunk_size):
            # A list insert names its columns (`columns=`): every row carries all four.
            rows = [{**_key_json(k), "created_at": k.created_at} for k in chunk]
            await self._insert_keys("adding keys", rows)
        return len(keys)

    async def _insert_keys(
        self, doing: str, rows: list[dict[str, Any]], *, returning: bool = False
    ) -> list[dict[str, Any]]:
        """Insert key rows; when ``user_keys.id`` turns out to be an integer column (the
        app's ``bigint`` identity refused a UUID), insert them again without the ids that
        are not numbers, so the column's default makes them. Not retried: an insert is not
        idempotent."""
        method = ReturnMethod.representation if returning else ReturnMethod.minimal

        async def insert(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
            table = self.client.table("user_keys")
            response = await table.insert(batch, returning=method).execute()
            return list(response.data or [])

        with self._errors(doing):
            try:
                return await insert(rows)
            except APIError as exc:
                # 22P02: invalid text representation, e.g. a UUID for a bigint column.
                if exc.code != "22P02" or not await self._integer_ids():
                    raise
            numbered = [r for r in rows if numeric_id(str(r["id"]))]
            others = [
                {k: v for k, v in r.items() if k != "id"}
                for r in rows
                if not numeric_id(str(r["id"]))
            ]
            return [*(await insert(numbered) if numbered else []), *await insert(others)]

    async def _integer_ids(self) -> bool:
        """True when ``user_keys.id`` is an integer column (asked once per connection)."""
        if self._integer_id_column is None:
            types = (await self.column_types()).get("user_keys", {})
            self._integer_id_column = integer_column(types.get("id"))
        return self._integer_id_column

    async def replace_ciphertexts(self, changes: Sequence[CiphertextChange]) -> int:
        """Swap re-encrypted ciphertexts in through ``sentinel_replace_ciphertexts``
        (compare-and-swap, key health carried over, one transaction); return how many."""
        if not changes:
            return 0
        payload = [ciphertext_change_row(c) for c in changes]
        # Retried on transient failures: a replayed swap finds the new value and does nothing.
        replaced = await self._rpc(
            "sentinel_replace_ciphertexts", {"p_changes": payload}, retry=True
        )
        return int(replaced or 0)

    # -- inspection (doctor) -----------------------------------------------------------------

    async def applied_migrations(self) -> list[str]:
        """Return the names in ``sentinel_migrations``, in order."""
        response = await self._call(
            "reading sentinel_migrations",
            lambda: self.client.table("sentinel_migrations").select("name").order("name").execute(),
            retry=True,
        )
        return [str(r["name"]) for r in response.data or []]

    async def security_facts(self) -> SecurityFacts:
        """Who can reach our tables and functions (``sentinel_security_report()``).

        Raises:
            SchemaMissing: migration 007 is not applied.
        """
        report = await self._rpc("sentinel_security_report", {}, retry=True)
        try:
            return SecurityFacts.from_json(report)
        except ValueError as exc:
            raise StoreError(f"Supabase sent an unreadable security report: {exc}") from None

    async def column_types(self) -> dict[str, dict[str, str]]:
        """Return ``{table: {column: type}}`` of ``user_keys`` and ``user_data`` (from the
        security report: the Data API shows no catalog)."""
        types = (await self.security_facts()).column_types()
        return {t: types[t] for t in ("user_keys", "user_data") if t in types}

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
        """Insert or complete (by run_id) a run's row in ``sentinel_runs``."""
        row = _json(run_row(report, scheduled_for=scheduled_for, holder=holder, fence=fence))
        await self._call(
            "recording the run", partial(self._upsert, "sentinel_runs", row, "run_id"), retry=True
        )

    async def list_runs(self, *, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Return recent runs, newest first."""

        def query() -> Any:
            builder = self.client.table("sentinel_runs").select(",".join(RUN_COLUMNS))
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

    async def load_key_health(self) -> dict[str, KeyHealth]:
        """Return every parked key's health row, by key id (paged like the keys)."""
        found: dict[str, KeyHealth] = {}
        pages = self._pages("reading sentinel_key_health", self._health_page, SUPABASE_MAX_ROWS)
        async for rows in pages:
            for r in rows:
                health = key_health(r)
                found[health.key_id] = health
        return found

    def _health_page(self, start: int, size: int) -> Any:
        return (
            self.client.table("sentinel_key_health")
            .select(",".join(HEALTH_COLUMNS), count=CountMethod.exact)
            .order("key_id")
            .range(start, start + size - 1)
            .execute()
        )

    async def save_key_health(self, park: Sequence[KeyHealth], clear: Sequence[str]) -> None:
        """Delete the ``clear`` rows and upsert the ``park`` rows (with the run that parked
        each) in one transaction, through ``sentinel_save_key_health`` (migration 012)."""
        if not park and not clear:
            return
        # Sorted: the same changes make the same request whatever order the run found them in.
        rows = [
            _json({**health_row(h), "run_id": h.run_id})
            for h in sorted(park, key=lambda h: h.key_id)
        ]
        # Retried on transient failures: the same deletes and upserts again change nothing.
        await self._rpc(
            "sentinel_save_key_health", {"p_park": rows, "p_clear": sorted(clear)}, retry=True
        )

    async def unpark_keys(
        self,
        *,
        run_id: str | None = None,
        code: int | None = None,
        since: datetime | None = None,
    ) -> int:
        """Un-park keys by run, or by code and time, through ``sentinel_unpark_keys``
        (migration 012, one transaction); return how many."""
        if run_id is None and code is None and since is None:
            raise StoreError("say which keys to un-park: a run, a code or a time")
        params = _json({"p_run": run_id, "p_code": code, "p_since": since})
        # Not retried: a lost answer to an un-park that happened would count 0 the second time.
        return int(await self._rpc("sentinel_unpark_keys", params) or 0)

    async def load_key_access(self, sync: str) -> dict[str, str]:
        """Return the keys marked for ``sync`` (no access): their fingerprint, by key id,
        through ``sentinel_key_access_of`` (migration 013; one JSON array)."""
        rows = await self._rpc("sentinel_key_access_of", {"p_sync": sync}, retry=True)
        return {str(r["key_id"]): str(r["fingerprint"]) for r in rows or []}

    async def save_key_access(self, sync: str, marks: Sequence[KeyAccess]) -> None:
        """Mark keys for ``sync`` through ``sentinel_save_key_access``."""
        if not marks:
            return
        rows = [
            {
                "key_id": m.key_id,
                "fingerprint": m.fingerprint,
                "code": m.code,
                "since": m.since.astimezone(UTC).isoformat(),
            }
            for m in marks
        ]
        # Idempotent: the same marks again.
        await self._rpc("sentinel_save_key_access", {"p_sync": sync, "p_rows": rows}, retry=True)

    async def load_key_records(self) -> dict[str, KeyRecord]:
        """Return every ``sentinel_key_record`` row, by key id (paged like key health)."""
        found: dict[str, KeyRecord] = {}
        pages = self._pages("reading sentinel_key_record", self._record_page, SUPABASE_MAX_ROWS)
        async for rows in pages:
            for r in rows:
                record = key_record(r)
                found[record.key_id] = record
        return found

    def _record_page(self, start: int, size: int) -> Any:
        return (
            self.client.table("sentinel_key_record")
            .select(",".join(RECORD_COLUMNS), count=CountMethod.exact)
            .order("key_id")
            .range(start, start + size - 1)
            .execute()
        )

    async def _write_key_records(self, records: Sequence[KeyRecord]) -> None:
        """One upsert request of ``sentinel_key_record`` rows (retried: the same rows again
        change nothing)."""
        rows = [_json(record_row(r)) for r in records]
        await self._call(
            "writing sentinel_key_record",
            partial(self._upsert, "sentinel_key_record", rows, "key_id"),
            retry=True,
        )

    async def reset_key_health(self, key_id: str) -> bool:
        """Un-park one key; return False when it was not parked."""
        response = await self._call(
            "resetting key health",
            lambda: (
                self.client.table("sentinel_key_health")
                .delete(returning=ReturnMethod.representation)
                .eq("key_id", key_id)
                .execute()
            ),
            retry=False,
        )
        return bool(response.data)

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


def _json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row for the Data API: times as UTC ISO-8601 text."""
    return {
        k: v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v for k, v in row.items()
    }


def _key_json(key: UserKey) -> dict[str, Any]:
    row: dict[str, Any] = {"id": key.id, "user_id": key.user_id, "api_key": key.api_key}
    if key.created_at:
        row["created_at"] = key.created_at
    return row
