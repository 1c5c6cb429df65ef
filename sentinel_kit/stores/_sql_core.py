"""The core of the SQL store: sessions, the lock, reconnects and the dialect hooks.

See :mod:`._sql` for how the parts compose into :class:`~._sql.SQLStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from loguru import logger

from .._errors import ConnectionLost, StoreError
from .._models import UserDataRow, UserKey
from ._chunks import ChunkedWrites
from ._paging import KeysetPaging
from ._protocols import DEFAULT_CHUNK_SIZE, Fence
from ._reentry import Reentrant
from ._rows import quoted

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


class SQLCore(KeysetPaging[Row], ChunkedWrites, Reentrant):
    """The session core of :class:`~._sql.SQLStore`: its state, the dialect hooks, the
    lifecycle, and :meth:`_run` (the lock, the driver's errors, reconnects), with the
    catalog read every part uses. The other parts are mixins on this class."""

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

    # -- catalog ---------------------------------------------------------------------------

    async def table_columns(self, table: str) -> dict[str, str]:
        """Return ``{column: declared type}`` of any table (empty when it does not exist)."""
        quoted(table)
        rows = await self._fetch("reading column types", self._columns_query(), [table])
        return {str(r[0]): str(r[1]) for r in rows}

    def _columns_query(self) -> str:
        """One parameter, the table name: rows of (column, type)."""
        raise NotImplementedError


async def _ping(session: Session) -> None:
    """The cheapest round trip: does the connection still work?"""
    await session.fetch("SELECT 1")
