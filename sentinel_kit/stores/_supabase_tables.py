"""The Supabase store's tables: ``user_data``, declared tables and the inspection reads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from .._models import StoredUser, UserDataRow
from ._chunks import fence_values
from ._protocols import Fence
from ._rows import USER_COLUMNS, quoted, stored_user, user_data_row, writable_table
from ._supabase_core import SUPABASE_MAX_ROWS, SupabaseCore, _json


class SupabaseTables(SupabaseCore):
    """``user_data``, declared tables, migrations and security facts (a mixin of
    :class:`~._supabase.SupabaseStore`)."""

    async def _write_user_data(self, rows: Sequence[UserDataRow], fence: Fence | None) -> None:
        """One request of ``user_data`` rows; a fenced one through the SQL function
        ``sentinel_upsert_user_data`` (:class:`._chunks.ChunkedWrites`)."""
        chunk = [_json(user_data_row(r)) for r in rows]
        if fence is None:
            await self._call(
                "writing user_data",
                partial(self._upsert, "user_data", chunk, "user_id"),
                retry=True,
            )
        else:
            # Retried: see ChunkedWrites.upsert_user_data.
            await self._rpc(
                "sentinel_upsert_user_data",
                {"p_lease": fence.lease, "p_fence": fence.token, "p_rows": chunk},
                retry=True,
            )

    async def _write_rows(
        self,
        table: str,
        key: tuple[str, ...],
        rows: Sequence[Mapping[str, Any]],
        fence: Fence | None,
    ) -> None:
        """One call of the generic fenced SQL function ``sentinel_upsert_rows`` (migration
        013), which quotes every name (:class:`._chunks.ChunkedWrites`)."""
        lease, token = fence_values(fence)
        # Retried: see ChunkedWrites.upsert_rows.
        await self._rpc(
            "sentinel_upsert_rows",
            {
                "p_table": table,
                "p_key": list(key),
                "p_rows": [_json(dict(r)) for r in rows],
                "p_lease": lease,
                "p_fence": token,
            },
            retry=True,
        )

    async def _replace_rows(
        self,
        table: str,
        key: tuple[str, ...],
        unit_column: str,
        unit: str,
        rows: Sequence[Mapping[str, Any]],
        fence: Fence | None,
    ) -> None:
        """One call of ``sentinel_replace_rows`` (migration 016): a unit's rows upserted and
        its other rows deleted in one fenced transaction (:class:`._chunks.ChunkedWrites`)."""
        lease, token = fence_values(fence)
        # Retried: idempotent (the same rows again, the same deletes), and fenced.
        await self._rpc(
            "sentinel_replace_rows",
            {
                "p_table": table,
                "p_key": list(key),
                "p_unit_column": unit_column,
                "p_unit": unit,
                "p_rows": [_json(dict(r)) for r in rows],
                "p_lease": lease,
                "p_fence": token,
            },
            retry=True,
        )

    async def _read_user_data(self, user_ids: Sequence[str]) -> Iterable[StoredUser]:
        """One request of ``user_data`` rows (:class:`._chunks.ChunkedWrites`)."""
        response = await self._call(
            "reading user_data",
            lambda: (
                self.client.table("user_data")
                .select(",".join(USER_COLUMNS))
                .in_("user_id", list(user_ids))
                .execute()
            ),
            retry=True,
        )
        return [stored_user(r) for r in response.data or []]

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
        for name in (*order_by, unit_column):
            quoted(name)

        def query() -> Any:
            request = self.client.table(table).select("*")
            if users is not None:
                request = request.in_(unit_column, list(dict.fromkeys(users))[:200])
            for name in order_by:
                request = request.order(name)
            return request.limit(min(limit, SUPABASE_MAX_ROWS)).execute()

        response = await self._call(f"reading {table}", query, retry=True)
        return [dict(r) for r in response.data or []]

    async def list_user_data(self, *, limit: int = 100) -> list[StoredUser]:
        """Return up to ``limit`` rows of ``user_data`` ordered by user_id."""
        response = await self._call(
            "reading user_data",
            lambda: (
                self.client.table("user_data")
                .select(",".join(USER_COLUMNS))
                .order("user_id")
                .limit(min(limit, SUPABASE_MAX_ROWS))
                .execute()
            ),
            retry=True,
        )
        return [stored_user(r) for r in response.data or []]

    # -- inspection (doctor) -----------------------------------------------------------------

    async def applied_migrations(self) -> list[str]:
        """Return the names in ``sentinel_migrations``, in order."""
        response = await self._call(
            "reading sentinel_migrations",
            lambda: self.client.table("sentinel_migrations").select("name").order("name").execute(),
            retry=True,
        )
        return [str(r["name"]) for r in response.data or []]
