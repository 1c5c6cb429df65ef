"""The embedded default backend, on the standard library's ``sqlite3``.

SQLite calls are short and local, so they run on the event loop's thread directly; the
connection is opened in ``__aenter__`` (inside the run), never at construction, because a
``sqlite3`` connection refuses use from a thread other than its creator's.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from ..errors import SchemaMissing, StaleFence, StoreError
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

__all__ = ["SQLiteStore"]

#: Every table a sync touches; a missing one means `migrate` was not run.
_TABLES = ("user_keys", "user_data", "sentinel_runs", "sentinel_key_health", "sentinel_leases")

_UPSERT = """
INSERT INTO user_data (user_id, name, player_id, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (user_id) DO UPDATE SET
    name = excluded.name, player_id = excluded.player_id, updated_at = excluded.updated_at
"""


class SQLiteStore:
    """A :class:`~sentinel_kit.stores.base.Store` on a SQLite file (or ``:memory:``).

    Args:
        path: the database file, or ``":memory:"``.
        create: create the file when it does not exist (``migrate`` and ``demo`` do); other
            commands refuse a missing file so a typo does not sync into an empty database.
        chunk_size: rows per upsert statement.
    """

    def __init__(
        self, path: str | Path, *, create: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        self.path = str(path)
        self.create = create
        self.chunk_size = chunk_size
        self.label = f"sqlite:///{self.path}"
        self.write_calls = 0
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    @property
    def _memory(self) -> bool:
        return self.path in (":memory:", "")

    async def __aenter__(self) -> Self:
        if not self._memory and not self.create and not Path(self.path).exists():
            raise SchemaMissing(
                f"no SQLite database at {self.path}: create it with "
                f"`sentinel-kit migrate --db {self.label}`"
            )
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA foreign_keys = ON")
            if not self._memory:
                conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open SQLite database at {self.path}: {exc} "
                "(check that the directory exists and is writable)"
            ) from None
        self._conn = conn
        self.write_calls = 0
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection; raises when the store is not open."""
        if self._conn is None:
            raise StoreError("the SQLite store is not open: use `async with store:`")
        return self._conn

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
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
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite failed while {doing}: {exc}") from None

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        with self._errors(doing):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    async def check_schema(self) -> None:
        """Raise SchemaMissing unless every table a sync touches exists."""
        for table in _TABLES:
            with self._errors("checking the schema"):
                self.conn.execute(f"SELECT 1 FROM {table} LIMIT 0")  # noqa: S608 (fixed names)

    async def migrate(self) -> list[str]:
        """Apply the packaged SQLite migrations that are missing; return their names."""
        applied: list[str] = []
        with self._errors("applying migrations"):
            self.conn.execute(MIGRATIONS_TABLE["sqlite"])
            done = {r[0] for r in self.conn.execute("SELECT name FROM sentinel_migrations")}
        for name, sql in migrations("sqlite"):
            if name in done:
                continue
            with self._transaction(f"applying {name}") as conn:
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute("INSERT INTO sentinel_migrations (name) VALUES (?)", (name,))
            applied.append(name)
        return applied

    async def count_keys(self) -> int:
        """Return how many rows ``user_keys`` holds."""
        with self._errors("counting keys"):
            row = self.conn.execute("SELECT count(*) FROM user_keys").fetchone()
        return int(row[0])

    async def iter_key_pages(
        self, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[list[UserKey]]:
        """Yield keys in (user_id, id) order, one keyset page at a time."""
        columns = "SELECT id, user_id, api_key, created_at FROM user_keys"
        last: tuple[str, str] | None = None
        while True:
            with self._errors("reading user_keys"):
                if last is None:
                    cursor = self.conn.execute(
                        f"{columns} ORDER BY user_id, id LIMIT ?", (page_size,)
                    )
                else:
                    cursor = self.conn.execute(
                        f"{columns} WHERE (user_id, id) > (?, ?) ORDER BY user_id, id LIMIT ?",
                        (*last, page_size),
                    )
                rows = cursor.fetchall()
            if not rows:
                return
            page = [
                UserKey(id=str(r[0]), user_id=str(r[1]), api_key=r[2], created_at=r[3])
                for r in rows
            ]
            last = (page[-1].user_id, page[-1].id)
            yield page
            if len(rows) < page_size:
                return

    async def upsert_user_data(
        self, rows: Sequence[UserDataRow], *, fence: Fence | None = None
    ) -> int:
        """Insert or update ``user_data`` by ``user_id`` in chunks; return rows written."""
        unique = dedupe_rows(rows)
        for start in range(0, len(unique), self.chunk_size):
            chunk = unique[start : start + self.chunk_size]
            with self._transaction("writing user_data") as conn:
                if fence is not None:
                    self._check_fence(conn, fence)
                conn.executemany(
                    _UPSERT,
                    [(r.user_id, r.name, r.player_id, r.updated_at.isoformat()) for r in chunk],
                )
            self.write_calls += 1
        return len(unique)

    @staticmethod
    def _check_fence(conn: sqlite3.Connection, fence: Fence) -> None:
        row = conn.execute(
            "SELECT fence FROM sentinel_leases WHERE name = ?", (fence.lease,)
        ).fetchone()
        if row is None or row[0] != fence.token:
            raise StaleFence(
                f"write refused: fencing token {fence.token} of lease {fence.lease} is stale "
                "(another holder claimed the lease)"
            )

    async def claim_lease(self, name: str, holder: str, ttl: float) -> Fence | None:
        """Take lease ``name`` for ``ttl`` seconds; None while another holder's is unexpired."""
        now = time.time()
        with self._transaction("claiming a lease") as conn:
            conn.execute("INSERT OR IGNORE INTO sentinel_leases (name) VALUES (?)", (name,))
            row = conn.execute(
                "UPDATE sentinel_leases SET holder = ?, fence = fence + 1, expires_at = ? "
                "WHERE name = ? AND (holder IS NULL OR holder = ? OR expires_at <= ?) "
                "RETURNING fence",
                (holder, now + ttl, name, holder, now),
            ).fetchone()
        return Fence(name, int(row[0])) if row else None

    async def renew_lease(self, fence: Fence, holder: str, ttl: float) -> bool:
        """Extend a lease still held under ``fence``; False when it was lost."""
        with self._transaction("renewing a lease") as conn:
            cursor = conn.execute(
                "UPDATE sentinel_leases SET expires_at = ? "
                "WHERE name = ? AND holder = ? AND fence = ?",
                (time.time() + ttl, fence.lease, holder, fence.token),
            )
        return cursor.rowcount > 0

    async def release_lease(self, fence: Fence, holder: str) -> bool:
        """Give a lease up; False when it was no longer ours."""
        with self._transaction("releasing a lease") as conn:
            cursor = conn.execute(
                "UPDATE sentinel_leases SET holder = NULL, expires_at = NULL "
                "WHERE name = ? AND holder = ? AND fence = ?",
                (fence.lease, holder, fence.token),
            )
        return cursor.rowcount > 0

    async def fetch_user_data(self, user_ids: Sequence[str]) -> dict[str, StoredUser]:
        """Return the current rows of these users."""
        found: dict[str, StoredUser] = {}
        ids = list(dict.fromkeys(user_ids))
        # SQLite allows 999 host parameters in older builds: stay under it.
        for start in range(0, len(ids), 900):
            part = ids[start : start + 900]
            marks = ",".join("?" * len(part))
            with self._errors("reading user_data"):
                cursor = self.conn.execute(
                    "SELECT user_id, name, player_id, updated_at FROM user_data "  # noqa: S608 (only placeholders are interpolated)
                    f"WHERE user_id IN ({marks})",
                    part,
                )
                for row in cursor:
                    found[row[0]] = (row[0], row[1], row[2], row[3])
        return found

    async def list_user_data(self, *, limit: int = 100) -> list[StoredUser]:
        """Return up to ``limit`` rows of ``user_data`` ordered by user_id."""
        with self._errors("reading user_data"):
            rows = self.conn.execute(
                "SELECT user_id, name, player_id, updated_at FROM user_data "
                "ORDER BY user_id LIMIT ?",
                (limit,),
            ).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def add_key(self, key: UserKey) -> None:
        """Insert one ``user_keys`` row."""
        with self._transaction("adding a key") as conn:
            conn.execute(
                "INSERT INTO user_keys (id, user_id, api_key, created_at) VALUES (?, ?, ?, ?)",
                (key.id, key.user_id, key.api_key, key.created_at),
            )

    async def add_keys(self, keys: Sequence[UserKey]) -> int:
        """Insert many ``user_keys`` rows in one transaction per chunk."""
        for start in range(0, len(keys), self.chunk_size):
            with self._transaction("adding keys") as conn:
                conn.executemany(
                    "INSERT INTO user_keys (id, user_id, api_key, created_at) VALUES (?, ?, ?, ?)",
                    [
                        (k.id, k.user_id, k.api_key, k.created_at)
                        for k in keys[start : start + self.chunk_size]
                    ],
                )
        return len(keys)

    async def begin_run(self, record: RunRecord) -> bool:
        """Insert a ``running`` row for a tick; False when (job, scheduled_for) is taken."""
        with self._transaction("claiming a tick") as conn:
            cursor = conn.execute(
                "INSERT INTO sentinel_runs (run_id, job, scheduled_for, holder, fence, status, "
                "started_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (job, scheduled_for) DO NOTHING",
                (
                    record.run_id,
                    record.job,
                    _ts(record.scheduled_for),
                    record.holder,
                    record.fence,
                    record.status,
                    _ts(record.started_at),
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
        with self._transaction("recording the run") as conn:
            conn.execute(
                "INSERT INTO sentinel_runs (run_id, job, scheduled_for, holder, fence, status, "
                "started_at, finished_at, keys_total, synced, failed, skipped, written, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, "
                "finished_at = excluded.finished_at, keys_total = excluded.keys_total, "
                "synced = excluded.synced, failed = excluded.failed, "
                "skipped = excluded.skipped, written = excluded.written, error = excluded.error",
                (
                    report.run_id,
                    report.job,
                    _ts(scheduled_for),
                    holder,
                    fence,
                    report.status.value,
                    _ts(report.started_at),
                    _ts(report.finished_at),
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
        where, args = ("WHERE job = ?", [job]) if job else ("", [])
        with self._errors("reading sentinel_runs"):
            rows = self.conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM sentinel_runs {where} "  # noqa: S608 (fixed text)
                "ORDER BY started_at DESC LIMIT ?",
                [*args, limit],
            ).fetchall()
        return [_run_record(r) for r in rows]

    async def abandon_runs(self, job: str, *, fence: int, holder: str) -> int:
        """Mark older tenures' ``running`` rows of ``job`` as ``abandoned``."""
        with self._transaction("marking abandoned runs") as conn:
            cursor = conn.execute(
                "UPDATE sentinel_runs SET status = 'abandoned', finished_at = ?, error = ? "
                "WHERE job = ? AND status = 'running' AND fence < ?",
                (_ts(datetime.now(UTC)), abandon_note(holder, fence), job, fence),
            )
        return cursor.rowcount

    async def get_lease(self, name: str) -> LeaseInfo | None:
        """Return a lease's holder, token and expiry."""
        with self._errors("reading sentinel_leases"):
            row = self.conn.execute(
                "SELECT name, holder, fence, expires_at FROM sentinel_leases WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            return None
        expires = datetime.fromtimestamp(row[3], UTC) if row[3] is not None else None
        return LeaseInfo(row[0], row[1], int(row[2]), expires)

    async def load_key_health(self) -> dict[str, KeyHealth]:
        """Return every parked key's health row, by key id."""
        with self._errors("reading sentinel_key_health"):
            rows = self.conn.execute(
                "SELECT key_id, user_id, fingerprint, state, last_code, since, retry_after, "
                "reason FROM sentinel_key_health ORDER BY user_id, key_id"
            ).fetchall()
        return {
            r[0]: KeyHealth(
                key_id=r[0],
                user_id=r[1],
                fingerprint=r[2],
                state=HealthState(r[3]),
                last_code=r[4],
                since=datetime.fromisoformat(r[5]),
                retry_after=datetime.fromisoformat(r[6]) if r[6] else None,
                reason=r[7],
            )
            for r in rows
        }

    async def save_key_health(self, park: Sequence[KeyHealth], clear: Sequence[str]) -> None:
        """Upsert ``park`` rows and delete the ``clear`` rows in one transaction."""
        if not park and not clear:
            return
        with self._transaction("writing sentinel_key_health") as conn:
            conn.executemany(
                "DELETE FROM sentinel_key_health WHERE key_id = ?", [(k,) for k in clear]
            )
            conn.executemany(
                "INSERT INTO sentinel_key_health (key_id, user_id, fingerprint, state, "
                "last_code, reason, since, retry_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (key_id) DO UPDATE SET user_id = excluded.user_id, "
                "fingerprint = excluded.fingerprint, state = excluded.state, "
                "last_code = excluded.last_code, reason = excluded.reason, "
                "since = excluded.since, retry_after = excluded.retry_after",
                [
                    (
                        h.key_id,
                        h.user_id,
                        h.fingerprint,
                        h.state.value,
                        h.last_code,
                        h.reason,
                        h.since.isoformat(),
                        h.retry_after.isoformat() if h.retry_after else None,
                    )
                    for h in park
                ],
            )

    async def reset_key_health(self, key_id: str) -> bool:
        """Un-park one key; return False when it was not parked."""
        with self._transaction("resetting key health") as conn:
            cursor = conn.execute("DELETE FROM sentinel_key_health WHERE key_id = ?", (key_id,))
        return cursor.rowcount > 0


_RUN_COLUMNS = (
    "run_id, job, status, started_at, finished_at, scheduled_for, holder, fence, "
    "keys_total, synced, failed, skipped, written, error"
)


def _ts(value: datetime | None) -> str | None:
    """Store times as UTC ISO-8601 text, which sorts in time order."""
    return value.astimezone(UTC).isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _run_record(r: Sequence[Any]) -> RunRecord:
    return RunRecord(
        run_id=str(r[0]),
        job=str(r[1]),
        status=str(r[2]),
        started_at=_parse(r[3]) or datetime.fromtimestamp(0, UTC),
        finished_at=_parse(r[4]),
        scheduled_for=_parse(r[5]),
        holder=r[6],
        fence=r[7],
        keys_total=int(r[8] or 0),
        synced=int(r[9] or 0),
        failed=int(r[10] or 0),
        skipped=int(r[11] or 0),
        written=int(r[12] or 0),
        error=r[13],
    )


def _statements(script: str) -> list[str]:
    """Split a migration into statements (our files hold no ';' inside literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
