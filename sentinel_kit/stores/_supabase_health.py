"""The Supabase store's key health: parked keys, key records and per-sync key access."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from postgrest.types import CountMethod, ReturnMethod

from .._errors import StoreError
from .._key_health import KeyAccess, KeyHealth, KeyRecord
from ._rows import HEALTH_COLUMNS, RECORD_COLUMNS, health_row, key_health, key_record, record_row
from ._supabase_core import SUPABASE_MAX_ROWS, SupabaseCore, _json


class SupabaseKeyHealth(SupabaseCore):
    """Key health, key access and key records (a mixin of
    :class:`~._supabase.SupabaseStore`)."""

    async def load_key_health(self) -> dict[str, KeyHealth]:
        """Return every parked key's health row, by key id (paged like the keys)."""
        found: dict[str, KeyHealth] = {}
        pages = self._pages("reading sentinel_key_health", self._health_page, SUPABASE_MAX_ROWS)
        async for rows in pages:
            for r in rows:
                health = key_health(r)
                found[health.key_id] = health
        return found

    def _health_page(self, start: int, size: int) -> Any:
        return (
            self.client.table("sentinel_key_health")
            .select(",".join(HEALTH_COLUMNS), count=CountMethod.exact)
            .order("key_id")
            .range(start, start + size - 1)
            .execute()
        )

    async def save_key_health(self, park: Sequence[KeyHealth], clear: Sequence[str]) -> None:
        """Delete the ``clear`` rows and upsert the ``park`` rows (with the run that parked
        each) in one transaction, through ``sentinel_save_key_health`` (migration 012)."""
        if not park and not clear:
            return
        # Sorted: the same changes make the same request whatever order the run found them in.
        rows = [
            _json({**health_row(h), "run_id": h.run_id})
            for h in sorted(park, key=lambda h: h.key_id)
        ]
        # Retried on transient failures: the same deletes and upserts again change nothing.
        await self._rpc(
            "sentinel_save_key_health", {"p_park": rows, "p_clear": sorted(clear)}, retry=True
        )

    async def unpark_keys(
        self,
        *,
        run_id: str | None = None,
        code: int | None = None,
        since: datetime | None = None,
    ) -> int:
        """Un-park keys by run, or by code and time, through ``sentinel_unpark_keys``
        (migration 012, one transaction); return how many."""
        if run_id is None and code is None and since is None:
            raise StoreError("say which keys to un-park: a run, a code or a time")
        params = _json({"p_run": run_id, "p_code": code, "p_since": since})
        # Not retried: a lost answer to an un-park that happened would count 0 the second time.
        return int(await self._rpc("sentinel_unpark_keys", params) or 0)

    async def load_key_access(self, sync: str) -> dict[str, str]:
        """Return the keys marked for ``sync`` (no access): their fingerprint, by key id,
        through ``sentinel_key_access_of`` (migration 013; one JSON array)."""
        rows = await self._rpc("sentinel_key_access_of", {"p_sync": sync}, retry=True)
        return {str(r["key_id"]): str(r["fingerprint"]) for r in rows or []}

    async def save_key_access(self, sync: str, marks: Sequence[KeyAccess]) -> None:
        """Mark keys for ``sync`` through ``sentinel_save_key_access``."""
        if not marks:
            return
        rows = [
            {
                "key_id": m.key_id,
                "fingerprint": m.fingerprint,
                "code": m.code,
                "since": m.since.astimezone(UTC).isoformat(),
            }
            for m in marks
        ]
        # Idempotent: the same marks again.
        await self._rpc("sentinel_save_key_access", {"p_sync": sync, "p_rows": rows}, retry=True)

    async def load_key_records(self) -> dict[str, KeyRecord]:
        """Return every ``sentinel_key_record`` row, by key id (paged like key health)."""
        found: dict[str, KeyRecord] = {}
        pages = self._pages("reading sentinel_key_record", self._record_page, SUPABASE_MAX_ROWS)
        async for rows in pages:
            for r in rows:
                record = key_record(r)
                found[record.key_id] = record
        return found

    def _record_page(self, start: int, size: int) -> Any:
        return (
            self.client.table("sentinel_key_record")
            .select(",".join(RECORD_COLUMNS), count=CountMethod.exact)
            .order("key_id")
            .range(start, start + size - 1)
            .execute()
        )

    async def _write_key_records(self, records: Sequence[KeyRecord]) -> None:
        """One upsert request of ``sentinel_key_record`` rows (retried: the same rows again
        change nothing)."""
        rows = [_json(record_row(r)) for r in records]
        await self._call(
            "writing sentinel_key_record",
            partial(self._upsert, "sentinel_key_record", rows, "key_id"),
            retry=True,
        )

    async def reset_key_health(self, key_id: str) -> bool:
        """Un-park one key; return False when it was not parked."""
        response = await self._call(
            "resetting key health",
            lambda: (
                self.client.table("sentinel_key_health")
                .delete(returning=ReturnMethod.representation)
                .eq("key_id", key_id)
                .execute()
            ),
            retry=False,
        )
        return bool(response.data)
