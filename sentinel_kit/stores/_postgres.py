"""The PostgreSQL backend, on psycopg 3 (the ``postgres`` extra).

Also the way to reach a Supabase database directly (its connection string), through
Supabase's connection pooler too. One connection is opened per store, in ``async with``;
keys are read with keyset paging on (user_id, id); ``user_data`` and ``user_keys`` are
written with one statement per chunk over a JSON array, which ``jsonb_populate_recordset``
casts to the table's own column types (``user_id`` text, varchar, uuid or bigint; times
timestamp or timestamptz); fenced writes, leases, key rotation and the security report go
through the ``sentinel_*`` SQL functions.

Nothing depends on the session: no startup options (a pooler refuses or drops them), no
session settings, and times cross as UTC ISO-8601 text or as timestamptz, so the server's
TimeZone never shifts a stored time. Behind a transaction pooler (Supavisor or PgBouncer in
transaction mode, port 6543) psycopg's server-side prepared statements are off: the next
transaction may run on another server connection, where the statement does not exist.

A connection that drops (an idle one closed by a NAT or a cloud load balancer, a server
restart) is replaced by the SQL base (``SQLStore._run``); TCP keepalives every 30 s keep
most such paths from dropping an idle connection in the first place, and
``tcp_user_timeout`` ends a connection whose peer vanished in 30 s, not the kernel's 15
minutes. Parameters of the same names in the URL win.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from .._errors import (
    ConfigError,
    ConnectionLost,
    SchemaMissing,
    StaleFence,
    StoreDataError,
    StoreError,
)
from .._json import dumps
from .._models import KeyInfo, UserDataRow, UserKey
from .._secrets import Secret, SecretURL
from .._security import SEED_TABLES, SecurityFacts, lock_script, lock_statements, open_tables
from .._shard import shard_sql
from ._chunks import fence_values
from ._migrations import MIGRATIONS_TABLE, migrations
from ._paramstyle import to_pyformat
from ._protocols import DEFAULT_CHUNK_SIZE, CiphertextChange, Fence
from ._rows import (
    KEY_COLUMNS,
    ciphertext_change_row,
    iso,
    key_info_row,
    user_data_row,
    user_key_row,
)
from ._sql import SQL_TABLES, Row, Session, SQLStore

if TYPE_CHECKING:
    import psycopg

__all__ = ["POOLER_PARAMETER", "PoolerMode", "PostgresStore", "pooler_mode"]

#: Serialises concurrent `migrate` runs against one database.
_MIGRATE_LOCK = 0x53454E54  # "SENT"

_UPSERT = """
INSERT INTO user_data (user_id, name, player_id, updated_at)
SELECT user_id, name, player_id, updated_at
  FROM jsonb_populate_recordset(NULL::user_data, ?::jsonb)
ON CONFLICT (user_id) DO UPDATE
   SET name = EXCLUDED.name, player_id = EXCLUDED.player_id, updated_at = EXCLUDED.updated_at
"""


def _json_cell(value: Any) -> Any:
    """A value of a declared column as JSON: times as ISO-8601 text, the rest as it is."""
    return iso(value) if isinstance(value, datetime) else value


#: libpq's TCP settings unless the URL sets them: a keepalive after 30 s idle (paths that
#: drop idle connections after 4-6 minutes see traffic), and a peer that stops answering
#: (unacknowledged data or keepalives) ends the connection after 30 s instead of the
#: kernel's ~15 minutes of retransmissions. Ignored on Unix sockets.
_TCP_SETTINGS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
#: SQLSTATEs of a server ending the session (admin shutdown, crash, restart).
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03"})


#: The URL query parameter that says whether a transaction pooler sits in between:
#: ``transaction`` (prepared statements off) or ``session`` (none, or a session pooler).
POOLER_PARAMETER = "sentinel_pooler"
#: Supabase's transaction-mode port, for Supavisor and its dedicated PgBouncer alike
#: (supabase.com/docs/guides/database/connecting-to-postgres).
TRANSACTION_POOLER_PORT = 6543


@dataclass(frozen=True, slots=True)
class PoolerMode:
    """How a ``postgresql://`` URL reaches the server.

    Attributes:
        url: the URL to hand to libpq (our own query parameter removed).
        transaction: a transaction pooler is in between: no server-side prepared
            statements, no session state.
        reason: why we think so, for ``doctor``.
        forced: the URL said so with ``?sentinel_pooler=...``.
    """

    url: SecretURL
    transaction: bool
    reason: str
    forced: bool = False


def pooler_mode(url: str) -> PoolerMode:
    """Decide whether ``url`` goes through a transaction pooler.

    Port 6543 is Supabase's transaction-mode pooler (Supavisor, or the dedicated
    PgBouncer); any other port is a direct connection or a session-mode pooler, where
    prepared statements work. ``?sentinel_pooler=transaction`` (or ``session``) says so
    explicitly, e.g. for your own PgBouncer; the parameter is removed before connecting.

    Raises:
        ConfigError: ``sentinel_pooler`` has another value.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = [v for k, v in query if k == POOLER_PARAMETER]
    # libpq decodes %XX but not '+': re-encode spaces as %20 (e.g. in options=-c ...).
    rest = urlencode([(k, v) for k, v in query if k != POOLER_PARAMETER], quote_via=quote)
    plain = parts._replace(query=rest).geturl() if ours else url
    if ours:
        value = ours[-1].strip().lower()
        if value not in ("transaction", "session"):
            raise ConfigError(
                f"{POOLER_PARAMETER}={ours[-1]!r} in the database URL: write "
                f"{POOLER_PARAMETER}=transaction (a transaction pooler such as PgBouncer or "
                f"Supavisor on port 6543) or {POOLER_PARAMETER}=session"
            )
        return PoolerMode(
            SecretURL(plain), value == "transaction", f"{POOLER_PARAMETER}={value}", True
        )
    try:
        port = parts.port or int(dict(query).get("port") or 5432)
    except ValueError:
        port = 5432  # a malformed port: libpq says what is wrong when connecting
    if port == TRANSACTION_POOLER_PORT:
        return PoolerMode(SecretURL(plain), True, f"port {TRANSACTION_POOLER_PORT}")
    return PoolerMode(SecretURL(plain), False, f"port {port}")


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
    """Statements on the psycopg connection; ``?`` placeholders become ``%s`` outside
    literals and comments, and every ``%`` is escaped (see ``_paramstyle.py``)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = await self._conn.execute(to_pyformat(sql), params)
        return list(await cursor.fetchall())

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = await self._conn.execute(to_pyformat(sql), params)
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self._conn.cursor() as cursor:
            await cursor.executemany(to_pyformat(sql), rows)


class PostgresStore(SQLStore):
    """A :class:`~sentinel_kit.Store` on PostgreSQL.

    ``postgresql://...:6543/...`` (Supabase's transaction pooler) or a URL with
    ``?sentinel_pooler=transaction`` connects without server-side prepared statements.

    >>> store = PostgresStore("postgresql://user@host/db")
    >>> async with store:                       # doctest: +SKIP
    ...     await store.count_keys()

    Args:
        url: a ``postgresql://`` connection URL (a password in it is never logged).
        chunk_size: rows per upsert statement.
        connect_timeout: seconds to wait for the server.

    Raises:
        ConfigError: the URL's ``sentinel_pooler`` parameter is not understood.
    """

    dialect = "postgres"
    _remote = True
    _connection_state = ("_lock", "_integer_ids", "_conn")

    def __init__(
        self,
        url: str | Secret,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(chunk_size=chunk_size)
        #: The URL; it prints with its password masked (``.reveal()`` gives it plain).
        self.url = SecretURL(url)
        self.pooler = pooler_mode(self.url.reveal())
        self.connect_timeout = connect_timeout
        self.label = self.url.masked
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self.label!r})"

    async def _open(self) -> None:
        psycopg = _import_psycopg()
        try:
            given = psycopg.conninfo.conninfo_to_dict(self.pooler.url)
        except psycopg.Error:
            given = {}  # malformed: connect() below says what is wrong
        tcp = {k: v for k, v in _TCP_SETTINGS.items() if k not in given}
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self.pooler.url.reveal(),
                autocommit=True,
                connect_timeout=max(1, int(self.connect_timeout)),
                # None: never prepare (psycopg prepares a statement run 5 times by default).
                prepare_threshold=None if self.pooler.transaction else 5,
                **tcp,
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
            if self._dropped(exc, state):
                raise ConnectionLost(
                    f"the connection to PostgreSQL at {self.label} dropped while {doing}: {text}"
                ) from None
            if state[:2] in ("22", "23"):  # data exception, integrity constraint
                raise StoreDataError(f"PostgreSQL refused the data while {doing}: {text}") from None
            raise StoreError(f"PostgreSQL failed while {doing}: {text}") from None

    def _dropped(self, exc: Exception, state: str) -> bool:
        """True when ``exc`` means the connection is gone (not that a statement failed)."""
        psycopg = _import_psycopg()
        if not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return False
        conn = self._conn
        gone = conn is None or conn.closed or conn.broken
        return bool(gone or state.startswith("08") or state in _SESSION_ENDED)

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

        async def apply(session: Session) -> list[str]:
            applied: list[str] = []
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

        # Idempotent: one transaction that skips what sentinel_migrations lists.
        return await self._run("applying migrations", apply, transaction=True)

    async def _script(self, sql: str) -> None:
        # Our own files, no parameters: sent as one simple-protocol script.
        if self._conn is None:
            raise StoreError("the PostgreSQL store is not open: use `async with store:`")
        await self._conn.execute(sql.encode())

    # -- reads in the table's own types ------------------------------------------------------

    # The fair order: never-attempted users before every time, ids compared byte-wise
    # (COLLATE "C"), the same order as sentinel_key_page (migration 011) and SQLite's.
    _never = "'-infinity'::timestamptz"
    _attempt_param = "COALESCE(CAST(? AS timestamptz), '-infinity'::timestamptz)"

    def _as_text(self, expr: str) -> str:
        return f'CAST({expr} AS TEXT) COLLATE "C"'

    def _in_shard(self, user_text: str, shard: tuple[int, int]) -> str:
        # sentinel_shard_of's expression, written out (see _shard.py: a SQL function with a
        # pinned search_path is never inlined). Integers: safe as literals.
        index, count = int(shard[0]), int(shard[1])
        return f"{shard_sql(user_text, str(count))} = {index}"

    def _columns_query(self) -> str:
        return (
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod) "
            "FROM pg_catalog.pg_attribute a WHERE a.attrelid = to_regclass(?) "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
        )

    async def _lock_new_table(self, table: str) -> None:
        # The same static script `migrate --print` gives: roles that do not exist skipped.
        script = lock_script([table])
        await self._run("locking " + table, lambda _session: self._script(script))

    async def column_types(self) -> dict[str, dict[str, str]]:
        """Return ``{table: {column: type}}`` of ``user_keys`` and ``user_data``, from the
        catalog (no migration needed)."""
        rows = await self._fetch(
            "reading column types",
            "SELECT c.relname::text, a.attname::text, "
            "pg_catalog.format_type(a.atttypid, a.atttypmod) "
            "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
            "WHERE c.oid = ANY(ARRAY[to_regclass('user_keys'), to_regclass('user_data')]) "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum",
        )
        found: dict[str, dict[str, str]] = {}
        for table, column, kind in rows:
            found.setdefault(table, {})[column] = kind
        return found

    async def security_facts(self) -> SecurityFacts:
        """Who can reach our tables and functions (``sentinel_security_report()``).

        Raises:
            SchemaMissing: migration 007 is not applied.
        """
        rows = await self._fetch("reading the security report", "SELECT sentinel_security_report()")
        return SecurityFacts.from_json(rows[0][0])

    async def lock_tables(self, tables: Sequence[str] = SEED_TABLES) -> list[str]:
        """Lock those of ``tables`` that are open to Supabase's Data API (row-level
        security on, no privileges for ``anon``/``authenticated``); return their names."""
        facts = await self.security_facts()
        targets = open_tables(facts, tables)

        async def lock(session: Session) -> None:
            for table in targets:
                for statement in lock_statements(
                    table.name, schema=facts.schema, roles=facts.api_roles
                ):
                    await session.execute(statement)

        # Idempotent: enabling row-level security and revoking again change nothing.
        await self._run("locking tables", lock, transaction=True)
        return [t.name for t in targets]

    # -- writes ------------------------------------------------------------------------------

    async def _upsert_chunk(
        self, session: Session, rows: Sequence[UserDataRow], fence: Fence | None
    ) -> None:
        payload = dumps(
            [{**user_data_row(r), "updated_at": iso(r.updated_at)} for r in rows], indent=None
        )
        if fence is None:
            await session.execute(_UPSERT, [payload])
        else:
            await session.execute(
                "SELECT sentinel_upsert_user_data(?, ?, ?::jsonb)",
                [fence.lease, fence.token, payload],
            )

    async def _upsert_rows_chunk(
        self,
        session: Session,
        table: str,
        key: tuple[str, ...],
        rows: Sequence[Mapping[str, Any]],
        fence: Fence | None,
    ) -> None:
        # The function of migration 013, which the Supabase store calls too: names quoted
        # with format('%I'), values read as the table's own column types, fenced.
        payload = dumps([{c: _json_cell(v) for c, v in row.items()} for row in rows], indent=None)
        await session.execute(
            "SELECT sentinel_upsert_rows(?, ?::text[], ?::jsonb, ?, ?)",
            [
                table,
                list(key),
                payload,
                *fence_values(fence),
            ],
        )

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
        # The function of migration 016, which the Supabase store calls too.
        payload = dumps([{c: _json_cell(v) for c, v in row.items()} for row in rows], indent=None)
        await session.execute(
            "SELECT sentinel_replace_rows(?, ?::text[], ?, ?, ?::jsonb, ?, ?)",
            [table, list(key), unit_column, unit, payload, *fence_values(fence)],
        )

    async def _save_key_info_chunk(
        self, session: Session, infos: Sequence[KeyInfo], fence: Fence | None
    ) -> None:
        # The function of migration 014, which the Supabase store calls too: one statement,
        # fenced in the same transaction.
        payload = dumps(
            [{c: _json_cell(v) for c, v in key_info_row(i).items()} for i in infos], indent=None
        )
        await session.execute(
            "SELECT sentinel_save_key_info(?::jsonb, ?, ?)", [payload, *fence_values(fence)]
        )

    async def _write_page_chunk(
        self,
        session: Session,
        table: str,
        key: tuple[str, ...],
        rows: Sequence[Mapping[str, Any]],
        sync: str,
        unit_id: str,
        cursor: int,
        fence: Fence | None,
    ) -> None:
        # The function of migration 015, which the Supabase store calls too: the rows
        # through sentinel_upsert_rows and the cursor, one transaction, fenced.
        payload = dumps([{c: _json_cell(v) for c, v in row.items()} for row in rows], indent=None)
        await session.execute(
            "SELECT sentinel_upsert_cursor_rows(?, ?::text[], ?::jsonb, ?, ?, ?, ?, ?)",
            [table, list(key), payload, sync, unit_id, cursor, *fence_values(fence)],
        )

    async def _prune_chunk(
        self,
        session: Session,
        table: str,
        column: str,
        before: int,
        limit: int,
        fence: Fence | None,
    ) -> int:
        # The function of migration 015, which the Supabase store calls too.
        rows = await session.fetch(
            "SELECT sentinel_prune_rows(?, ?, ?, ?, ?, ?)",
            [table, column, before, limit, *fence_values(fence)],
        )
        return int(rows[0][0]) if rows else 0

    async def _record_unit_attempts_chunk(
        self,
        session: Session,
        sync: str,
        unit_ids: Sequence[str],
        at: datetime,
        fence: Fence | None,
    ) -> None:
        # The function of migration 013, which the Supabase store calls too.
        await session.execute(
            "SELECT sentinel_record_unit_attempts(?, ?::text[], ?, ?, ?)",
            [
                sync,
                list(unit_ids),
                at,
                *fence_values(fence),
            ],
        )

    async def _record_attempts_chunk(
        self,
        session: Session,
        user_ids: Sequence[str],
        at: datetime,
        job: str | None,
        fence: Fence | None,
    ) -> None:
        # The function of migration 011, which the Supabase store calls too: one statement,
        # and under a fence the same lease check as sentinel_upsert_user_data.
        await session.execute(
            "SELECT sentinel_record_attempts(?::text[], ?, ?, ?, ?)",
            [
                list(user_ids),
                at,
                job,
                *fence_values(fence),
            ],
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
        # Not idempotent in its answer: see SQLStore.set_alert_state.
        rows = await self._fetch(
            "setting the alert state",
            "SELECT sentinel_set_alert_state(?, ?, ?)",
            [job, "healthy" if healthy else "unhealthy", as_of],
            idempotent=False,
        )
        return bool(rows and rows[0][0])

    async def _insert_keys(
        self, session: Session, keys: Sequence[UserKey], *, with_ids: bool
    ) -> list[str]:
        # One statement over a JSON array: the ids and times are cast to the table's own
        # types, and `created_at` crosses as UTC text, whatever the session's TimeZone.
        names = list(KEY_COLUMNS) if with_ids else [c for c in KEY_COLUMNS if c != "id"]
        columns = ", ".join(names)
        stamp = datetime.now(UTC)
        rows_json = [{**user_key_row(k), "created_at": iso(k.created_at or stamp)} for k in keys]
        # Only the columns inserted: jsonb_populate_recordset casts every key it is given.
        payload = dumps([{c: r[c] for c in names} for r in rows_json], indent=None)
        rows = await session.fetch(
            f"INSERT INTO user_keys ({columns}) SELECT {columns} "  # noqa: S608 (fixed names)
            "FROM jsonb_populate_recordset(NULL::user_keys, ?::jsonb) RETURNING id::text",
            [payload],
        )
        return [str(r[0]) for r in rows]

    async def replace_ciphertexts(self, changes: Sequence[CiphertextChange]) -> int:
        """Swap re-encrypted ciphertexts in, in one statement (``sentinel_replace_ciphertexts``,
        compare-and-swap, key health carried over); return how many were replaced."""
        if not changes:
            return 0
        payload = dumps([ciphertext_change_row(c) for c in changes], indent=None)
        # Not idempotent in its answer (compare-and-swap): see SQLStore.replace_ciphertexts.
        rows = await self._fetch(
            "replacing ciphertexts",
            "SELECT sentinel_replace_ciphertexts(?::jsonb)",
            [payload],
            idempotent=False,
        )
        return int(rows[0][0])

    # -- leases ------------------------------------------------------------------------------

    async def claim_lease(self, name: str, holder: str, ttl: float) -> Fence | None:
        """Take lease ``name`` for ``ttl`` seconds; None while another holder's is unexpired."""
        # Idempotent for one holder: sent again after an unseen answer, the holder claims
        # its own lease again and gets the next token.
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
