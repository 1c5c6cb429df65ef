"""The SQL store's tables: ``user_data``, declared tables and the inspection reads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from .._declared import add_column_sql, create_table_sql
from .._models import StoredUser, UserDataRow
from .._security import SecurityFacts
from ._protocols import Fence
from ._rows import USER_COLUMNS, quoted, stored_user, writable_table
from ._sql_core import Session, SQLCore, _columns, _marks


class SQLTables(SQLCore):
    """``user_data``, declared tables, migrations and security facts (a mixin of
    :class:`~._sql.SQLStore`)."""

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

    async def _replace_rows(
        self,
        table: str,
        key: tuple[str, ...],
        unit_column: str,
        unit: str,
        rows: Sequence[Mapping[str, Any]],
        fence: Fence | None,
    ) -> None:
        """One transaction: a unit's rows upserted, its other rows deleted."""
        await self._run(
            f"replacing {unit_column} {unit} in {table}",
            partial(
                self._replace_unit_rows,
                table=table,
                key=key,
                unit_column=unit_column,
                unit=unit,
                rows=rows,
                fence=fence,
            ),
            transaction=True,
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
        """Upsert a unit's rows and delete its others (fenced), in the session's
        transaction."""
        raise NotImplementedError

    async def list_rows(
        self,
        table: str,
        *,
        order_by: Sequence[str],
        limit: int = 100,
        users: Sequence[str] | None = None,
        unit_column: str = "user_id",
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
                f" WHERE CAST({quoted(unit_column)} AS TEXT) IN ({_marks(len(ids))})"
                if ids
                else " WHERE 1 = 0"
            )
            params += ids
        rows = await self._fetch(
            f"reading {table}",
            # Names validated and quoted (quoted()); values are parameters.
            f"SELECT {picked} FROM {quoted(table)}{where} ORDER BY {order} LIMIT ?",  # noqa: S608
            [*params, limit],
        )
        return [dict(zip(columns, r, strict=True)) for r in rows]

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
