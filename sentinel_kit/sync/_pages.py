"""One unit of an incremental sync: its log read page by page, each page written as it comes.

A sync declared with ``cursor=`` asks a unit's log from its stored cursor, ascending, and
follows ``_metadata.links.next`` while pages come full (the pure part, which page and what it
holds, is ``sync/_cursor.py``). Each page is one request of the budget and one retry unit
(``TornClient.fetch``), and is written with the unit's new cursor in one transaction before
the next is asked, so an interrupt, a crash or the time box loses no page already read and
the next run neither skips nor repeats an entry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any

from loguru import logger

from .._client import TornClient
from .._errors import ErrorClass, FetchError, NotSent
from .._models import Reason, TornKey
from ._cursor import first_query, follow_link, new_rows, page_cursor, read_page
from ._spec import Row, TornSync

__all__ = ["PageWriter", "fetch_log"]

#: Writes one page's new rows and the unit's cursor; returns the rows written.
PageWriter = Callable[[tuple[Row, ...], int], Awaitable[int]]


def _bad(detail: str) -> FetchError:
    return FetchError(detail, error_class=ErrorClass.REQUEST_BUG, reason=Reason.BAD_RESPONSE)


async def fetch_log(
    torn: TornClient,
    key: TornKey,
    spec: TornSync,
    *,
    path: str | None = None,
    cursor: int | None,
    now: datetime,
    rows_of: Callable[[Any], tuple[Row, ...]],
    write: PageWriter,
    on_sent: Callable[[], None] | None = None,
    owner: str | None = None,
) -> int:
    """Read a unit's log from ``cursor`` (inclusive) and write it page by page.

    Args:
        torn: the client (its limits, retries, classification and global stop apply to
            every page).
        key: the decrypted key that reads the log.
        spec: an incremental sync (``cursor=``).
        path: the unit's request path (``spec.path_for``); the endpoint by default.
        cursor: the unit's stored cursor; None for a unit never synced (``backfill``).
        now: the run's clock, for the first ``from`` of a new unit.
        rows_of: the sync's ``parse`` as rows (what ``bad_response`` it raises is the key's).
        write: writes a page's rows (those not seen earlier in this run) with the new cursor.
        on_sent: called each time a request goes out.
        owner: who Torn counts the requests against.

    Returns:
        The pages read.

    Raises:
        NotSent: the time box came before the first page was sent (after it, the pages
            read stand and the rest waits for the next run).
        FetchError: a page failed (pages before it are written), a row's cursor is not an
            integer timestamp, or a link names another path (``bad_response``).
    """
    column = spec.cursor
    if column is None:
        raise ValueError(f"sync {spec.name} is not incremental")
    parse = partial(read_page, rows_of)
    asked = path or spec.endpoint
    query = first_query(spec, cursor, now=now)
    seen: set[tuple[str, ...]] = set()
    last = cursor
    pages = 0
    while True:
        try:
            page = await torn.fetch(key, asked, query, on_sent=on_sent, parse=parse, owner=owner)
        except NotSent:
            if pages == 0:
                raise
            return pages  # the time box: what was read is written, the rest waits
        pages += 1
        try:
            top = page_cursor(page.rows, column)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        fresh = new_rows(page.rows, spec.table.key, seen)
        if top is not None and (fresh or last is None or top > last):
            await write(fresh, top if last is None else max(top, last))
        if page.next is None or len(page.rows) < spec.page_limit:
            return pages
        if top is None or (last is not None and top <= last):
            # A full page that does not move the cursor would be asked again forever.
            logger.warning(
                "{}: a full page of {} entries all at cursor {}: paging stops here; "
                "raise the sync's limit= so one page holds that second's entries",
                spec.name,
                len(page.rows),
                top,
            )
            return pages
        last = top
        try:
            query = follow_link(page.next, asked)
        except ValueError as exc:
            raise _bad(str(exc)) from None
