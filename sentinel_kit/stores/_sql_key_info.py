"""The SQL store's key info: what each key can do (``sentinel_key_info``, migration 014)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from .._models import KeyInfo
from ._protocols import Fence
from ._rows import KEY_INFO_COLUMNS, key_info
from ._sql_core import Session, SQLCore, _columns, _marks


class SQLKeyInfo(SQLCore):
    """Key info (a mixin of :class:`~._sql.SQLStore`); the fenced write of one chunk is the
    dialect's (:meth:`_save_key_info_chunk`)."""

    async def load_key_info(self) -> dict[str, KeyInfo]:
        """Return every key's info, by key id (empty before migration 014)."""
        if not await self.table_columns("sentinel_key_info"):
            return {}  # migration 014 not applied yet: no key was ever checked
        rows = await self._fetch(
            "reading sentinel_key_info",
            f"SELECT {_columns(KEY_INFO_COLUMNS)} FROM sentinel_key_info",  # noqa: S608
        )
        found = [key_info(dict(zip(KEY_INFO_COLUMNS, r, strict=True))) for r in rows]
        return {i.key_id: i for i in found}

    async def _write_key_info(self, infos: Sequence[KeyInfo], fence: Fence | None) -> None:
        """One transaction of ``sentinel_key_info`` rows (:class:`._chunks.ChunkedWrites`)."""
        await self._run(
            "writing sentinel_key_info",
            partial(self._save_key_info_chunk, infos=infos, fence=fence),
            transaction=True,
        )

    async def _save_key_info_chunk(
        self, session: Session, infos: Sequence[KeyInfo], fence: Fence | None
    ) -> None:
        """Upsert one chunk of key info (fenced: refused when the fence is stale)."""
        raise NotImplementedError

    async def _delete_key_info(self, key_ids: Sequence[str]) -> int:
        """One statement deleting a batch of keys' info (:class:`._chunks.ChunkedWrites`)."""
        # Not idempotent in its answer: sent again, the delete counts nothing.
        return await self._execute(
            "forgetting key info",
            f"DELETE FROM sentinel_key_info WHERE key_id IN ({_marks(len(key_ids))})",  # noqa: S608
            list(key_ids),
            idempotent=False,
        )
