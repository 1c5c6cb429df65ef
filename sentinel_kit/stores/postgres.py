"""The PostgreSQL backend, on psycopg 3 (the ``postgres`` extra).

Also the way to reach a Supabase database directly (its connection string). One connection
is opened per run, in ``__aenter__``; keys are read with keyset paging on (user_id, id);
upserts are one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT`` statement per chunk, or
the ``sentinel_upsert_user_data`` function when the write is fenced.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

from ..errors import ConfigError, SchemaMissing, StaleFence, StoreError
from ..health import HealthState, KeyHealth
from ..models import LeaseInfo, RunRecord, SyncReport, UserDataRow, UserKey
from ..sql import MIGRATIONS_TABLE, migrations
from .base import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PAGE_SIZE,
    Fence,
    StoredUser,
    abandon_note,
    dedupe_rows,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStore"]

_TABLES = ("user_keys", "user_data", "sentinel_runs", "sentinel_key_health", "sentinel_leases")
#: Serialises concurrent `migrate` runs against one database.
_MIGRATE_LOCK = 0x53454E54  # "SENT"

_UPSERT = """
INSERT INTO user_data (user_id, name, player_id, updated_at)
SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::integer[], %s::timestamp[])
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


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


class PostgresStore:
    """A :class:`~sentinel_kit.stores.base.Store` on PostgreSQL.

    Args:
        url: a ``postgresql://`` connection URL (a password in it is never logged).
        chunk_size: rows per upsert statement.
        connect_timeout: seconds to wait for the server.
    """

    def __init__(
        self, url: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE, connect_timeout: float = 10.0
    ) -> None:
        from . import redact_url

        self.url = url
        self.chunk_size = chunk_size
        self.connect_timeout = connect_timeout
        self.label = redact_url(url)
        self.write_calls = 0
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self.label!r})"

    async def __aenter__(self) -> Self:
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
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.label}: {first} "
                "(check the URL, that the server runs, and that it accepts this user)"
            ) from None
        self.write_calls = 0
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @property
    def conn(self) -> psycopg.AsyncConnection[Any]:
        """The open connection; raises when the store is not open."""
        if self._conn is None:
            raise StoreError("the PostgreSQL store is not open: use `async with store:`")
        return self._conn

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        psycopg = _import_psycopg()
        try:
            yield
        except psycopg.Error as exc:
            state = getattr(exc, "sqlstate", None) or ""
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if state in ("42P01", "42883"):  # undefined table / function
                raise SchemaMissing(
                    f"{text} in {self.label}: run `sentinel-kit migrate --db <this URL>`, "
                    "or paste `sentinel-kit migrate --print` into your SQL editor"
                ) from None
            if state == "PT409":
                raise StaleFence(f"write refused: {text}") from None
            raise StoreError(f"PostgreSQL failed while {doing}: {text}") from None

    async def check_schema(self) -> None:
        """Raise SchemaMissing unless every table a sync touches exists."""
        with self._errors("checking the schema"):
            cursor = await self.conn.execute(
                "SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NULL",
                (list(_TABLES),),
            )
            missing = [r[0] for r in await cursor.fetchall()]
        if missing:
            raise SchemaMissing(
                f"table(s) {', '.join(missing)} missing in {self.label}: run "
                "`sentinel-kit migrate --db <this URL>`"
            )

    async def migrate(self) -> list[str]:
        """Apply the packaged PostgreSQL migrations that are missing; return their names."""
        applied: list[str] = []
        with self._errors("applying migrations"):
            async with self.conn.transaction():
                await self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
                await self.conn.execute(MIGRATIONS_TABLE["postgres"])
                cursor = await self.conn.execute("SELECT name FROM sentinel_migrations")
                done = {r[0] for r in await cursor.fetchall()}
                for name, sql in migrations("postgres"):
                    if name in done:
                        continue
                    await self.conn.execute(sql.encode())  # our own files, no parameters
                    await self.conn.execute(
                        "INSERT INTO sentinel_migrations (name) VALUES (%s)", (name,)
                    )
                    applied.append(name)
        return applied

    async def count_keys(self) -> int:
        """Return how many rows ``user_keys`` holds."""
        with self._errors("counting keys"):
            cursor = await self.conn.execute("SELECT count(*) FROM user_keys")
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def iter_key_pages(
        self, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[list[UserKey]]:
        """Yield keys in (user_id, id) order, one keyset page at a time."""
        columns = "SELECT id::text, user_id, api_key, created_at FROM user_keys"
        last: tuple[str, str] | None = None
        while True:
            with self._errors("reading user_keys"):
                if last is None:
                    cursor = await self.conn.execute(
                        f"{columns} ORDER BY user_id, id LIMIT %s", (page_size,)
                    )
                else:
                    cursor = await self.conn.execute(
                        # Parameters go untyped, so Postgres reads them as the columns' types.
                        f"{columns} WHERE (user_id, id) > (%s, %s) ORDER BY user_id, id LIMIT %s",
                        (*last, page_size),
                    )
                rows = await cursor.fetchall()
            if not rows:
                return
            page = [
                UserKey(id=r[0], user_id=r[1], api_key=r[2], created_at=_iso(r[3])) for r in rows
            ]
            last = (page[-1].user_id, page[-1].id)
            yield page
            if len(rows) < page_size:
                return

    async def upsert_user_data(
        self, rows: Sequence[UserDataRow], *, fence: Fence | None = None
    ) -> int:
        """Insert or update ``user_data`` in chunks; fenced writes go through the function."""
        unique = dedupe_rows(rows)
        for start in range(0, len(unique), self.chunk_size):
            chunk = unique[start : start + self.chunk_size]
            with self._errors("writing user_data"):
                if fence is None:
                    await self.conn.execute(
                        _UPSERT,
                        (
                            [r.user_id for r in chunk],
                            [r.name for r in chunk],
                            [r.player_id for r in chunk],
                            [r.updated_at.astimezone(UTC).replace(tzinfo=None) for r in chunk],
                        ),
                    )
                else:
                    payload = json.dumps(
                        [
                            {
                                "user_id": r.user_id,
                                "name": r.name,
                                "player_id": r.player_id,
                                "updated_at": r.updated_at.isoformat(),
                            }
                            for r in chunk
                        ]
                    )
                    await self.conn.execute(
                        "SELECT sentinel_upsert_user_data(%s, %s, %s::jsonb)",
                        (fence.lease, fence.token, payload),
                    )
            self.write_calls += 1
        return len(unique)

    async def fetch_user_data(self, user_ids: Sequence[str]) -> dict[str, StoredUser]:
        """Return the current rows of these users."""
        with self._errors("reading user_data"):
            cursor = await self.conn.execute(
                "SELECT user_id, name, player_id, updated_at FROM user_data "
                "WHERE user_id = ANY(%s)",
                (list(dict.fromkeys(user_ids)),),
            )
            rows = await cursor.fetchall()
        return {r[0]: (r[0], r[1], r[2], _iso(r[3])) for r in rows}

    async def list_user_data(self, *, limit: int = 100) -> list[StoredUser]:
        """Return up to ``limit`` rows of ``user_data`` ordered by user_id."""
        with self._errors("reading user_data"):
            cursor = await self.conn.execute(
                "SELECT user_id, name, player_id, updated_at FROM user_data "
                "ORDER BY user_id LIMIT %s",
                (limit,),
            )
            rows = await cursor.fetchall()
        return [(r[0], r[1], r[2], _iso(r[3])) for r in rows]

    async def add_key(self, key: UserKey) -> None:
        """Insert one ``user_keys`` row."""
        created = datetime.fromisoformat(key.created_at) if key.created_at else None
        with self._errors("adding a key"):
            await self.conn.execute(
                "INSERT INTO user_keys (id, user_id, api_key, created_at) "
                "VALUES (%s, %s, %s, COALESCE(%s::timestamptz AT TIME ZONE 'UTC', now()))",
                (key.id, key.user_id, key.api_key, created),
            )

    async def add_keys(self, keys: Sequence[UserKey]) -> int:
        """Insert many ``user_keys`` rows with one statement per chunk."""
        for start in range(0, len(keys), self.chunk_size):
            chunk = keys[start : start + self.chunk_size]
            with self._errors("adding keys"):
                await self.conn.execute(
                    "INSERT INTO user_keys (id, user_id, api_key, created_at) "
                    "SELECT i::uuid, u, a, COALESCE(c AT TIME ZONE 'UTC', now()) "
                    "FROM unnest(%s::text[], %s::varchar[], %s::text[], %s::timestamptz[]) "
                    "AS t(i, u, a, c)",
                    (
                        [k.id for k in chunk],
                        [k.user_id for k in chunk],
                        [k.api_key for k in chunk],
                        [
                            datetime.fromisoformat(k.created_at) if k.created_at else None
                            for k in chunk
                        ],
                    ),
                )
        return len(keys)

    async def begin_run(self, record: RunRecord) -> bool:
        """Insert a ``running`` row for a tick; False when (job, scheduled_for) is taken."""
        with self._errors("claiming a tick"):
            cursor = await self.conn.execute(
                "INSERT INTO sentinel_runs (run_id, job, scheduled_for, holder, fence, status, "
                "started_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (job, scheduled_for) DO NOTHING",
                (
                    record.run_id,
                    record.job,
                    record.scheduled_for,
                    record.holder,
                    record.fence,
                    record.status,
                    record.started_at,
                ),
            )
        return cursor.rowcount > 0

    async def record_run(
        self,
        report: SyncReport,
        *,
        scheduled_for: datetime | None = None,
        holder: str | None = None,
        fence: int | None = None,
    ) -> None:
        """Insert or complete (by run_id) a run's row in ``sentinel_runs``."""
        with self._errors("recording the run"):
            await self.conn.execute(
                "INSERT INTO sentinel_runs (run_id, job, scheduled_for, holder, fence, status, "
                "started_at, finished_at, keys_total, synced, failed, skipped, written, error) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, "
                "finished_at = EXCLUDED.finished_at, keys_total = EXCLUDED.keys_total, "
                "synced = EXCLUDED.synced, failed = EXCLUDED.failed, "
                "skipped = EXCLUDED.skipped, written = EXCLUDED.written, error = EXCLUDED.error",
                (
                    report.run_id,
                    report.job,
                    scheduled_for,
                    holder,
                    fence,
                    report.status.value,
                    report.started_at,
                    report.finished_at,
                    report.keys_total,
                    report.synced,
                    report.failed,
                    report.skipped,
                    report.written,
                    report.error,
                ),
            )

    async def list_runs(self, *, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Return recent runs, newest first."""
        with self._errors("reading sentinel_runs"):
            cursor = await self.conn.execute(
                "SELECT run_id::text, job, status, started_at, finished_at, scheduled_for, "
                "holder, fence, keys_total, synced, failed, skipped, written, error "
                "FROM sentinel_runs WHERE %s::text IS NULL OR job = %s "
                "ORDER BY started_at DESC LIMIT %s",
                (job, job, limit),
            )
            rows = await cursor.fetchall()
        return [RunRecord(*r) for r in rows]

    async def abandon_runs(self, job: str, *, fence: int, holder: str) -> int:
        """Mark older tenures' ``running`` rows of ``job`` as ``abandoned``."""
        with self._errors("marking abandoned runs"):
            cursor = await self.conn.execute(
                "UPDATE sentinel_runs SET status = 'abandoned', finished_at = now(), error = %s "
                "WHERE job = %s AND status = 'running' AND fence < %s",
                (abandon_note(holder, fence), job, fence),
            )
        return cursor.rowcount

    async def get_lease(self, name: str) -> LeaseInfo | None:
        """Return a lease's holder, token and expiry."""
        with self._errors("reading sentinel_leases"):
            cursor = await self.conn.execute(
                "SELECT name, holder, fence, expires_at FROM sentinel_leases WHERE name = %s",
                (name,),
            )
            row = await cursor.fetchone()
        return LeaseInfo(row[0], row[1], int(row[2]), row[3]) if row else None

    async def load_key_health(self) -> dict[str, KeyHealth]:
        """Return every parked key's health row, by key id."""
        with self._errors("reading sentinel_key_health"):
            cursor = await self.conn.execute(
                "SELECT key_id, user_id, fingerprint, state, last_code, since, retry_after, "
                "reason FROM sentinel_key_health ORDER BY user_id, key_id"
            )
            rows = await cursor.fetchall()
        return {
            r[0]: KeyHealth(r[0], r[1], r[2], HealthState(r[3]), r[4], r[5], r[6], r[7])
            for r in rows
        }

    async def save_key_health(self, park: Sequence[KeyHealth], clear: Sequence[str]) -> None:
        """Upsert ``park`` rows and delete the ``clear`` rows in one transaction."""
        if not park and not clear:
            return
        with self._errors("writing sentinel_key_health"):
            async with self.conn.transaction():
                if clear:
                    await self.conn.execute(
                        "DELETE FROM sentinel_key_health WHERE key_id = ANY(%s)", (list(clear),)
                    )
                async with self.conn.cursor() as cursor:
                    await cursor.executemany(
                        "INSERT INTO sentinel_key_health (key_id, user_id, fingerprint, state, "
                        "last_code, reason, since, retry_after) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (key_id) DO UPDATE SET user_id = EXCLUDED.user_id, "
                        "fingerprint = EXCLUDED.fingerprint, state = EXCLUDED.state, "
                        "last_code = EXCLUDED.last_code, reason = EXCLUDED.reason, "
                        "since = EXCLUDED.since, retry_after = EXCLUDED.retry_after",
                        [
                            (
                                h.key_id,
                                h.user_id,
                                h.fingerprint,
                                h.state.value,
                                h.last_code,
                                h.reason,
                                h.since,
                                h.retry_after,
                            )
                            for h in park
                        ],
                    )

    async def reset_key_health(self, key_id: str) -> bool:
        """Un-park one key; return False when it was not parked."""
        with self._errors("resetting key health"):
            cursor = await self.conn.execute(
                "DELETE FROM sentinel_key_health WHERE key_id = %s", (key_id,)
            )
        return cursor.rowcount > 0

    async def claim_lease(self, name: str, holder: str, ttl: float) -> Fence | None:
        """Take lease ``name`` for ``ttl`` seconds; None while another holder's is unexpired."""
        with self._errors("claiming a lease"):
            cursor = await self.conn.execute(
                "SELECT sentinel_claim_lease(%s, %s, %s)", (name, holder, ttl)
            )
            row = await cursor.fetchone()
        return Fence(name, int(row[0])) if row and row[0] is not None else None

    async def renew_lease(self, fence: Fence, holder: str, ttl: float) -> bool:
        """Extend a lease still held under ``fence``; False when it was lost."""
        with self._errors("renewing a lease"):
            cursor = await self.conn.execute(
                "SELECT sentinel_renew_lease(%s, %s, %s, %s)",
                (fence.lease, holder, fence.token, ttl),
            )
            row = await cursor.fetchone()
        return bool(row and row[0])

    async def release_lease(self, fence: Fence, holder: str) -> bool:
        """Give a lease up; False when it was no longer ours."""
        with self._errors("releasing a lease"):
            cursor = await self.conn.execute(
                "SELECT sentinel_release_lease(%s, %s, %s)", (fence.lease, holder, fence.token)
            )
            row = await cursor.fetchone()
        return bool(row and row[0])
