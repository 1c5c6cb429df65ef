"""The Supabase store's keys: the fair order's one call, attempts, adding and re-encrypting keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from postgrest.exceptions import APIError
from postgrest.types import CountMethod, ReturnMethod

from .._errors import SchemaMissing, StoreError
from .._models import UserKey
from .._security import integer_column
from ._chunks import chunks, fence_values
from ._paging import Cursor, KeyQuery
from ._protocols import AttemptStats, CiphertextChange, Fence
from ._rows import ciphertext_change_row, numeric_id, parse_time, user_key
from ._supabase_core import SupabaseCore, _json, _key_json


class SupabaseKeys(SupabaseCore):
    """Keys, the fair order and its attempts (a mixin of :class:`~._supabase.SupabaseStore`)."""

    async def count_keys(self) -> int:
        """Return how many rows ``user_keys`` holds (an exact count, no rows transferred)."""
        response = await self._call(
            "counting keys",
            lambda: (
                self.client.table("user_keys")
                .select("id", count=CountMethod.exact)
                .limit(1)
                .execute()
            ),
            retry=True,
        )
        return int(response.count or 0)

    async def _key_page(
        self, query: KeyQuery, after: Cursor | None, limit: int
    ) -> list[dict[str, Any]]:
        """One call of ``sentinel_key_page`` (migration 011; with ``sync``, of
        ``sentinel_unit_key_page``, migration 013, by that sync's own attempts): up to
        ``limit`` keys after ``after`` in fair order, as one JSON array, which
        ``db-max-rows`` does not cut (:mod:`._paging`)."""
        # The keys in this order: the request's body is the same byte for byte (cassettes).
        params: dict[str, Any] = {"p_limit": limit}
        if query.attempted_before is not None:
            params["p_before"] = query.attempted_before
        if query.shard is not None:
            params["p_shard"], params["p_shards"] = query.shard
        function = "sentinel_key_page" if query.sync is None else "sentinel_unit_key_page"
        if query.sync is not None:
            params["p_sync"] = query.sync
        if after is not None:
            params["p_after_attempt"], params["p_after_user"], params["p_after_id"] = after
        # Retried on transient failures: a read.
        rows = await self._rpc(function, _json(params), retry=True)
        if not isinstance(rows, list):
            raise StoreError(
                "Supabase sent an unreadable page of keys (sentinel_key_page): is "
                "migration 011 applied? Print it with `sentinel-kit migrate --print`"
            )
        return rows

    def _key_of(self, row: dict[str, Any]) -> UserKey:
        return user_key(row)

    def _cursor_of(self, row: dict[str, Any]) -> Cursor:
        return (row["attempted_at"], row["user_id"], row["id"])

    async def _write_attempts(
        self,
        user_ids: Sequence[str],
        *,
        at: datetime,
        job: str | None,
        fence: Fence | None,
        sync: str | None,
    ) -> None:
        """One call of ``sentinel_record_attempts``, or with ``sync`` of
        ``sentinel_record_unit_attempts`` (:class:`._chunks.ChunkedWrites`)."""
        lease, token = fence_values(fence)
        # Retried: idempotent, and fenced (see ChunkedWrites.record_attempts).
        if sync is not None:
            unit = {
                "p_sync": sync,
                "p_unit_ids": list(user_ids),
                "p_at": at,
                "p_lease": lease,
                "p_fence": token,
            }
            await self._rpc("sentinel_record_unit_attempts", _json(unit), retry=True)
            return
        params = {
            "p_user_ids": list(user_ids),
            "p_at": at,
            "p_job": job,
            "p_lease": lease,
            "p_fence": token,
        }
        await self._rpc("sentinel_record_attempts", _json(params), retry=True)

    async def load_unit_attempts(self, sync: str) -> dict[str, datetime]:
        """Return when each unit of ``sync`` was last attempted, by unit id, through
        ``sentinel_unit_attempts_of`` (migration 016; one JSON array)."""
        rows = await self._rpc("sentinel_unit_attempts_of", {"p_sync": sync}, retry=True)
        found: dict[str, datetime] = {}
        for r in rows or []:
            when = parse_time(r.get("attempted_at"))
            if when is not None:
                found[str(r["unit_id"])] = when
        return found

    async def attempt_stats(
        self, *, since: datetime, shard: tuple[int, int] | None = None, sync: str | None = None
    ) -> AttemptStats:
        """Return the backlog of the users in ``user_keys`` (function
        ``sentinel_attempt_stats``): sync-users' only.

        Raises:
            SchemaMissing: ``sync`` was given: no function counts a declared sync's
                attempts through the Data API yet (``status`` then shows no backlog).
        """
        if sync is not None:
            raise SchemaMissing(
                f"no database function counts the backlog of {sync} through Supabase's Data API yet"
            )
        params: dict[str, Any] = {"p_since": since}
        if shard is not None:
            params["p_shard"], params["p_shards"] = shard
        rows = await self._rpc("sentinel_attempt_stats", _json(params), retry=True) or []
        found = rows[0] if rows else {}
        return AttemptStats(
            int(found.get("users") or 0),
            int(found.get("stale_users") or 0),
            int(found.get("never_attempted") or 0),
            parse_time(found.get("oldest_attempt_at")),
        )

    async def add_key(self, key: UserKey) -> str:
        """Insert one ``user_keys`` row (a missing ``created_at`` takes the default); return
        its id (made by the database for an integer ``id`` column and a non-numeric id)."""
        rows = await self._insert_keys("adding a key", [_key_json(key)], returning=True)
        return str(rows[0]["id"]) if rows else key.id

    async def add_keys(self, keys: Sequence[UserKey]) -> int:
        """Insert many ``user_keys`` rows, one request per chunk."""
        for chunk in chunks(keys, self.chunk_size):
            # A list insert names its columns (`columns=`): every row carries all four.
            rows = [{**_key_json(k), "created_at": k.created_at} for k in chunk]
            await self._insert_keys("adding keys", rows)
        return len(keys)

    async def _insert_keys(
        self, doing: str, rows: list[dict[str, Any]], *, returning: bool = False
    ) -> list[dict[str, Any]]:
        """Insert key rows; when ``user_keys.id`` turns out to be an integer column (the
        app's ``bigint`` identity refused a UUID), insert them again without the ids that
        are not numbers, so the column's default makes them. Not retried: an insert is not
        idempotent."""
        method = ReturnMethod.representation if returning else ReturnMethod.minimal

        async def insert(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
            table = self.client.table("user_keys")
            response = await table.insert(batch, returning=method).execute()
            return list(response.data or [])

        with self._errors(doing):
            try:
                return await insert(rows)
            except APIError as exc:
                # 22P02: invalid text representation, e.g. a UUID for a bigint column.
                if exc.code != "22P02" or not await self._integer_ids():
                    raise
            numbered = [r for r in rows if numeric_id(str(r["id"]))]
            others = [
                {k: v for k, v in r.items() if k != "id"}
                for r in rows
                if not numeric_id(str(r["id"]))
            ]
            return [*(await insert(numbered) if numbered else []), *await insert(others)]

    async def _integer_ids(self) -> bool:
        """True when ``user_keys.id`` is an integer column (asked once per connection)."""
        if self._integer_id_column is None:
            types = (await self.column_types()).get("user_keys", {})
            self._integer_id_column = integer_column(types.get("id"))
        return self._integer_id_column

    async def replace_ciphertexts(self, changes: Sequence[CiphertextChange]) -> int:
        """Swap re-encrypted ciphertexts in through ``sentinel_replace_ciphertexts``
        (compare-and-swap, key health carried over, one transaction); return how many."""
        if not changes:
            return 0
        payload = [ciphertext_change_row(c) for c in changes]
        # Retried on transient failures: a replayed swap finds the new value and does nothing.
        replaced = await self._rpc(
            "sentinel_replace_ciphertexts", {"p_changes": payload}, retry=True
        )
        return int(replaced or 0)
