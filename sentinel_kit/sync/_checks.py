"""The checks of a declaration's newer options (pure), used by ``sync/_spec.py``.

:class:`~sentinel_kit.sync.Table` and :class:`~sentinel_kit.sync.TornSync` validate their core
fields themselves; what a table keeps or replaces (``keep=``, ``replace=``), whose a sync's
units are (``per="faction"``, ``faction_api=``, ``shows=``), how fresh it keeps them
(``refresh=``) and how an incremental sync reads (``cursor=``, ``backfill=``, ``params``
``limit``) are checked here, each failure one line naming what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError

if TYPE_CHECKING:
    from ._spec import Table

#: The column each unit kind fills in on every row: the app user a key belongs to, or the
#: Torn faction a per-faction sync asked for.
UNIT_COLUMNS = MappingProxyType({"user": "user_id", "faction": "faction_id"})

#: The type of each unit column (``faction_id`` only on a per-faction sync's table).
_UNIT_TYPES = MappingProxyType({"user_id": "text", "faction_id": "bigint"})

#: ``TornSync(backfill=)``'s default, by identity: any other value given without
#: ``cursor=`` is refused (a timedelta the caller builds is never this object).
_DEFAULT_BACKFILL = timedelta(days=1)

#: The placeholder a per-faction endpoint may hold: the engine puts the faction id there.
FACTION_PLACEHOLDER = "{id}"

#: Query parameters an incremental sync sets itself on every page.
_CURSOR_PARAMS = ("from", "sort")
#: The most entries Torn gives in one page of a log (1000 on the ``...full`` variants).
MAX_PAGE_LIMIT = 1000

# Lower-case SQL identifiers only: they are quoted anyway, but a name that needs quoting to be
# read back (spaces, capitals) is a mistake in a declaration, not a wish.
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def is_column_name(value: object) -> bool:
    """Whether ``value`` is a name a column of a declared table may have."""
    return isinstance(value, str) and bool(_IDENTIFIER.match(value))


def _identifier(what: str, value: object) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ConfigError(
            f"{what} {value!r} is not a valid name: use lower-case letters, digits and "
            "underscores, starting with a letter or underscore (at most 63 characters)"
        )
    return value


def _check_table_modes(
    name: str, keys: Sequence[str], replace: str | None, keep: timedelta | None
) -> None:
    """Validate a table's ``replace=`` and ``keep=`` (its key already checked)."""
    if replace is not None:
        if replace not in _UNIT_TYPES or replace == "user_id":
            raise ConfigError(
                f"table {name}: replace={replace!r} is not supported; use "
                "replace='faction_id' (a per-faction sync's rows of each faction)"
            )
        if replace not in keys:
            raise ConfigError(
                f"table {name}: replace={replace!r} must be one of the key columns "
                f"{list(keys)}: replacing by faction is for a per-faction sync's table "
                "(key=['faction_id', ...], with TornSync(per='faction'))"
            )
    if keep is not None and (not isinstance(keep, timedelta) or keep <= timedelta(0)):
        raise ConfigError(f"table {name}: keep= must be a positive datetime.timedelta")
    if replace is not None and keep is not None:
        raise ConfigError(
            f"table {name}: replace= and keep= do not go together: a log table keeps "
            "its rows by age (keep=), a snapshot table by unit (replace=)"
        )


def _check_refresh(name: str, refresh: timedelta | None) -> None:
    """Validate a sync's ``refresh=``: None, or a positive timedelta."""
    if refresh is not None and (not isinstance(refresh, timedelta) or refresh <= timedelta(0)):
        raise ConfigError(
            f"sync {name}: refresh= must be a positive datetime.timedelta, e.g. timedelta(days=1)"
        )


def _check_unit(
    name: str,
    endpoint: str,
    table: Table,
    per: str,
    *,
    faction_api: bool,
    shows: Callable[[Any], Iterable[int]] | None,
) -> None:
    """Refuse a declaration whose unit, table, endpoint and faction options disagree."""
    if per not in UNIT_COLUMNS:
        raise ConfigError(
            f"sync {name}: per={per!r} is not supported; use one of "
            + ", ".join(repr(p) for p in UNIT_COLUMNS)
        )
    placeholders = re.findall(r"\{[^}]*\}", endpoint)
    if any(p != FACTION_PLACEHOLDER for p in placeholders) or endpoint.count("{") != len(
        placeholders
    ):
        raise ConfigError(
            f"sync {name}: endpoint {endpoint!r} may hold only {FACTION_PLACEHOLDER} (the "
            "faction id of a per-faction sync)"
        )
    if per != "faction":
        if placeholders:
            raise ConfigError(
                f"sync {name}: endpoint {endpoint!r} holds {FACTION_PLACEHOLDER}, which only "
                "a per-faction sync fills in: add per='faction'"
            )
        if faction_api or shows is not None:
            raise ConfigError(
                f"sync {name}: faction_api= and shows= are for per-faction syncs: add per='faction'"
            )
        if table.unit_column == "faction_id" or table.replace is not None:
            raise ConfigError(
                f"sync {name}: table {table.name} is keyed on faction_id (or replaces by "
                "it): add per='faction'"
            )
        return
    if table.unit_column != "faction_id":
        raise ConfigError(
            f"sync {name}: a per-faction sync's table must have faction_id in its key "
            f"(key=['faction_id', ...]), not {list(table.key)}"
        )
    if shows is not None and not callable(shows):
        raise ConfigError(f"sync {name}: shows= must be a function of Torn's answer")
    if not placeholders and shows is None:
        raise ConfigError(
            f"sync {name}: endpoint {endpoint!r} does not name the faction (no "
            f"{FACTION_PLACEHOLDER}): declare shows= (the faction ids an answer is of), so "
            "that a key whose owner changed faction never writes another faction's data"
        )


def _check_cursor(
    name: str,
    table: Table,
    cursor: str | None,
    backfill: timedelta,
    query: Mapping[str, str],
) -> None:
    """Validate an incremental sync's ``cursor=``, ``backfill=`` and its table's ``keep=``."""
    if cursor is None:
        if backfill is not _DEFAULT_BACKFILL:
            raise ConfigError(
                f"sync {name}: backfill= is how far back an incremental sync first reads, "
                "which needs cursor= (the row column of the entry's time, such as 'started')"
            )
        if table.keep is not None:
            raise ConfigError(
                f"sync {name}: table {table.name} has keep=, which needs an incremental sync: "
                "give cursor= (the row column of the entry's time, such as 'started')"
            )
        return
    _identifier(f"sync {name}: cursor column", cursor)
    if table.replace is not None:
        raise ConfigError(
            f"sync {name}: table {table.name} has replace=, which deletes a unit's rows "
            "missing from its answer: an incremental sync reads only new entries; remove one"
        )
    if table.columns is not None and cursor not in table.columns:
        raise ConfigError(
            f"sync {name}: cursor column {cursor} is not among the columns of {table.name}: "
            "declare it (bigint)"
        )
    if table.columns is not None and table.columns[cursor] not in ("bigint", "integer"):
        raise ConfigError(
            f"sync {name}: cursor column {cursor} holds a Unix timestamp: declare it bigint, "
            f"not {table.columns[cursor]}"
        )
    if not isinstance(backfill, timedelta) or backfill <= timedelta(0):
        raise ConfigError(f"sync {name}: backfill= must be a positive datetime.timedelta")
    for param in _CURSOR_PARAMS:
        if param in query:
            raise ConfigError(
                f"sync {name}: an incremental sync sets {param}= itself; remove it from params="
            )
    limit = query.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE_LIMIT:
        raise ConfigError(
            f"sync {name}: params limit={limit!r} must be a whole number from 1 to {MAX_PAGE_LIMIT}"
        )
