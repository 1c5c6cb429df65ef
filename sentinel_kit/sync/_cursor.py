"""Incremental syncs, the pure part: which page to ask, and what a page holds.

A sync declared with ``cursor=`` reads one of Torn's logs (``/faction/attacks``,
``/user/events``...), which take ``from``, ``to``, ``sort`` and ``limit`` and answer
``_metadata.links.next``. Each unit is asked from its stored cursor in ascending order (the
first time from ``backfill`` ago); Torn's ``from`` is inclusive, so the entries at the cursor
come again and are written again on the table's key, never twice. ``links.next`` is
followed only for its path and query, which go to the configured Torn URL: a link naming
another host never sends a request there. The I/O loop is ``sync/_pages.py``'s
``fetch_log``, called by ``sync/_keys.py`` with the unit's path and cursor (a user's, or a
faction's for a per-faction sync).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ._spec import Row, TornSync

__all__ = ["Page", "first_query", "follow_link", "new_rows", "page_cursor", "read_page"]

#: Query parameters never taken from a link: the key goes in a header, and the comment is
#: always ours.
_DROPPED = frozenset({"key", "comment"})


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a log: the rows ``parse`` made of it, and Torn's link to the next."""

    rows: tuple[Row, ...]
    next: str | None


def first_query(spec: TornSync, cursor: int | None, *, now: datetime) -> dict[str, str]:
    """The query of a unit's first page: ascending from its cursor (inclusive), or from
    ``backfill`` before ``now`` for a unit never synced."""
    start = cursor if cursor is not None else int((now - spec.backfill).timestamp())
    return {**spec.params, "limit": str(spec.page_limit), "sort": "ASC", "from": str(start)}


def read_page(as_rows: Callable[[Any], tuple[Row, ...]], answer: Any) -> Page:
    """A page: the rows of ``answer`` and its ``_metadata.links.next`` (None when absent)."""
    rows = as_rows(answer)
    following: Any = None
    if isinstance(answer, Mapping):
        meta = answer.get("_metadata")
        links = meta.get("links") if isinstance(meta, Mapping) else None
        following = links.get("next") if isinstance(links, Mapping) else None
    return Page(rows, following if isinstance(following, str) and following else None)


def _v2_path(path: str) -> str:
    """A link's path as the sync names its endpoint: without Torn's ``/v2`` prefix."""
    path = "/" + path.strip("/")
    return path[3:] if path == "/v2" or path.startswith("/v2/") else path


def follow_link(link: str, path: str) -> dict[str, str]:
    """The query to send for Torn's ``next`` link: only its path and query are used, and
    its path must be the one asked (``path``), so a link never sends a request to another
    host or another endpoint.

    Raises:
        ValueError: the link names another path (the answer is that key's
            ``bad_response``).
    """
    parts = urlsplit(link)
    if _v2_path(parts.path) != _v2_path(path):
        raise ValueError(f"links.next names another path ({_v2_path(parts.path)[:80]!r})")
    return {k: v for k, v in parse_qsl(parts.query) if k.lower() not in _DROPPED}


def page_cursor(rows: Iterable[Row], column: str) -> int | None:
    """The greatest value of the cursor column in ``rows`` (None for no rows).

    Raises:
        ValueError: a row's cursor is not an integer Unix timestamp.
    """
    best: int | None = None
    for row in rows:
        value = row.get(column)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(
                f"cursor column {column} is {type(value).__name__}, not an integer timestamp"
            )
        best = value if best is None else max(best, value)
    return best


def new_rows(
    rows: Sequence[Row], key: Sequence[str], seen: set[tuple[str, ...]]
) -> tuple[Row, ...]:
    """``rows`` without those whose key was seen before in this unit's run (an inclusive
    ``from`` repeats the entries at the edge of the last page), recording the new ones."""
    fresh: list[Row] = []
    for row in rows:
        ident = tuple(str(row.get(k)) for k in key)
        if ident in seen:
            continue
        seen.add(ident)
        fresh.append(row)
    return tuple(fresh)
