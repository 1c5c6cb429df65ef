"""The Supabase store's incremental syncs: ``sentinel_cursors`` through migration 015's
functions (one JSON object of cursors; a page's rows and its cursor in one call, fenced;
bounded pruning)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._chunks import fence_values
from ._protocols import Fence
from ._rows import quoted, writable_table
from ._supabase_core import SupabaseCore, _json


class SupabaseCursors(SupabaseCore):
    """Cursors, pages and pruning (a mixin of :class:`~._supabase.SupabaseStore`)."""

    async def load_cursors(self, sync: str) -> dict[str, int]:
        """Return the cursors of ``sync`` through ``sentinel_cursors_of`` (one JSON object,
        which ``db-max-rows`` does not cut)."""
        found = await self._rpc("sentinel_cursors_of", {"p_sync": sync}, retry=True)
        return {str(unit): int(cursor) for unit, cursor in (found or {}).items()}

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
        """One call of ``sentinel_upsert_cursor_rows``: the rows and the cursor, in one
        transaction, fenced."""
        writable_table(table)
        for name in (*key, *(rows[0] if rows else ())):
            quoted(name)
        lease, token = fence_values(fence)
        # Retried: the same rows and a cursor that never moves back, again.
        await self._rpc(
            "sentinel_upsert_cursor_rows",
            {
                "p_table": table,
                "p_key": list(key),
                "p_rows": [_json(dict(r)) for r in rows],
                "p_sync": sync,
                "p_unit_id": unit_id,
                "p_cursor": cursor,
                "p_lease": lease,
                "p_fence": token,
            },
            retry=True,
        )
        self.write_calls += 1
        return len(rows)

    async def prune_rows(
        self,
        table: str,
        column: str,
        *,
        before: int,
        limit: int,
        fence: Fence | None = None,
    ) -> int:
        """One call of ``sentinel_prune_rows``: at most ``limit`` rows, fenced."""
        writable_table(table)
        quoted(column)
        lease, token = fence_values(fence)
        # Retried: deleting what is older than a fixed time again deletes the rest.
        deleted = await self._rpc(
            "sentinel_prune_rows",
            {
                "p_table": table,
                "p_column": column,
                "p_before": before,
                "p_limit": limit,
                "p_lease": lease,
                "p_fence": token,
            },
            retry=True,
        )
        return int(deleted or 0)
