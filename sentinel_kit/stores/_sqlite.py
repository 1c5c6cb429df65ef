"""The embedded default backend, on the standard library's ``sqlite3``.

Every SQLite call runs on one thread of the store's own, never on the event loop: a locked
database file (another process writing) waits there for up to its busy timeout while Torn
requests, rate limiters and the daemon's heartbeat go on. The connection is opened on that
thread inside the run (``async with``), because a ``sqlite3`` connection refuses use from a
thread other than its creator's.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .._errors import SchemaMissing, StoreDataError, StoreError
from .._json import dumps
from .._models import KeyInfo, UserDataRow, UserKey
from .._shard import shard_of
from ._migrations import MIGRATIONS_TABLE, migrations, statements
from ._protocols import DEFAULT_CHUNK_SIZE, Fence
from ._rows import KEY_INFO_COLUMNS, key_info_row, quoted, writable_table
from ._sql import SQL_TABLES, Row, Session, SQLStore

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_UPSERT = """
INSERT INTO user_data (user_id, name, player_id, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (user_id) DO UPDATE SET
    name = excluded.name, player_id = excluded.player_id, updated_at = excluded.updated_at
"""

_RECORD_ATTEMPT = """
INSERT INTO sentinel_user_attempts (user_id, attempted_at, job) VALUES (?, ?, ?)
ON CONFLICT (user_id) DO UPDATE SET attempted_at = excluded.attempted_at, job = excluded.job
"""


class _SQLiteSession:
    """Statements run on the store's thread."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self._store._call(lambda c: c.execute(sql, params).fetchall())

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._store._call(lambda c: c.execute(sql, params).rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._store._call(lambda c: c.executemany(sql, rows))


class SQLiteStore(SQLStore):
    """A :class:`~sentinel_kit.Store` on a SQLite file (or ``:memory:``).

    >>> store = SQLiteStore("sentinel.db")
    >>> async with store:                       # doctest: +SKIP
    ...     await store.count_keys()

    Args:
        path: the database file, or ``":memory:"``.
        create: create the file when it does not exist (``migrate`` and ``demo`` do); other
            commands refuse a missing file so a typo does not sync into an empty database.
        chunk_size: rows per upsert statement.
    """

    dialect = "sqlite"
    _connection_state = ("_lock", "_integer_ids", "_conn", "_thread")

    def __init__(
        self, path: str | Path, *, create: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        super().__init__(chunk_size=chunk_size)
        self.path = str(path)
        self.create = create
        self.label = f"sqlite:///{self.path}"
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    @property
    def _memory(self) -> bool:
        return self.path in (":memory:", "")

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn, thread = self._conn, self._thread
        if conn is None or thread is None:
            raise StoreError("the SQLite store is not open: use `async with store:`")
        return await asyncio.get_running_loop().run_in_executor(thread, work, conn)

    async def _open(self) -> None:
        if not self._memory and not self.create and not Path(self.path).exists():
            raise SchemaMissing(
                f"no SQLite database at {self.path}: create it with "
                f"`sentinel-kit migrate --db {self.label}`"
            )
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sentinel-sqlite")
        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(
                self._thread, self._connect
            )
        except sqlite3.Error as exc:
            self._thread.shutdown(wait=False)
            self._thread = None
            raise StoreError(
                f"cannot open SQLite database at {self.path}: {exc} "
                "(check that the directory exists and is writable)"
            ) from None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA foreign_keys = ON")
        if not self._memory:
            conn.execute("PRAGMA journal_mode = WAL")
        # The shard of a user, as sentinel_kit.shard_of computes it, for the key query.
        conn.create_function("sentinel_shard_of", 2, shard_of, deterministic=True)
        return conn

    async def _close(self) -> None:
        conn, thread = self._conn, self._thread
        self._conn = self._thread = None
        if conn is not None and thread is not None:
            await asyncio.get_running_loop().run_in_executor(thread, conn.close)
        if thread is not None:
            thread.shutdown(wait=True)

    @asynccontextmanager
    async def _session(self, *, transaction: bool) -> AsyncIterator[Session]:
        session = _SQLiteSession(self)
        if not transaction:
            yield session
            return
        await session.execute("BEGIN IMMEDIATE")
        try:
            yield session
        except BaseException:
            await session.execute("ROLLBACK")
            raise
        await session.execute("COMMIT")

    @contextmanager
    def _driver_errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "no such table" in text:
                table = text.rsplit(":", 1)[-1].strip()
                raise SchemaMissing(
                    f"table {table} does not exist in {self.path}: run "
                    f"`sentinel-kit migrate --db {self.label}`"
                ) from None
            raise StoreError(f"SQLite failed while {doing}: {text}") from None
        except (sqlite3.IntegrityError, sqlite3.DataError) as exc:
            raise StoreDataError(f"SQLite refused the data while {doing}: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite failed while {doing}: {exc}") from None
        except (OverflowError, UnicodeEncodeError) as exc:
            # The driver cannot bind the value (an integer over 64 bits, a lone surrogate).
            raise StoreDataError(f"SQLite refused the data while {doing}: {exc}") from None

    def _value(self, value: Any) -> Any:
        # Times as UTC ISO-8601 text, which sorts in time order.
        if isinstance(value, datetime):
            stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
            return stamp.astimezone(UTC).isoformat()
        return value

    # -- schema ------------------------------------------------------------------------------

    async def check_schema(self) -> None:
        """Raise SchemaMissing unless every table a sync touches exists."""
        for table in SQL_TABLES:
            await self._fetch(
                "checking the schema",
                f"SELECT 1 FROM {table} LIMIT 0",  # noqa: S608 (fixed names)
            )

    async def migrate(self) -> list[str]:
        """Apply the packaged SQLite migrations that are missing; return their names."""
        applied: list[str] = []
        async with self._use("applying migrations") as session:
            await session.execute(MIGRATIONS_TABLE["sqlite"])
            done = {r[0] for r in await session.fetch("SELECT name FROM sentinel_migrations")}
        for name, sql in migrations("sqlite"):
            if name in done:
                continue
            async with self._use(f"applying {name}", transaction=True) as session:
                for statement in statements(sql):
                    await session.execute(statement)
                await session.execute("INSERT INTO sentinel_migrations (name) VALUES (?)", [name])
            applied.append(name)
        return applied

    def _columns_query(self) -> str:
        return "SELECT name, type FROM pragma_table_info(?) ORDER BY cid"

    async def column_types(self) -> dict[str, dict[str, str]]:
        """Return ``{table: {column: declared type}}`` of ``user_keys`` and ``user_data``."""
        found: dict[str, dict[str, str]] = {}
        for table in ("user_keys", "user_data"):
            rows = await self._fetch(
                "reading column types",
                "SELECT name, type FROM pragma_table_info(?) ORDER BY cid",
                [table],
            )
            if rows:
                found[table] = {str(name): str(kind) for name, kind in rows}
        return found

    # -- writes ------------------------------------------------------------------------------

    async def _insert_keys(
        self, session: Session, keys: Sequence[UserKey], *, with_ids: bool
    ) -> list[str]:
        if with_ids:
            await session.executemany(
                "INSERT INTO user_keys (id, user_id, api_key, created_at) VALUES (?, ?, ?, ?)",
                [self._key_values(k) for k in keys],
            )
            return [k.id for k in keys]
        ids: list[str] = []
        for key in keys:  # an INTEGER PRIMARY KEY: SQLite assigns the id
            rows = await session.fetch(
                "INSERT INTO user_keys (user_id, api_key, created_at) VALUES (?, ?, ?) "
                "RETURNING id",
                self._key_values(key)[1:],
            )
            ids.append(str(rows[0][0]))
        return ids

    async def _check_fence(self, session: Session, fence: Fence | None) -> None:
        """Raise StaleFence unless ``fence`` is still the lease's token (inside the
        transaction, which ``BEGIN IMMEDIATE`` makes exclusive)."""
        if fence is None:
            return
        found = await session.fetch(
            "SELECT fence FROM sentinel_leases WHERE name = ?", [fence.lease]
        )
        if not found or found[0][0] != fence.token:
            raise self._stale(fence)

    async def _upsert_chunk(
        self, session: Session, rows: Sequence[UserDataRow], fence: Fence | None
    ) -> None:
        await self._check_fence(session, fence)
        await session.executemany(
            _UPSERT,
            [(r.user_id, r.name, r.player_id, self._value(r.updated_at)) for r in rows],
        )

    async def _upsert_rows_chunk(
        self,
        session: Session,
        table: str,
        key: tuple[str, ...],
        rows: Sequence[Mapping[str, Any]],
        fence: Fence | None,
    ) -> None:
        await self._check_fence(session, fence)
        if not rows:
            return
        columns = list(rows[0])
        updates = [c for c in columns if c not in key]
        action = (
            "DO UPDATE SET " + ", ".join(f"{quoted(c)} = excluded.{quoted(c)}" for c in updates)
            if updates
            else "DO NOTHING"
        )
        # Every name went through quoted(): validated identifiers, never data.
        sql = (
            f"INSERT INTO {writable_table(table)} ({', '.join(quoted(c) for c in columns)}) "  # noqa: S608
            f"VALUES ({', '.join('?' for _ in columns)}) "
            f"ON CONFLICT ({', '.join(quoted(k) for k in key)}) {action}"
        )
        await session.executemany(sql, [[self._cell(row[c]) for c in columns] for row in rows])

    async def _replace_unit_rows(
        self,
        session: Session,
        table: str,
        key: tuple[str, ...],
        unit_column: str,
        unit: str,
        rows: Sequence[Mapping[str, Any]],
        fence: Fence | None,
    ) -> None:
        if any(str(row.get(unit_column)) != unit for row in rows):
            raise StoreDataError(f"replacing {table}: a row is not of {unit_column} {unit}")
        await self._upsert_rows_chunk(session, table, key, rows, fence)
        if not rows:
            return
        columns = ", ".join(quoted(k) for k in key)
        values = ", ".join(f"({', '.join('?' for _ in key)})" for _ in rows)
        # Names validated and quoted; values are parameters. Row values: SQLite 3.15+.
        await session.execute(
            f"DELETE FROM {writable_table(table)} WHERE CAST({quoted(unit_column)} AS TEXT) = ? "  # noqa: S608
            f"AND ({columns}) NOT IN (VALUES {values})",
            [unit, *(self._cell(row[k]) for row in rows for k in key)],
        )

    def _cell(self, value: Any) -> Any:
        """A value of a declared column as SQLite stores it: JSON as text, times as text."""
        if isinstance(value, dict | list):
            return dumps(value, indent=None)
        return self._value(value)

    async def _save_key_info_chunk(
        self, session: Session, infos: Sequence[KeyInfo], fence: Fence | None
    ) -> None:
        await self._check_fence(session, fence)
        updates = ", ".join(f"{c} = excluded.{c}" for c in KEY_INFO_COLUMNS if c != "key_id")
        await session.executemany(
            f"INSERT INTO sentinel_key_info ({', '.join(KEY_INFO_COLUMNS)}) "  # noqa: S608
            f"VALUES ({', '.join('?' for _ in KEY_INFO_COLUMNS)}) "
            f"ON CONFLICT (key_id) DO UPDATE SET {updates}",
            [self._values(key_info_row(i), KEY_INFO_COLUMNS) for i in infos],
        )

    async def _record_unit_attempts_chunk(
        self,
        session: Session,
        sync: str,
        unit_ids: Sequence[str],
        at: datetime,
        fence: Fence | None,
    ) -> None:
        await self._check_fence(session, fence)
        stamp = self._value(at)
        await session.executemany(
            "INSERT INTO sentinel_unit_attempts (sync, unit_id, attempted_at) VALUES (?, ?, ?) "
            "ON CONFLICT (sync, unit_id) DO UPDATE SET attempted_at = excluded.attempted_at",
            [(sync, unit_id, stamp) for unit_id in unit_ids],
        )

    async def _record_attempts_chunk(
        self,
        session: Session,
        user_ids: Sequence[str],
        at: datetime,
        job: str | None,
        fence: Fence | None,
    ) -> None:
        await self._check_fence(session, fence)
        stamp = self._value(at)
        await session.executemany(_RECORD_ATTEMPT, [(user_id, stamp, job) for user_id in user_ids])

    # -- leases ------------------------------------------------------------------------------

    async def claim_lease(self, name: str, holder: str, ttl: float) -> Fence | None:
        """Take lease ``name`` for ``ttl`` seconds; None while another holder's is unexpired."""
        now = time.time()
        async with self._use("claiming a lease", transaction=True) as session:
            await session.execute("INSERT OR IGNORE INTO sentinel_leases (name) VALUES (?)", [name])
            rows = await session.fetch(
                "UPDATE sentinel_leases SET holder = ?, fence = fence + 1, expires_at = ? "
                "WHERE name = ? AND (holder IS NULL OR holder = ? OR expires_at <= ?) "
                "RETURNING fence",
                [holder, now + ttl, name, holder, now],
            )
        return Fence(name, int(rows[0][0])) if rows else None

    async def renew_lease(self, fence: Fence, holder: str, ttl: float) -> bool:
        """Extend a lease still held under ``fence``; False when it was lost."""
        changed = await self._execute(
            "renewing a lease",
            "UPDATE sentinel_leases SET expires_at = ? WHERE name = ? AND holder = ? AND fence = ?",
            [time.time() + ttl, fence.lease, holder, fence.token],
        )
        return changed > 0

    async def release_lease(self, fence: Fence, holder: str) -> bool:
        """Give a lease up; False when it was no longer ours."""
        changed = await self._execute(
            "releasing a lease",
            "UPDATE sentinel_leases SET holder = NULL, expires_at = NULL "
            "WHERE name = ? AND holder = ? AND fence = ?",
            [fence.lease, holder, fence.token],
        )
        return changed > 0
