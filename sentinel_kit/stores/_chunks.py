"""Work on many rows in chunks: the loops written once for every store.

A store writes ``user_data``, a declared table, attempts and key records a chunk at a time
(one transaction, one statement or one request per chunk: bounded size, bounded loss when
a chunk is refused), and reads ``user_data`` in batches that keep a statement's parameters
or a URL short. What is written once here: deduplicating, cutting the chunks, checking a
declared table's names before anything is sent, counting write calls, what is returned.
A backend supplies only its primitive, one chunk's write or one batch's read, and carries
the fence (:func:`fence_values`) into it, where the lease check runs in the same
transaction as the write.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from .._errors import ConfigError
from .._key_health import KeyRecord
from .._models import KeyInfo, StoredUser, UserDataRow
from ._protocols import Fence, dedupe_rows
from ._rows import quoted, writable_table

__all__ = ["ChunkedWrites", "chunks", "fence_values"]

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Cut ``items`` into consecutive slices of ``size`` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def fence_values(fence: Fence | None) -> tuple[str | None, int | None]:
    """The lease and token a fenced write carries; ``(None, None)`` for an unfenced one."""
    return (fence.lease, fence.token) if fence is not None else (None, None)


class ChunkedWrites:
    """The chunked writes and batched reads of a store, once.

    A backend sets :attr:`chunk_size`, :attr:`write_calls` and :attr:`_read_batch` and
    implements :meth:`_write_user_data`, :meth:`_write_rows`, :meth:`_write_attempts`,
    :meth:`_write_key_records`, :meth:`_write_key_info`, :meth:`_delete_key_info` and
    :meth:`_read_user_data`.
    """

    #: Rows per write.
    chunk_size: int
    #: Writes of ``user_data`` and declared tables since the store was opened.
    write_calls: int
    #: Users per read of ``user_data``.
    _read_batch: int

    async def upsert_user_data(
        self, rows: Sequence[UserDataRow], *, fence: Fence | None = None
    ) -> int:
        """Insert or update ``user_data`` by ``user_id`` in chunks, deduplicated; return rows
        written. With ``fence``, each chunk is refused once the fence is stale."""
        unique = dedupe_rows(rows)
        for chunk in chunks(unique, self.chunk_size):
            # Idempotent: the same rows again; under a fence, refused as stale if another
            # holder took the lease meanwhile, which is the truth.
            await self._write_user_data(chunk, fence)
            self.write_calls += 1
        return len(unique)

    async def upsert_rows(
        self,
        table: str,
        key: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        *,
        fence: Fence | None = None,
    ) -> int:
        """Insert or update rows of a declared table on its key, in chunks; return rows
        written (see :class:`~sentinel_kit.stores.TableStore`).

        Raises:
            ConfigError: a name is not an identifier, or not a table a sync may write
                (checked before anything is sent).
        """
        writable_table(table)
        for name in (*key, *(rows[0] if rows else ())):
            quoted(name)
        for chunk in chunks(rows, self.chunk_size):
            # Idempotent, like user_data: the same rows again; fenced like it.
            await self._write_rows(table, tuple(key), chunk, fence)
            self.write_calls += 1
        return len(rows)

    async def replace_rows(
        self,
        table: str,
        key: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        *,
        unit_column: str,
        unit: str,
        fence: Fence | None = None,
    ) -> int:
        """Replace one unit's rows of a declared table, in one fenced transaction (see
        :class:`~sentinel_kit.stores.TableStore`); nothing at all for no rows.

        Raises:
            ConfigError: a bad name (checked before anything is sent).
        """
        writable_table(table)
        for name in (*key, unit_column, *(rows[0] if rows else ())):
            quoted(name)
        if unit_column not in key:
            raise ConfigError(f"{table}: replace by {unit_column}, which is not a key column")
        if not rows:
            return 0
        # One transaction: idempotent (the same rows again, the same deletes), fenced.
        await self._replace_rows(table, tuple(key), unit_column, unit, rows, fence)
        self.write_calls += 1
        return len(rows)

    async def record_attempts(
        self,
        user_ids: Sequence[str],
        *,
        at: datetime,
        job: str | None = None,
        fence: Fence | None = None,
        sync: str | None = None,
    ) -> int:
        """Record that these users were attempted at ``at``, a chunk at a time (fenced like
        the upsert); return how many users. With ``sync``, as that sync's own attempts
        (``sentinel_unit_attempts``)."""
        ids = list(dict.fromkeys(user_ids))
        for chunk in chunks(ids, self.chunk_size):
            # Idempotent: the same users at the same time again; under a fence, refused as
            # stale if another holder took the lease meanwhile, which is the truth.
            await self._write_attempts(chunk, at=at, job=job, fence=fence, sync=sync)
        return len(ids)

    async def save_key_records(self, records: Sequence[KeyRecord]) -> None:
        """Upsert whole ``sentinel_key_record`` rows, a chunk at a time."""
        for chunk in chunks(records, self.chunk_size):
            # Idempotent: whole rows, upserted.
            await self._write_key_records(chunk)

    async def save_key_info(self, infos: Sequence[KeyInfo], *, fence: Fence | None = None) -> None:
        """Upsert whole ``sentinel_key_info`` rows on key id (the last of a key wins), a
        chunk at a time; with ``fence``, each chunk is refused once the fence is stale."""
        unique = list({i.key_id: i for i in infos}.values())
        for chunk in chunks(unique, self.chunk_size):
            # Idempotent: whole rows, upserted; under a fence, refused as stale if another
            # holder took the lease meanwhile, which is the truth.
            await self._write_key_info(chunk, fence)

    async def forget_key_info(self, key_ids: Sequence[str]) -> int:
        """Delete these keys' ``sentinel_key_info`` rows, a batch at a time; return how
        many were deleted."""
        ids = list(dict.fromkeys(key_ids))
        deleted = 0
        for batch in chunks(ids, self._read_batch):
            deleted += await self._delete_key_info(batch)
        return deleted

    async def fetch_user_data(self, user_ids: Sequence[str]) -> dict[str, StoredUser]:
        """Return the current rows of these users, by user id."""
        found: dict[str, StoredUser] = {}
        ids = list(dict.fromkeys(user_ids))
        for batch in chunks(ids, self._read_batch):
            for user in await self._read_user_data(batch):
                found[user.user_id] = user
        return found

    # -- a backend's primitives ----------------------------------------------------------------

    async def _write_user_data(self, rows: Sequence[UserDataRow], fence: Fence | None) -> None:
        """Write one chunk of ``user_data`` rows (fenced: refused when the fence is stale)."""
        raise NotImplementedError

    async def _write_rows(
        self,
        table: str,
        key: tuple[str, ...],
        rows: Sequence[Mapping[str, Any]],
        fence: Fence | None,
    ) -> None:
        """Write one chunk of a declared table, names already checked (fenced likewise)."""
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
        """Upsert one unit's rows and delete its others, in one transaction, names already
        checked (fenced likewise)."""
        raise NotImplementedError

    async def _write_attempts(
        self,
        user_ids: Sequence[str],
        *,
        at: datetime,
        job: str | None,
        fence: Fence | None,
        sync: str | None,
    ) -> None:
        """Write one chunk of attempts: sync-users' (``sentinel_user_attempts``), or with
        ``sync`` that sync's (``sentinel_unit_attempts``); fenced likewise."""
        raise NotImplementedError

    async def _write_key_records(self, records: Sequence[KeyRecord]) -> None:
        """Upsert one chunk of whole ``sentinel_key_record`` rows."""
        raise NotImplementedError

    async def _write_key_info(self, infos: Sequence[KeyInfo], fence: Fence | None) -> None:
        """Upsert one chunk of whole ``sentinel_key_info`` rows (fenced likewise)."""
        raise NotImplementedError

    async def _delete_key_info(self, key_ids: Sequence[str]) -> int:
        """Delete the ``sentinel_key_info`` rows of one batch of (distinct) key ids."""
        raise NotImplementedError

    async def _read_user_data(self, user_ids: Sequence[str]) -> Iterable[StoredUser]:
        """Read the ``user_data`` rows of one batch of (distinct) user ids."""
        raise NotImplementedError
