"""The Supabase store's key info: what each key can do (``sentinel_key_info``, migration
014), read in counted pages, written through ``sentinel_save_key_info`` (fenced)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from postgrest.types import CountMethod, ReturnMethod

from .._errors import SchemaMissing
from .._models import KeyInfo
from ._chunks import fence_values
from ._protocols import Fence
from ._rows import KEY_INFO_COLUMNS, key_info, key_info_row
from ._supabase_core import SUPABASE_MAX_ROWS, SupabaseCore, _json


class SupabaseKeyInfo(SupabaseCore):
    """Key info (a mixin of :class:`~._supabase.SupabaseStore`)."""

    async def load_key_info(self) -> dict[str, KeyInfo]:
        """Return every key's info, by key id (paged like key health; empty before
        migration 014)."""
        found: dict[str, KeyInfo] = {}
        pages = self._pages("reading sentinel_key_info", self._key_info_page, SUPABASE_MAX_ROWS)
        try:
            async for rows in pages:
                for r in rows:
                    info = key_info(r)
                    found[info.key_id] = info
        except SchemaMissing:
            return {}  # migration 014 not applied yet: no key was ever checked
        return found

    def _key_info_page(self, start: int, size: int) -> Any:
        return (
            self.client.table("sentinel_key_info")
            .select(",".join(KEY_INFO_COLUMNS), count=CountMethod.exact)
            .order("key_id")
            .range(start, start + size - 1)
            .execute()
        )

    async def _write_key_info(self, infos: Sequence[KeyInfo], fence: Fence | None) -> None:
        """One ``sentinel_save_key_info`` call (:class:`._chunks.ChunkedWrites`)."""
        lease, token = fence_values(fence)
        # Sorted: the same infos make the same request whatever order the run found them in.
        rows = [_json(key_info_row(i)) for i in sorted(infos, key=lambda i: i.key_id)]
        # Retried on transient failures: whole rows again change nothing; a stale fence is
        # refused every time (PT409), which is the truth.
        await self._rpc(
            "sentinel_save_key_info",
            {"p_rows": rows, "p_lease": lease, "p_fence": token},
            retry=True,
        )

    async def _delete_key_info(self, key_ids: Sequence[str]) -> int:
        """One delete request of a batch of keys' info (:class:`._chunks.ChunkedWrites`)."""
        response = await self._call(
            "forgetting key info",
            lambda: (
                self.client.table("sentinel_key_info")
                .delete(returning=ReturnMethod.representation)
                .in_("key_id", sorted(key_ids))
                .execute()
            ),
            # Not retried: a lost answer to a delete that happened would count 0 next time.
            retry=False,
        )
        return len(response.data or [])
