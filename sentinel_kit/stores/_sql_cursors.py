"""The SQL store's incremental syncs: ``sentinel_cursors``, one page's fenced write, pruning.

A page of a log and its unit's cursor are written in one transaction: the rows by the
dialect's own upsert of a declared table (``_upsert_rows_chunk``), then the cursor, which
never moves back. PostgreSQL runs both in the function of migration 015 that the Supabase
store calls too (:meth:`_write_page_chunk`, overridden in ``_postgres.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from ._protocols import Fence
from ._rows import quoted, writable_table
from ._sql_core import Session
from ._sql_tables import SQLTables


class SQLCursors(SQLTables):
    """``sentinel_cursors``, pages and pruning (a mixin of :class:`~._sql.SQLStore`)."""

    async def load_cursors(self, sync: str) -> dict[str, int]:
        """Return the cursors of ``sync``: unit id -> Unix timestamp."""
        rows = await self._fetch(
            "reading sentinel_cursors",
            "SELECT unit_id, cursor FROM sentinel_cursors WHERE sync = ?",
            [sync],
        )
        return {str(unit): int(cursor) for unit, cursor in rows}

    async def write_page(
        self,
        table: str,
        key: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        *,
        sync: str,
        unit_id: str,
        cursor: int,
        fence: Fence | None = None,
    ) -> int:
        """Upsert one page's rows and move the unit's cursor, in one transaction."""
        writable_table(table)
        for name in (*key, *(rows[0] if rows else ())):
            quoted(name)
        # Idempotent: the same rows and a cursor that never moves back, again.
        await self._run(
            f"writing {table}",
            partial(
                self._write_page_chunk,
                table=table,
                key=tuple(key),
                rows=rows,
                sync=sync,
                unit_id=unit_id,
                cursor=cursor,
                fence=fence,
            ),
            transaction=True,
        )
        self.write_calls += 1
        return len(rows)

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
        """The rows (fenced), then the cursor, on one transaction's session."""
        await self._upsert_rows_chunk(session, table=table, key=key, rows=rows, fence=fence)
        await session.execute(
            "INSERT INTO sentinel_cursors (sync, unit_id, cursor, updated_at) "
            "VALUES (?, ?, ?, ?) "
            "ON CONFLICT (sync, unit_id) DO UPDATE SET "
            "cursor = MAX(sentinel_cursors.cursor, excluded.cursor), "
            "updated_at = excluded.updated_at",
            [sync, unit_id, cursor, self._value(datetime.now(UTC))],
        )

    async def prune_rows(
        self,
        table: str,
        column: str,
        *,
        before: int,
        limit: int,
        fence: Fence | None = None,
    ) -> int:
        """Delete at most ``limit`` rows whose ``column`` is below ``before``, fenced."""
        writable_table(table)
        quoted(column)
        # Idempotent: deleting what is older than a fixed time again deletes the rest.
        return await self._run(
            f"pruning {table}",
            partial(
                self._prune_chunk,
                table=table,
                column=column,
                before=before,
                limit=limit,
                fence=fence,
            ),
            transaction=True,
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
        """Delete one bounded batch (by rowid, after the fence check; PostgreSQL overrides
        it with the function of migration 015)."""
        await self._check_fence(session, fence)
        # Names validated and quoted (quoted()); values are parameters.
        return await session.execute(
            f"DELETE FROM {quoted(table)} WHERE rowid IN "  # noqa: S608
            f"(SELECT rowid FROM {quoted(table)} WHERE {quoted(column)} < ? LIMIT ?)",
            [before, limit],
        )

    async def _check_fence(self, session: Session, fence: Fence | None) -> None:
        """Raise StaleFence unless ``fence`` is still the lease's token (SQLite)."""
        raise NotImplementedError
