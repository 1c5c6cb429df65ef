"""Keys in fair order, by keyset pages: the loop written once for every store.

The fair order (a user's last attempt, never attempted first, then user_id, then the key's
id, ids as text) spans two tables, so no index serves it and every read joins and sorts
the whole table. So a first read asks for one page (what a caller wanting a sample, such
as ``doctor``, reads), and every later read asks for about ``read_ahead`` keys (whole
pages, at least one), from which the pages are cut. Reads follow each other by keyset:
each starts after the last key of the one before, so attempts written while the pages are
read skip no one (offsets would). A read returning fewer keys than asked is the last.

A backend supplies only its primitive, one read (:meth:`KeysetPaging._key_page`: a SQL
query, a PostgREST function call), and how to take a key and a keyset cursor from one of
the rows it returns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from .._models import UserKey
from ._protocols import DEFAULT_PAGE_SIZE

__all__ = ["Cursor", "KeyQuery", "KeysetPaging", "read_size"]

R = TypeVar("R")

#: Where a read starts: after the key whose (last attempt, user_id, id) this is.
Cursor = tuple[Any, Any, Any]


@dataclass(frozen=True, slots=True)
class KeyQuery:
    """Which keys a pass reads, the same for each of its reads (see
    ``KeyStore.iter_key_pages``): a shard, users not attempted since a time, and whose
    attempts order them (a declared sync's, or sync-users' for None)."""

    shard: tuple[int, int] | None = None
    attempted_before: datetime | None = None
    sync: str | None = None


def read_size(read_ahead: int, page_size: int) -> int:
    """Keys a read after the first asks for: about ``read_ahead``, in whole pages, at least
    one page."""
    return max(1, read_ahead // page_size) * page_size


class KeysetPaging(Generic[R]):
    """``iter_key_pages`` of a store, once; a backend implements :meth:`_key_page`,
    :meth:`_key_of` and :meth:`_cursor_of` over its own row type ``R``."""

    #: Keys one read after the first asks for (see the module docstring).
    read_ahead: int

    async def iter_key_pages(
        self,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        shard: tuple[int, int] | None = None,
        attempted_before: datetime | None = None,
        sync: str | None = None,
    ) -> AsyncIterator[list[UserKey]]:
        """Yield keys in fair order, in pages of ``page_size`` (see ``KeyStore``); with
        ``sync``, by that sync's own attempts (``sentinel_unit_attempts``).

        After a first read of one page, each read returns about :attr:`read_ahead` keys
        (whole pages) and the pages are cut from them; reads follow each other by keyset,
        and a read returning fewer keys than asked is the last.
        """
        query = KeyQuery(shard, attempted_before, sync)
        limit = page_size  # the first read asks for one page: a sample (doctor) wants no more
        after: Cursor | None = None
        while True:
            rows = await self._key_page(query, after, limit)
            for start in range(0, len(rows), page_size):
                yield [self._key_of(r) for r in rows[start : start + page_size]]
            if len(rows) < limit:
                return
            after = self._cursor_of(rows[-1])
            limit = read_size(self.read_ahead, page_size)

    async def _key_page(self, query: KeyQuery, after: Cursor | None, limit: int) -> Sequence[R]:
        """Read up to ``limit`` keys of ``query`` in fair order, after ``after`` (from the
        first with None)."""
        raise NotImplementedError

    def _key_of(self, row: R) -> UserKey:
        """The key a row of :meth:`_key_page` holds."""
        raise NotImplementedError

    def _cursor_of(self, row: R) -> Cursor:
        """Where the read after this row starts."""
        raise NotImplementedError
