"""One SQL store for SQLite and PostgreSQL: paging, mapping and transactions written once.

What differs between the two lives in small overrides of :class:`SQLStore`: how a
connection is opened and statements are run (:class:`Session`), which driver errors mean
what, how times are stored, the bulk upsert of ``user_data`` (``executemany`` vs one
statement over a JSON array), the fenced write and the lease operations (plain SQL vs the
``sentinel_*`` functions). Statements here use ``?`` placeholders; the PostgreSQL session
turns those outside literals and comments into ``%s`` (``_paramstyle.py``), so a ``?`` or
``%`` in a literal, and the ``%`` operator, mean what they say.

Every statement and transaction holds the store's lock, so concurrent tasks of a run
(the producer reading pages, the writer upserting) never interleave inside a transaction.

Connections drop: a NAT or a cloud load balancer closes a TCP connection idle for 4-6
minutes, a server restarts. Every call goes through :meth:`SQLStore._run`, which reconnects
when the dialect says the connection is gone (:class:`ConnectionLost`) and runs idempotent
work again on the fresh connection; work that must not run twice is preceded by a cheap
check of the connection instead (see :meth:`SQLStore._run`). Opening a store that is open
already gives the caller a copy with its own connection (:mod:`._reentry`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from loguru import logger

from .._declared import add_column_sql, create_table_sql
from .._errors import ConnectionLost, StaleFence, StoreError
from .._key_health import KeyAccess, KeyHealth, KeyRecord, ciphertext_fingerprint
from .._models import JobState, LeaseInfo, RunRecord, StoredUser, UserDataRow, UserKey
from .._security import SecurityFacts, integer_column
from ._chunks import ChunkedWrites, chunks
from ._paging import Cursor, KeyQuery, KeysetPaging
from ._protocols import (
    DEFAULT_CHUNK_SIZE,
    AttemptStats,
    CiphertextChange,
    Fence,
    abandon_note,
)
from ._reentry import Reentrant
from ._rows import (
    HEALTH_COLUMNS,
    JOB_COLUMNS,
    KEY_COLUMNS,
    RECORD_COLUMNS,
    RUN_COLUMNS,
    USER_COLUMNS,
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
    user_key,
    user_key_row,
    writable_table,
)

if TYPE_CHECKING:
    from .._report import SyncReport

__all__ = ["DEFAULT_READ_AHEAD", "RECONNECT_WAITS", "SQL_TABLES", "SQLStore", "Session"]

T = TypeVar("T")

#: Every table a sync touches; a missing one means `migrate` was not run.
SQL_TABLES = (
    "user_keys",
    "user_data",
    "sentinel_runs",
    "sentinel_key_health",
    "sentinel_leases",
    "sentinel_user_attempts",
    "sentinel_key_record",
    "sentinel_key_parks",
)

Row = tuple[Any, ...]

#: Keys one query of ``iter_key_pages`` reads (the pages are cut from them): each query
#: joins and sorts the whole table, so fewer, larger queries make a pass of 100,000 keys
#: 10 scans instead of 100. About 2 MB of rows in memory.
DEFAULT_READ_AHEAD = 10_000

#: Seconds before each fresh connection a call gets after its connection dropped: a path
#: that dropped an idle connection lets a new one through at once; a restarting server
#: takes a moment. Two reconnects, then the call fails with ConnectionLost.
RECONNECT_WAITS = (0.0, 1.0)


class Session(Protocol):
    """Statements on an open connection, inside the store's lock."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query; return its rows."""
        ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per parameter row."""
        ...


def _columns(names: Sequence[str]) -> str:
    return ", ".join(names)


def _marks(count: int) -> str:
    return ", ".join("?" * count)


class SQLStore(KeysetPaging[Row], ChunkedWrites, Reentrant):
    """A :class:`~sentinel_kit.Store` on a SQL database; see the module docstring. The
    paging (:mod:`._paging`) and chunk loops (:mod:`._chunks`) are the ones every store
    shares; this class supplies their primitives: one query, one transaction.

    Subclasses implement :meth:`_open`, :meth:`_close`, :meth:`_session`,
    :meth:`_driver_errors` (raising :class:`ConnectionLost` for a connection that is gone,
    when :attr:`_remote`), :meth:`check_schema`, :meth:`migrate`, :meth:`column_types`,
    the lease operations, :meth:`_upsert_chunk`, :meth:`_upsert_rows_chunk`,
    :meth:`_record_attempts_chunk`, :meth:`_record_unit_attempts_chunk` and
    :meth:`_insert_keys`; they may change :attr:`_never`, :attr:`_attempt_param` and
    :meth:`_as_text` (how the fair order's key sorts).
    """

    label: str
    chunk_size: int
    #: The dialect's name for the column-type rules of :mod:`sentinel_kit._security`.
    dialect: str
    #: A time that sorts before every attempt: where never-attempted users sort.
    _never: str = "''"
    #: A keyset parameter for the attempt column (None: a never-attempted user).
    _attempt_param: str = "COALESCE(?, '')"
    #: The connection crosses a network and can drop (PostgreSQL), so calls reconnect.
    _remote: bool = False
    _connection_state: tuple[str, ...] = ("_lock", "_integer_ids")
    #: Users per read of ``user_data``: SQLite allows 999 host parameters in older builds.
    _read_batch = 900

    def __init__(
        self, *, chunk_size: int = DEFAULT_CHUNK_SIZE, read_ahead: int = DEFAULT_READ_AHEAD
    ) -> None:
        self.chunk_size = chunk_size
        self.read_ahead = read_ahead
        self.write_calls = 0
        self._lock: asyncio.Lock | None = None
        self._integer_ids: bool | None = None
        #: The connection may be broken (it dropped, or a call was cancelled mid-statement):
        #: the next call reconnects first.
        self._suspect = False
        #: Fresh connections made after a drop since the store was created (for tests and logs).
        self.reconnects = 0
        self._init_reentry()

    # -- dialect hooks ----------------------------------------------------------------------

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    def _session(self, *, transaction: bool) -> AbstractAsyncContextManager[Session]:
        """A session on the open connection; with ``transaction``, one transaction."""
        raise NotImplementedError

    @contextmanager
    def _driver_errors(self, doing: str) -> Iterator[None]:
        """Turn the driver's errors into :class:`StoreError` and its subclasses."""
        raise NotImplementedError
        yield  # pragma: no cover

    def _value(self, value: Any) -> Any:
        """A Python value as this database stores it (times, booleans)."""
        return value

    async def _upsert_chunk(
        self, session: Session, rows: Sequence[UserDataRow], fence: Fence | None
    ) -> None:
        """Write one chunk of ``user_data`` rows (fenced: refused when the fence is stale)."""
        raise NotImplementedError

    async def _record_attempts_chunk(
        self,
        session: Session,
        user_ids: Sequence[str],
        at: datetime,
        job: str | None,
        fence: Fence | None,
    ) -> None:
        """Upsert one chunk of ``sentinel_user_attempts`` (fenced: refused when stale)."""
        raise NotImplementedError

    async def _insert_keys(
        self, session: Session, keys: Sequence[UserKey], *, with_ids: bool
    ) -> list[str]:
        """Insert ``user_keys`` rows, with their ids or letting the column's default make
        them; return the stored ids."""
        raise NotImplementedError

    async def column_types(self) -> dict[str, dict[str, str]]:
        """Return ``{table: {column: declared type}}`` of ``user_keys`` and ``user_data``."""
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------------

    def _is_open(self) -> bool:
        return self._lock is not None

    async def _enter(self) -> None:
        self._integer_ids = None
        self._suspect = False
        await self._open()
        self._lock = asyncio.Lock()
        self.write_calls = 0

    async def _exit(self, *exc_info: object) -> None:
        self._lock = None
        await self._close()

    @asynccontextmanager
    async def _use(self, doing: str, *, transaction: bool = False) -> AsyncIterator[Session]:
        """The lock, the driver's errors translated, and a session (or a transaction), with
        no reconnect: :meth:`_run` is the way in that survives a dropped connection."""
        if self._lock is None:
            raise StoreError(f"the store {self.label} is not open: use `async with store:`")
        async with self._lock:
            with self._driver_errors(doing):
                async with self._session(transaction=transaction) as session:
                    yield session

    async def _run(
        self,
        doing: str,
        work: Callable[[Session], Awaitable[T]],
        *,
        transaction: bool = False,
        idempotent: bool = True,
    ) -> T:
        """Run ``work`` on a session (one transaction with ``transaction``), under the lock,
        on a fresh connection again when the connection dropped.

        A dropped connection (:class:`ConnectionLost`) is replaced (after each pause of
        :data:`RECONNECT_WAITS`) and idempotent work runs again. Work that must not run
        twice (an insert that makes ids, a compare-and-set whose answer matters) is never
        sent again: a drop may have taken its commit along, unseen. Instead a cheap query
        checks the connection first (reconnecting when it dropped while idle, the usual
        case), and a drop during the work itself is raised.

        Raises:
            ConnectionLost: the connection dropped again after the last reconnect, or
                during work that is not idempotent.
            StoreError: the database refused the work, or the store is not open.
        """
        if self._lock is None:
            raise StoreError(f"the store {self.label} is not open: use `async with store:`")
        async with self._lock:
            for wait in (*RECONNECT_WAITS, None):
                sent = False
                try:
                    if self._suspect:
                        await self._reconnect(doing)
                    if self._remote and not idempotent:
                        await self._attempt("checking the connection", _ping, transaction=False)
                    sent = True
                    return await self._attempt(doing, work, transaction=transaction)
                except ConnectionLost as exc:
                    self._suspect = True
                    if wait is None or (sent and not idempotent):
                        raise
                    logger.bind(store=self.label, event="reconnect").warning(
                        "{}; reconnecting{}", exc, f" in {wait:g}s" if wait else ""
                    )
                    await asyncio.sleep(wait)
                except asyncio.CancelledError:
                    # Cut mid-statement, the connection's state is unknown (psycopg may be
                    # waiting for a result): the next call starts on a fresh one.
                    self._suspect = self._remote
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    async def _attempt(
        self, doing: str, work: Callable[[Session], Awaitable[T]], *, transaction: bool
    ) -> T:
        with self._driver_errors(doing):
            async with self._session(transaction=transaction) as session:
                return await work(session)

    async def _reconnect(self, doing: str) -> None:
        """Replace the connection with a fresh one.

        Raises:
            ConnectionLost: no new connection could be made.
        """
        # The old connection is gone; closing it can only fail in ways that do not matter.
        with contextlib.suppress(Exception):
            await self._close()
        try:
            await self._open()
        except StoreError as exc:
            raise ConnectionLost(f"{exc} (reconnecting while {doing})") from None
        self._suspect = False
        self.reconnects += 1

    async def _fetch(
        self, doing: str, sql: str, params: Sequence[Any] = (), *, idempotent: bool = True
    ) -> list[Row]:
        values = [self._value(p) for p in params]
        return await self._run(
            doing, lambda session: session.fetch(sql, values), idempotent=idempotent
        )

    async def _execute(
        self, doing: str, sql: str, params: Sequence[Any] = (), *, idempotent: bool = True
    ) -> int:
        values = [self._value(p) for p in params]
        return await self._run(
            doing,
            lambda session: session.execute(sql, values),
            transaction=True,
            idempotent=idempotent,
        )

    def _values(self, mapping: Mapping[str, Any], columns: Sequence[str]) -> list[Any]:
        return [self._value(mapping[c]) for c in columns]

    # -- keys --------------------------------------------------------------------------------

    async def count_keys(self) -> int:
        """Return how many rows ``user_keys`` holds."""
        rows = await self._fetch("counting keys", "SELECT count(*) FROM user_keys")
        return int(rows[0][0])

    async def _key_page(self, query: KeyQuery, after: Cursor | None, limit: int) -> list[Row]:
        """One query of the fair order (:mod:`._paging`): up to ``limit`` keys after
        ``after``; with ``query.sync``, by that sync's own attempts (``sentinel_unit_attempts``)."""
        user_text, id_text = self._as_text("k.user_id"), self._as_text("k.id")
        order = f"COALESCE(a.attempted_at, {self._never}), {user_text}, {id_text}"
        # A fixed choice of two joins; the sync's name is a parameter.
        join = (
            "LEFT JOIN sentinel_user_attempts a ON a.user_id = CAST(k.user_id AS TEXT)"
            if query.sync is None
            else "LEFT JOIN sentinel_unit_attempts a "
            "ON a.sync = ? AND a.unit_id = CAST(k.user_id AS TEXT)"
        )
        select = (
            "SELECT k.id, k.user_id, k.api_key, k.created_at, a.attempted_at, "  # noqa: S608
            f"CAST(k.user_id AS TEXT), CAST(k.id AS TEXT) FROM user_keys k {join}"
        )
        clauses: list[str] = []
        params: list[Any] = [] if query.sync is None else [query.sync]
        if query.attempted_before is not None:
            clauses.append("(a.attempted_at IS NULL OR a.attempted_at < ?)")
            params.append(query.attempted_before)
        if query.shard is not None:
            clauses.append(self._in_shard("CAST(k.user_id AS TEXT)", query.shard))
        if after is not None:
            marks = f"{self._attempt_param}, {self._as_text('?')}, {self._as_text('?')}"
            clauses.append(f"({order}) > ({marks})")
            params += after
        sql = select + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
        return await self._fetch(
            "reading user_keys", f"{sql} ORDER BY {order} LIMIT ?", [*params, limit]
        )

    def _key_of(self, row: Row) -> UserKey:
        return user_key(dict(zip(KEY_COLUMNS, row[:4], strict=True)))

    def _cursor_of(self, row: Row) -> Cursor:
        # The attempt, and the user id and key id as text: the order's own values.
        return (row[4], row[5], row[6])

    def _in_shard(self, user_text: str, shard: tuple[int, int]) -> str:
        """A condition: the user id (text) is in shard ``(i, n)`` (as :func:`shard_of`)."""
        index, count = int(shard[0]), int(shard[1])  # integers: safe as literals
        return f"sentinel_shard_of({user_text}, {count}) = {index}"

    def _as_text(self, expr: str) -> str:
        """``expr`` as text that sorts byte-wise, the same in every dialect."""
        return f"CAST({expr} AS TEXT)"

    async def _write_attempts(
        self,
        user_ids: Sequence[str],
        *,
        at: datetime,
        job: str | None,
        fence: Fence | None,
        sync: str | None,
    ) -> None:
        """One transaction of attempts (:class:`._chunks.ChunkedWrites`)."""
        work = (
            partial(self._record_attempts_chunk, user_ids=user_ids, at=at, job=job, fence=fence)
            if sync is None
            else partial(
                self._record_unit_attempts_chunk, sync=sync, unit_ids=user_ids, at=at, fence=fence
            )
        )
        await self._run("recording attempts", work, transaction=True)

    async def _record_unit_attempts_chunk(
        self,
        session: Session,
        sync: str,
        unit_ids: Sequence[str],
        at: datetime,
        fence: Fence | None,
    ) -> None:
        """Upsert one chunk of ``sentinel_unit_attempts`` (fenced: refused when stale)."""
        raise NotImplementedError

    async def attempt_stats(
        self, *, since: datetime, shard: tuple[int, int] | None = None, sync: str | None = None
    ) -> AttemptStats:
        """Return the backlog of the users in ``user_keys`` (of ``shard`` when given): by
        sync-users' attempts, or with ``sync`` by that declared sync's own."""
        where = f"WHERE {self._in_shard('u.user_id', shard)}" if shard is not None else ""
        # The sync's name is a parameter; the table names are fixed text.
        attempts, params = (
            ("sentinel_user_attempts a ON a.user_id = u.user_id", [since])
            if sync is None
            else ("sentinel_unit_attempts a ON a.unit_id = u.user_id AND a.sync = ?", [since, sync])
        )
        rows = await self._fetch(
            "reading " + attempts.split()[0],
            "SELECT count(*), "  # noqa: S608 (fixed text)
            "COALESCE(SUM(CASE WHEN a.attempted_at IS NULL OR a.attempted_at < ? "
            "THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN a.attempted_at IS NULL THEN 1 ELSE 0 END), 0), "
            "MIN(a.attempted_at) "
            "FROM (SELECT DISTINCT CAST(user_id AS TEXT) AS user_id FROM user_keys) u "
            f"LEFT JOIN {attempts} {where}",
            params,
        )
        users, stale, never, oldest = rows[0]
        return AttemptStats(int(users), int(stale), int(never), parse_time(oldest))

    async def add_key(self, key: UserKey) -> str:
        """Insert one ``user_keys`` row; return its id (made by the database when
        ``user_keys.id`` is an integer column and ``key.id`` is not a number)."""
        generate = await self._integer_id_column() and not numeric_id(key.id)
        # Not idempotent: sent twice, a key whose id the database makes would be added twice.
        ids = await self._run(
            "adding a key",
            lambda session: self._insert_keys(session, [key], with_ids=not generate),
            transaction=True,
            idempotent=False,
        )
        return ids[0] if ids else key.id

    async def add_keys(self, keys: Sequence[UserKey]) -> int:
        """Insert many ``user_keys`` rows, one transaction per chunk."""
        integer_ids = await self._integer_id_column()
        for chunk in chunks(keys, self.chunk_size):
            # An app's bigint identity numbers the keys whose ids are not numbers.
            with_ids = [k for k in chunk if not integer_ids or numeric_id(k.id)]
            numbered = [k for k in chunk if integer_ids and not numeric_id(k.id)]

            async def insert(
                session: Session,
                with_ids: list[UserKey] = with_ids,
                numbered: list[UserKey] = numbered,
            ) -> None:
                if with_ids:
                    await self._insert_keys(session, with_ids, with_ids=True)
                if numbered:
                    await self._insert_keys(session, numbered, with_ids=False)

            # Not idempotent, as add_key.
            await self._run("adding keys", insert, transaction=True, idempotent=False)
        return len(keys)

    async def _integer_id_column(self) -> bool:
        """True when ``user_keys.id`` holds integers (read from the catalog once per open)."""
        if self._integer_ids is None:
            types = (await self.column_types()).get("user_keys", {})
            self._integer_ids = integer_column(types.get("id"), dialect=self.dialect)
        return self._integer_ids

    def _key_values(self, key: UserKey) -> list[Any]:
        values = user_key_row(key)
        if values["created_at"] is None:
            values["created_at"] = datetime.now(UTC)
        return self._values(values, KEY_COLUMNS)

    async def replace_ciphertexts(self, changes: Sequence[CiphertextChange]) -> int:
        """Swap re-encrypted ciphertexts in, compare-and-swap, in one transaction; a parked
        key's health row follows its new fingerprint. Return how many were replaced."""

        async def swap(session: Session) -> int:
            replaced = 0
            for change in changes:
                swapped = await session.execute(
                    "UPDATE user_keys SET api_key = ? WHERE id = ? AND api_key = ?",
                    [change.new, change.key_id, change.old],
                )
                if not swapped:
                    continue  # re-saved by the app meanwhile: its value stays
                replaced += 1
                await session.execute(
                    "UPDATE sentinel_key_health SET fingerprint = ? "
                    "WHERE key_id = ? AND fingerprint = ?",
                    [
                        ciphertext_fingerprint(change.new),
                        change.key_id,
                        ciphertext_fingerprint(change.old),
                    ],
                )
            return replaced

        # Not idempotent in its answer: sent again after an unseen commit, the swaps find
        # the new values in place and the count says 0.
        return await self._run("replacing ciphertexts", swap, transaction=True, idempotent=False)

    # -- inspection (doctor, migrate) --------------------------------------------------------

    async def applied_migrations(self) -> list[str]:
        """Return the names in ``sentinel_migrations``, in order."""
        rows = await self._fetch(
            "reading sentinel_migrations", "SELECT name FROM sentinel_migrations ORDER BY name"
        )
        return [str(r[0]) for r in rows]

    async def security_facts(self) -> SecurityFacts | None:
        """Who can reach our tables and functions; None where there are no roles."""
        return None

    # -- user data ---------------------------------------------------------------------------

    async def _write_user_data(self, rows: Sequence[UserDataRow], fence: Fence | None) -> None:
        """One transaction of ``user_data`` (:class:`._chunks.ChunkedWrites`)."""
        await self._run(
            "writing user_data",
            partial(self._upsert_chunk, rows=rows, fence=fence),
            transaction=True,
        )

    async def _write_rows(
        self,
        table: str,
        key: tuple[str, ...],
        rows: Sequence[Mapping[str, Any]],
        fence: Fence | None,
    ) -> None:
        """One transaction of a declared table (:class:`._chunks.ChunkedWrites`)."""
        await self._run(
            f"writing {table}",
            partial(self._upsert_rows_chunk, table=table, key=key, rows=rows, fence=fence),
            transaction=True,
        )

    async def _upsert_rows_chunk(
        self,
        session: Session,
        table: str,
        key: tuple[str, ...],
        rows: Sequence[Mapping[str, Any]],
        fence: Fence | None,
    ) -> None:
        """Write one chunk of a declared table (fenced: refused when the fence is stale)."""
        raise NotImplementedError

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
        columns = list(await self.table_columns(table))
        if not columns:
            return []
        order = ", ".join(quoted(c) for c in order_by)
        picked = ", ".join(quoted(c) for c in columns)
        params: list[Any] = []
        where = ""
        if users is not None:
            ids = list(dict.fromkeys(users))[:900]  # SQLite's host parameter limit
            where = (
                f' WHERE CAST("user_id" AS TEXT) IN ({_marks(len(ids))})' if ids else " WHERE 1 = 0"
            )
            params += ids
        rows = await self._fetch(
            f"reading {table}",
            # Names validated and quoted (quoted()); values are parameters.
            f"SELECT {picked} FROM {quoted(table)}{where} ORDER BY {order} LIMIT ?",  # noqa: S608
            [*params, limit],
        )
        return [dict(zip(columns, r, strict=True)) for r in rows]

    async def table_columns(self, table: str) -> dict[str, str]:
        """Return ``{column: declared type}`` of any table (empty when it does not exist)."""
        quoted(table)
        rows = await self._fetch("reading column types", self._columns_query(), [table])
        return {str(r[0]): str(r[1]) for r in rows}

    def _columns_query(self) -> str:
        """One parameter, the table name: rows of (column, type)."""
        raise NotImplementedError

    async def ensure_table(
        self, table: str, columns: Mapping[str, str], key: Sequence[str]
    ) -> list[str]:
        """Create a declared table (locked), or add the declared columns it lacks; never
        drop or retype one. Returns what was done, one line each.

        Raises:
            ConfigError: a name is not an identifier, or not a table a sync may write.
        """
        writable_table(table)
        for name in (*columns, *key):
            quoted(name)
        existing = await self.table_columns(table)
        done: list[str] = []
        statements: list[str] = []
        if not existing:
            statements.append(create_table_sql(self.dialect, table, columns, key))
            done.append(f"created table {table}")
        else:
            for column, kind in columns.items():
                if column not in existing:
                    statements.append(add_column_sql(self.dialect, table, column, kind))
                    done.append(f"added column {table}.{column} ({kind})")

        async def apply(session: Session) -> None:
            for statement in statements:
                await session.execute(statement)

        if statements:
            # Idempotent: IF NOT EXISTS, and columns read just before.
            await self._run(f"creating {table}", apply, transaction=True)
        if not existing:
            await self._lock_new_table(table)
        return done

    async def _lock_new_table(self, table: str) -> None:
        """Lock a table just created (row-level security, no API roles); SQLite has none."""

    async def _read_user_data(self, user_ids: Sequence[str]) -> Iterable[StoredUser]:
        """One query of ``user_data`` rows (:class:`._chunks.ChunkedWrites`)."""
        rows = await self._fetch(
            "reading user_data",
            # The ids compare in the column's own type (text, uuid, bigint), so the
            # primary key's index serves the lookup.
            f"SELECT {_columns(USER_COLUMNS)} FROM user_data "  # noqa: S608 (placeholders only)
            f"WHERE user_id IN ({_marks(len(user_ids))})",
            user_ids,
        )
        return [stored_user(dict(zip(USER_COLUMNS, r, strict=True))) for r in rows]

    async def list_user_data(self, *, limit: int = 100) -> list[StoredUser]:
        """Return up to ``limit`` rows of ``user_data`` ordered by user_id."""
        rows = await self._fetch(
            "reading user_data",
            f"SELECT {_columns(USER_COLUMNS)} FROM user_data ORDER BY user_id LIMIT ?",  # noqa: S608
            [limit],
        )
        return [stored_user(dict(zip(USER_COLUMNS, r, strict=True))) for r in rows]

    # -- runs --------------------------------------------------------------------------------

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
        """Insert or complete (by run_id) a run's row in ``sentinel_runs``."""
        row = run_row(report, scheduled_for=scheduled_for, holder=holder, fence=fence)
        kept = ("run_id", "job", "scheduled_for", "holder", "fence", "started_at")
        updates = ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS if c not in kept)
        await self._execute(
            "recording the run",
            f"INSERT INTO sentinel_runs ({_columns(RUN_COLUMNS)}) "  # noqa: S608 (fixed names)
            f"VALUES ({_marks(len(RUN_COLUMNS))}) ON CONFLICT (run_id) DO UPDATE SET {updates}",
            self._values(row, RUN_COLUMNS),
        )

    async def list_runs(self, *, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Return recent runs, newest first."""
        where, params = ("WHERE job = ?", [job, limit]) if job else ("", [limit])
        rows = await self._fetch(
            "reading sentinel_runs",
            f"SELECT {self._run_select()} FROM sentinel_runs {where} "  # noqa: S608 (fixed text)
            "ORDER BY started_at DESC LIMIT ?",
            params,
        )
        return [run_record(dict(zip(RUN_COLUMNS, r, strict=True))) for r in rows]

    def _run_select(self) -> str:
        return _columns(RUN_COLUMNS)

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

    # -- key health --------------------------------------------------------------------------

    async def load_key_health(self) -> dict[str, KeyHealth]:
        """Return every parked key's health row, by key id."""
        rows = await self._fetch(
            "reading sentinel_key_health",
            f"SELECT {_columns(HEALTH_COLUMNS)} FROM sentinel_key_health "  # noqa: S608
            "ORDER BY user_id, key_id",
        )
        found = [key_health(dict(zip(HEALTH_COLUMNS, r, strict=True))) for r in rows]
        return {h.key_id: h for h in found}

    async def save_key_health(self, park: Sequence[KeyHealth], clear: Sequence[str]) -> None:
        """Upsert ``park`` rows and delete the ``clear`` rows in one transaction."""
        if not park and not clear:
            return
        updates = ", ".join(f"{c} = excluded.{c}" for c in HEALTH_COLUMNS if c != "key_id")
        # The parks of a key cleared or parked again without a run are forgotten with it.
        gone = [*clear, *(h.key_id for h in park if h.run_id is None)]

        async def save(session: Session) -> None:
            if clear:
                await session.executemany(
                    "DELETE FROM sentinel_key_health WHERE key_id = ?", [(k,) for k in clear]
                )
            if gone:
                await session.executemany(
                    "DELETE FROM sentinel_key_parks WHERE key_id = ?", [(k,) for k in gone]
                )
            if park:
                await session.executemany(
                    f"INSERT INTO sentinel_key_health ({_columns(HEALTH_COLUMNS)}) "  # noqa: S608
                    f"VALUES ({_marks(len(HEALTH_COLUMNS))}) "
                    f"ON CONFLICT (key_id) DO UPDATE SET {updates}",
                    [self._values(health_row(h), HEALTH_COLUMNS) for h in park],
                )
            parks = [h for h in park if h.run_id is not None]
            if parks:
                await session.executemany(
                    "INSERT INTO sentinel_key_parks (key_id, fingerprint, run_id, parked_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (key_id) DO UPDATE SET "
                    "fingerprint = excluded.fingerprint, run_id = excluded.run_id, "
                    "parked_at = excluded.parked_at",
                    [[h.key_id, h.fingerprint, h.run_id, self._value(h.since)] for h in parks],
                )

        # Idempotent: the same deletes and upserts again.
        await self._run("writing sentinel_key_health", save, transaction=True)

    async def reset_key_health(self, key_id: str) -> bool:
        """Un-park one key; return False when it was not parked."""
        # Not idempotent in its answer: sent again, the delete finds nothing and says so.
        changed = await self._execute(
            "resetting key health",
            "DELETE FROM sentinel_key_health WHERE key_id = ?",
            [key_id],
            idempotent=False,
        )
        return changed > 0

    async def unpark_keys(
        self,
        *,
        run_id: str | None = None,
        code: int | None = None,
        since: datetime | None = None,
    ) -> int:
        """Un-park the keys a run parked, or by code and time (see ``KeyHealthStore``);
        the statements of ``sentinel_unpark_keys`` (migration 012), in one transaction."""
        where: list[str] = []
        params: list[Any] = []
        if run_id is not None:
            where.append(
                "key_id IN (SELECT p.key_id FROM sentinel_key_parks p WHERE p.run_id = ? "
                "AND p.fingerprint = sentinel_key_health.fingerprint)"
            )
            params.append(run_id)
        if code is not None:
            where.append("last_code = ?")
            params.append(code)
        if since is not None:
            where.append("since >= ?")
            params.append(self._value(since))
        if not where:
            raise StoreError("say which keys to un-park: a run, a code or a time")
        sql = f"SELECT key_id FROM sentinel_key_health WHERE {' AND '.join(where)}"  # noqa: S608

        async def unpark(session: Session) -> int:
            rows = await session.fetch(sql, params)
            ids = [(str(r[0]),) for r in rows]
            if ids:
                for table in ("sentinel_key_health", "sentinel_key_parks"):
                    await session.executemany(
                        f"DELETE FROM {table} WHERE key_id = ?",  # noqa: S608 (fixed names)
                        ids,
                    )
                await session.executemany(
                    "UPDATE sentinel_key_record SET strikes = 0, first_strike_at = NULL, "
                    "last_strike_at = NULL WHERE key_id = ?",
                    ids,
                )
            return len(ids)

        # Not idempotent in its answer (sent again, it finds nothing to un-park): a dropped
        # connection is checked before, never retried after.
        return await self._run("un-parking keys", unpark, transaction=True, idempotent=False)

    async def load_key_access(self, sync: str) -> dict[str, str]:
        """Return the keys marked for ``sync`` (no access), by key id: their fingerprint."""
        if not await self.table_columns("sentinel_key_access"):
            return {}  # migration 013 not applied yet: no key was ever marked
        rows = await self._fetch(
            "reading sentinel_key_access",
            "SELECT key_id, fingerprint FROM sentinel_key_access WHERE sync = ?",
            [sync],
        )
        return {str(r[0]): str(r[1]) for r in rows}

    async def save_key_access(self, sync: str, marks: Sequence[KeyAccess]) -> None:
        """Mark keys for ``sync`` (upserted on key id and sync)."""
        if not marks:
            return
        rows = [[m.key_id, sync, m.fingerprint, m.code, self._value(m.since)] for m in marks]

        async def save(session: Session) -> None:
            await session.executemany(
                "INSERT INTO sentinel_key_access (key_id, sync, fingerprint, code, since) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id, sync) DO UPDATE SET "
                "fingerprint = excluded.fingerprint, code = excluded.code, since = excluded.since",
                rows,
            )

        # Idempotent: the same marks again.
        await self._run("writing sentinel_key_access", save, transaction=True)

    async def load_key_records(self) -> dict[str, KeyRecord]:
        """Return every ``sentinel_key_record`` row, by key id."""
        rows = await self._fetch(
            "reading sentinel_key_record",
            f"SELECT {_columns(RECORD_COLUMNS)} FROM sentinel_key_record",  # noqa: S608
        )
        found = [key_record(dict(zip(RECORD_COLUMNS, r, strict=True))) for r in rows]
        return {r.key_id: r for r in found}

    async def _write_key_records(self, records: Sequence[KeyRecord]) -> None:
        """One statement of ``sentinel_key_record`` rows (:class:`._chunks.ChunkedWrites`)."""
        updates = ", ".join(f"{c} = excluded.{c}" for c in RECORD_COLUMNS if c != "key_id")
        rows = [self._values(record_row(r), RECORD_COLUMNS) for r in records]

        async def save(session: Session) -> None:
            await session.executemany(
                f"INSERT INTO sentinel_key_record ({_columns(RECORD_COLUMNS)}) "  # noqa: S608
                f"VALUES ({_marks(len(RECORD_COLUMNS))}) "
                f"ON CONFLICT (key_id) DO UPDATE SET {updates}",
                rows,
            )

        # Idempotent: whole rows, upserted.
        await self._run("writing sentinel_key_record", save, transaction=True)

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


async def _ping(session: Session) -> None:
    """The cheapest round trip: does the connection still work?"""
    await session.fetch("SELECT 1")
