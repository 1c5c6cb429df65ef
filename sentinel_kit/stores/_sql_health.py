"""The SQL store's key health: parked keys, key records and per-sync key access."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .._errors import StoreError
from .._key_health import KeyAccess, KeyHealth, KeyRecord
from ._rows import HEALTH_COLUMNS, RECORD_COLUMNS, health_row, key_health, key_record, record_row
from ._sql_core import Session, SQLCore, _columns, _marks


class SQLKeyHealth(SQLCore):
    """Key health, key access and key records (a mixin of :class:`~._sql.SQLStore`)."""

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
