"""Writing ``user_data`` so that one row the database refuses fails only its user.

A chunk is one statement: PostgreSQL refuses all of it for one bad value ("integer out of
range", a constraint). When the store says the *data* was refused
(:class:`~sentinel_kit.StoreDataError`), the rows are written again in halves, down to the
single rows the database refuses; every other row lands. Values known not to fit are
caught before writing (``sync/_limits.py``); this is for what only the database knows (a
trigger, a check constraint, a column type changed under a running daemon).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from .._errors import StoreDataError
from .._models import UserDataRow
from ..stores import Fence, Store

__all__ = ["upsert_isolating", "write_isolating"]

R = TypeVar("R")


async def upsert_isolating(
    store: Store, rows: Sequence[UserDataRow], *, fence: Fence | None
) -> tuple[int, list[tuple[UserDataRow, StoreDataError]]]:
    """Upsert ``rows``; on a data error, bisect until the refused rows are alone.

    Writing a row twice is harmless (an upsert of the same values), so halves that were
    partly written before the error are simply written again.

    Args:
        store: the open store.
        rows: the rows, one per user.
        fence: the lease fence of every write (None outside the daemon).

    Returns:
        ``(written, refused)``: rows written, and each refused row with the error.

    Raises:
        StoreError: any failure that is not about the data (the database is down, a stale
            fence): the caller ends the run as before.
    """
    if not rows:
        return 0, []
    try:
        return await store.upsert_user_data(rows, fence=fence), []
    except StoreDataError as exc:
        if len(rows) == 1:
            return 0, [(rows[0], exc)]
    middle = len(rows) // 2
    written_a, refused_a = await upsert_isolating(store, rows[:middle], fence=fence)
    written_b, refused_b = await upsert_isolating(store, rows[middle:], fence=fence)
    return written_a + written_b, refused_a + refused_b


async def write_isolating(
    write: Callable[[Sequence[R]], Awaitable[int]], rows: Sequence[R]
) -> tuple[int, list[tuple[R, StoreDataError]]]:
    """Write ``rows`` with ``write`` (an upsert of any table); on a data error, bisect until
    the refused rows are alone, as :func:`upsert_isolating` does for ``user_data``.

    Returns:
        ``(written, refused)``.

    Raises:
        StoreError: any failure that is not about the data.
    """
    if not rows:
        return 0, []
    try:
        return await write(rows), []
    except StoreDataError as exc:
        if len(rows) == 1:
            return 0, [(rows[0], exc)]
    middle = len(rows) // 2
    written_a, refused_a = await write_isolating(write, rows[:middle])
    written_b, refused_b = await write_isolating(write, rows[middle:])
    return written_a + written_b, refused_a + refused_b
