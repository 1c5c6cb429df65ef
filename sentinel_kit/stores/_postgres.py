"""The PostgreSQL backend, on psycopg 3 (the ``postgres`` extra).

Also the way to reach a Supabase database directly (its connection string). One connection
is opened per store, in ``async with``; keys are read with keyset paging on (user_id, id);
``user_data`` is upserted with one statement per chunk over a JSON array, which
``jsonb_populate_recordset`` casts to the table's own column types; fenced writes, leases
and their fencing tokens go through the ``sentinel_*`` SQL functions.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError, SchemaMissing, StaleFence, StoreError
from .._models import UserDataRow
from ._migrations import MIGRATIONS_TABLE, migrations
from ._protocols import DEFAULT_CHUNK_SIZE, Fence
from ._rows import iso, user_data_row
from ._sql import SQL_TABLES, Row, Session, SQLStore

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStore"]

#: Serialises concurrent `migrate` runs against one database.
_MIGRATE_LOCK = 0x53454E54  # "SENT"

_UPSERT = """
INSERT INTO user_data (user_id, name, player_id, updated_at)
SELECT user_id, name, player_id, updated_at
  FROM jsonb_populate_recordset(NULL::user_data, ?::jsonb)
ON CONFLICT (user_id) DO UPDATE
   SET name = EXCLUDED.name, player_id = EXCLUDED.player_id, updated_at = EXCLUDED.updated_at
"""


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - exercised only without the extra installed
        raise ConfigError(
            "the postgres backend needs psycopg: pip install 'sentinel-kit[postgres]'"
        ) from None
    return psycopg


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _PostgresSession:
    """Statements on the psycopg connection; ``?`` placeholders become ``%s``."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = await self._conn.execute(sql.replace("?", "%s"), params)
        return list(await cursor.fetchall())

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = await self._conn.execute(sql.replace("?", "%s"), params)
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self._conn.cursor() as cursor:
            await cursor.executemany(sql.replace("?", "%s"), rows)


class PostgresStore(SQLStore):
    """A :class:`~sentinel_kit.Store` on PostgreSQL.

    >>> store = PostgresStore("postgresql://user@host/db")
    >>> async with store:                       # doctest: +SKIP
    ...     await store.count_keys()

    Args:
        url: a ``postgresql://`` connection URL (a password in it is never logged).
        chunk_size: rows per upsert statement.
        connect_timeout: seconds to wait for the server.
    """

    def __init__(
        self, url: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE, connect_timeout: float = 10.0
    ) -> None:
        from . import redact_url

        super().__init__(chunk_size=chunk_size)
        self.url = url
        self.connect_timeout = connect_timeout
        self.label = redact_url(url)
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self.label!r})"

    async def _open(self) -> None:
        psycopg = _import_psycopg()
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, int(self.connect_timeout)),
                # Seed columns are `timestamp` (no zone): keep the session in UTC so what we
                # write and read is UTC whatever the server's default.
                options="-c TimeZone=UTC",
            )
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.label}: {_first_line(exc)} "
                "(check the URL, that the server runs, and that it accepts this user)"
            ) from None

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    @asynccontextmanager
    async def _session(self, *, transaction: bool) -> AsyncIterator[Session]:
        conn = self._conn
        if conn is None:
            raise StoreError("the PostgreSQL store is not open: use `async with store:`")
        if not transaction:
            yield _PostgresSession(conn)
            return
        async with conn.transaction():
            yield _PostgresSession(conn)

    @contextmanager
    def _driver_errors(self, doing: str) -> Iterator[None]:
        psycopg = _import_psycopg()
        try:
            yield
        except psycopg.Error as exc:
            state = getattr(exc, "sqlstate", None) or ""
            text = _first_line(exc)
            if state in ("42P01", "42883"):  # undefined table / function
                raise SchemaMissing(
                    f"{text} in {self.label}: run `sentinel-kit migrate --db <this URL>`, "
                    "or paste `sentinel-kit migrate --print` into your SQL editor"
                ) from None
            if state == "PT409":
                raise StaleFence(f"write refused: {text}") from None
            raise StoreError(f"PostgreSQL failed while {doing}: {text}") from None

    # -- schema ------------------------------------------------------------------------------

    async def check_schema(self) -> None:
        """Raise SchemaMissing unless every table a sync touches exists."""
        rows = await self._fetch(
            "checking the schema",
            "SELECT t FROM unnest(?::text[]) AS t WHERE to_regclass(t) IS NULL",
            [list(SQL_TABLES)],
        )
        if rows:
            raise SchemaMissing(
                f"table(s) {', '.join(r[0] for r in rows)} missing in {self.label}: run "
                "`sentinel-kit migrate --db <this URL>`"
            )

    async def migrate(self) -> list[str]:
        """Apply the packaged PostgreSQL migrations that are missing; return their names."""
        applied: list[str] = []
        async with self._use("applying migrations", transaction=True) as session:
            await session.execute("SELECT pg_advisory_xact_lock(?)", [_MIGRATE_LOCK])
            await session.execute(MIGRATIONS_TABLE["postgres"])
            done = {r[0] for r in await session.fetch("SELECT name FROM sentinel_migrations")}
            for name, sql in migrations("postgres"):
                if name in done:
                    continue
                await self._script(sql)
                await session.execute("INSERT INTO sentinel_migrations (name) VALUES (?)", [name])
                applied.append(name)
        return applied

    async def _script(self, sql: str) -> None:
        # Our own files, no parameters: sent as one simple-protocol script.
        if self._conn is None:
            raise StoreError("the PostgreSQL store is not open: use `async with store:`")
        await self._conn.execute(sql.encode())

    # -- reads in the table's own types ------------------------------------------------------

    def _key_select(self) -> str:
        return "SELECT id, user_id, api_key, created_at FROM user_keys"

    def _user_id_text(self) -> str:
        return "user_id::text"

    # -- writes ------------------------------------------------------------------------------

    async def _upsert_chunk(
        self, session: Session, rows: Sequence[UserDataRow], fence: Fence | None
    ) -> None:
        payload = json.dumps([{**user_data_row(r), "updated_at": iso(r.updated_at)} for r in rows])
        if fence is None:
            await session.execute(_UPSERT, [payload])
        else:
            await session.execute(
                "SELECT sentinel_upsert_user_data(?, ?, ?::jsonb)",
                [fence.lease, fence.token, payload],
            )

    # -- job state ---------------------------------------------------------------------------
    # Through the same SQL functions the Supabase store calls, so both run the same SQL.

    async def register_job(
        self, job: str, *, schedule: str, timeout_s: float, first_tick: datetime
    ) -> None:
        """Insert or refresh a job's row, keeping the first ``first_tick`` ever registered."""
        await self._fetch(
            "registering the job",
            "SELECT sentinel_register_job(?, ?, ?, ?)",
            [job, schedule, timeout_s, first_tick],
        )

    async def set_alert_state(self, job: str, *, healthy: bool, as_of: datetime) -> bool:
        """Compare-and-set a job's alert state; True when this call changed it."""
        rows = await self._fetch(
            "setting the alert state",
            "SELECT sentinel_set_alert_state(?, ?, ?)",
            [job, "healthy" if healthy else "unhealthy", as_of],
        )
        return bool(rows and rows[0][0])

    # -- leases ------------------------------------------------------------------------------

    async def claim_lease(self, name: str, holder: str, ttl: float) -> Fence | None:
        """Take lease ``name`` for ``ttl`` seconds; None while another holder's is unexpired."""
        rows = await self._fetch(
            "claiming a lease", "SELECT sentinel_claim_lease(?, ?, ?)", [name, holder, ttl]
        )
        return Fence(name, int(rows[0][0])) if rows and rows[0][0] is not None else None

    async def renew_lease(self, fence: Fence, holder: str, ttl: float) -> bool:
        """Extend a lease still held under ``fence``; False when it was lost."""
        rows = await self._fetch(
            "renewing a lease",
            "SELECT sentinel_renew_lease(?, ?, ?, ?)",
            [fence.lease, holder, fence.token, ttl],
        )
        return bool(rows and rows[0][0])

    async def release_lease(self, fence: Fence, holder: str) -> bool:
        """Give a lease up; False when it was no longer ours."""
        rows = await self._fetch(
            "releasing a lease",
            "SELECT sentinel_release_lease(?, ?, ?)",
            [fence.lease, holder, fence.token],
        )
        return bool(rows and rows[0][0])
