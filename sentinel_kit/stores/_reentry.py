"""Re-entrant stores: opening a store that is already open gives the caller its own connection.

A notebook holds one ``SyncJob``, so one store object. ``await job.arun()`` in a task keeps
it open for the whole run while ``job.rows()`` opens it again, on a thread of its own with
its own event loop. One connection cannot serve both: a transaction of one would take in
the other's statements, and a psycopg connection or an asyncio lock belongs to one loop. So
``async with store`` on a store that is open already returns an opened copy of it, with a
connection of its own, and the matching exit closes that copy. The first opening still
returns the store itself, so ``async with store:`` followed by ``store.method()`` works as
before. (A SQLite ``:memory:`` copy is a new, empty database, as a second connection is.)

Exits are matched to openings by the task that opened: ``async with`` enters and exits in
one task, while two openings in different tasks or threads end in any order.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, Self

__all__ = ["Reentrant"]


def _caller() -> object:
    """Who is opening or closing: the running task (None outside one)."""
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: a plain call, not an `async with`
        return None


class Reentrant:
    """A store whose ``async with`` may be entered again while it is open; see the module.

    Subclasses implement :meth:`_is_open`, :meth:`_enter` and :meth:`_exit`, call
    :meth:`_init_reentry` in ``__init__``, and name in :attr:`_connection_state` the
    attributes an opening sets (a copy starts with them at None).
    """

    #: Attributes :meth:`_enter` sets and :meth:`_exit` clears: a copy must not share them.
    _connection_state: tuple[str, ...] = ()
    #: Opened copies still in use, by the task that opened each (innermost last).
    _copies: dict[object, list[Any]]

    def _init_reentry(self) -> None:
        self._copies = {}

    def _is_open(self) -> bool:
        raise NotImplementedError

    async def _enter(self) -> None:
        """Open the connection (on failure, leave the store closed)."""
        raise NotImplementedError

    async def _exit(self, *exc_info: object) -> None:
        """Close the connection."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        if not self._is_open():
            await self._enter()
            return self
        twin = copy.copy(self)
        for name in self._connection_state:
            setattr(twin, name, None)
        twin._init_reentry()
        await twin._enter()
        self._copies.setdefault(_caller(), []).append(twin)
        return twin

    async def __aexit__(self, *exc_info: object) -> None:
        caller = _caller()
        mine = self._copies.get(caller)
        if mine:
            twin = mine.pop()
            if not mine:
                del self._copies[caller]
            await twin._exit(*exc_info)
            return
        await self._exit(*exc_info)
