"""Syncs as declarations: :class:`TornSync` and :class:`Table` (pure).

A sync is data: which Torn endpoint to ask, how to read its answer (``parse``, the only code a
user writes) and which table the rows go to. The engine (``sync/_pipeline.py``) owns the rest:
units and keys in fair order, the Torn budget, retries, key health, the time box, fenced and
chunked writes, dry run, reports. Both values are frozen and validated when they are built, so
a bad declaration fails when its module is imported, with one line naming what is wrong::

    BATTLESTATS = TornSync(
        "sync-battlestats",
        endpoint="/user/battlestats",
        parse=parse_battlestats,
        table=Table("user_battlestats", key=["user_id"],
                    columns={"strength": "bigint", "total": "bigint"}),
        schedule="15 */6 * * *",
    )
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from .._errors import ConfigError
from .._schedule import CronSchedule, IntervalSchedule, Schedule
from ._checks import (
    _DEFAULT_BACKFILL,
    _UNIT_TYPES,
    FACTION_PLACEHOLDER,
    MAX_PAGE_LIMIT,
    UNIT_COLUMNS,
    _check_cursor,
    _check_refresh,
    _check_table_modes,
    _check_unit,
    _identifier,
    is_column_name,
)

__all__ = [
    "ACCESS_LEVELS",
    "COLUMN_TYPES",
    "FACTION_PLACEHOLDER",
    "KEY_INFO_TABLE",
    "MAX_PAGE_LIMIT",
    "UNIT_COLUMNS",
    "Row",
    "Table",
    "TornSync",
    "is_column_name",
]

#: One row of a declared table: column name -> value.
Row = Mapping[str, Any]

#: The portable column types a :class:`Table` may declare (the same words on every backend;
#: SQLite stores them by its affinity rules).
COLUMN_TYPES = frozenset(
    {"text", "integer", "bigint", "double precision", "boolean", "timestamptz", "jsonb"}
)

#: Key access levels Torn grants, from least to most (``needs=``).
ACCESS_LEVELS = ("public", "minimal", "limited", "full")

#: The table of sync-key-info: what each key can do (migration 014).
KEY_INFO_TABLE = "sentinel_key_info"

#: Columns the engine fills in itself: the unit's key column and the write time.
_ENGINE_COLUMNS = MappingProxyType({"user_id": "text", "updated_at": "timestamptz"})

_SYNC_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_ENDPOINT = re.compile(r"^/[A-Za-z0-9_/{}.-]*$")

#: Passed only by sentinel-kit's own sync-users (``sync/_builtin.py``): the one declaration
#: that writes the app's ``user_data`` by the rules of 0.2.
_BUILTIN = object()


def _reserved(table: str) -> str | None:
    """Why no user's declaration may write ``table``, or None when it may."""
    if table == "user_data":
        return "the app's table that sync-users writes by its own rules"
    if table == "user_keys":
        return "the app's keys"
    if table.startswith("sentinel_"):
        return "one of sentinel-kit's own tables"
    return None


@dataclass(frozen=True, slots=True)
class Table:
    """Where a sync's rows go: a table, its key, and optionally its columns.

    With ``columns``, ``sentinel-kit migrate`` creates the table (locked like every table it
    creates) and adds declared columns missing from an existing one; it never drops or
    retypes a column. Without ``columns`` the table must already exist.

    Args:
        name: the table's name (a lower-case SQL identifier).
        key: the columns rows are upserted on; ``user_id`` for one row per user.
        columns: column name -> one of :data:`COLUMN_TYPES`, besides the engine's own
            ``user_id`` (text) and ``updated_at`` (timestamptz); a per-faction sync's table
            declares ``faction_id`` as bigint (the engine fills it in).
        replace: a unit column (``"faction_id"``): each unit's rows missing from its new
            answer are deleted, in the same fenced transaction as the upsert (members who
            left a faction); never on an empty, failed or refused answer, nor a dry run.
        keep: for the table of an incremental sync (``TornSync(cursor=...)``): rows whose
            cursor column is older than this are deleted at the end of each run (a bounded
            number per run). A sync without ``cursor=`` refuses a table with ``keep``.

    Raises:
        ConfigError: a bad name, an unknown column type, a key column that is neither
            declared nor one the engine fills in, or a ``keep`` that is not a positive
            :class:`~datetime.timedelta`.
    """

    name: str
    key: tuple[str, ...] = ("user_id",)
    columns: Mapping[str, str] | None = field(default=None)
    replace: str | None = None
    keep: timedelta | None = None

    def __init__(
        self,
        name: str,
        *,
        key: Sequence[str] = ("user_id",),
        columns: Mapping[str, str] | None = None,
        replace: str | None = None,
        keep: timedelta | None = None,
    ) -> None:
        _identifier("table name", name)
        if isinstance(key, str) or not key:
            raise ConfigError(f"table {name}: key must be a non-empty list of column names")
        keys = tuple(_identifier(f"table {name}: key column", k) for k in key)
        if len(set(keys)) != len(keys):
            raise ConfigError(f"table {name}: key {list(keys)} names a column twice")
        frozen: Mapping[str, str] | None = None
        if columns is not None:
            checked: dict[str, str] = {}
            for column, kind in columns.items():
                _identifier(f"table {name}: column", column)
                spelled = " ".join(str(kind).lower().split()) if isinstance(kind, str) else kind
                if spelled not in COLUMN_TYPES:
                    raise ConfigError(
                        f"table {name}: column {column} has type {kind!r}; use one of "
                        + ", ".join(sorted(COLUMN_TYPES))
                    )
                engine = _ENGINE_COLUMNS.get(column) or (
                    _UNIT_TYPES["faction_id"] if column == "faction_id" else None
                )
                if engine is not None and spelled != engine:
                    raise ConfigError(
                        f"table {name}: column {column} is filled in by sentinel-kit as "
                        f"{engine}; declare it as {engine} or leave it out"
                    )
                checked[column] = str(spelled)
            frozen = MappingProxyType(checked)
            missing = [
                k
                for k in keys
                if k not in checked and k not in _ENGINE_COLUMNS and k != "faction_id"
            ]
            if missing:
                raise ConfigError(
                    f"table {name}: key column {missing[0]} is not among its columns: "
                    "declare it in columns="
                )
        _check_table_modes(name, keys, replace, keep)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "key", keys)
        object.__setattr__(self, "columns", frozen)
        object.__setattr__(self, "replace", replace)
        object.__setattr__(self, "keep", keep)

    def __hash__(self) -> int:
        return hash(
            (self.name, self.key, tuple((self.columns or {}).items()), self.replace, self.keep)
        )

    @property
    def unit_column(self) -> str:
        """The unit column the engine fills in: ``faction_id`` for a table keyed on it (and
        not on ``user_id``): a per-faction sync's; else ``user_id``."""
        if "faction_id" in self.key and "user_id" not in self.key:
            return "faction_id"
        return "user_id"

    def all_columns(self) -> dict[str, str]:
        """Every column of a table with declared ``columns``: the engine's (its unit column
        and ``updated_at``), then the declared ones, in declaration order (empty without
        ``columns``)."""
        if self.columns is None:
            return {}
        unit = self.unit_column
        engine = {unit: _UNIT_TYPES[unit], "updated_at": _ENGINE_COLUMNS["updated_at"]}
        return {**engine, **{c: t for c, t in self.columns.items() if c not in engine}}


def _schedule(name: str, schedule: str | None, interval: float | None) -> Schedule | None:
    if schedule is None and interval is None:
        return None  # run by `sync --job` and SyncJob(sync=) only; the daemon needs one
    if schedule is not None and interval is not None:
        raise ConfigError(
            f"sync {name}: give one of schedule= (a cron expression) or interval= (seconds), "
            "not both"
        )
    if schedule is not None:
        return CronSchedule(schedule)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        raise ConfigError(f"sync {name}: interval= must be a positive number of seconds")
    return IntervalSchedule(float(interval))


@dataclass(frozen=True, slots=True)
class TornSync:
    """A sync, declared: one Torn endpoint read for every unit into one table.

    Args:
        name: the job's name (``sync --job NAME``, run history, metrics).
        endpoint: a Torn v2 path, e.g. ``/user/battlestats``.
        parse: pure; receives Torn's decoded JSON answer (its error envelope already
            handled) and returns a row (a mapping of column -> value) or a sequence of
            rows. Whatever it raises, or returns that is not rows, is that key's
            ``bad_response``. The engine adds ``user_id`` and ``updated_at`` to each row.
        table: where the rows go (:class:`Table`).
        schedule: a 5-field cron expression (UTC) for the daemon; or
        interval: seconds between runs (at most one of the two; neither: not scheduled,
            run by ``sync --job`` and ``SyncJob(sync=)``, refused by the daemon).
        params: the query of every request (``{"stat": "strength"}``).
        needs: the least key access the endpoint needs (one of :data:`ACCESS_LEVELS`).
        cursor: makes the sync incremental, for Torn's log endpoints (``from``/``to``/
            ``sort``/``limit`` and ``_metadata.links``): the row column, an integer Unix
            timestamp such as ``started``, the sync advances on. Each unit (a user, or a
            faction of a per-faction sync) is asked from its stored cursor (inclusive) in
            ascending order, following ``links.next`` while pages come full; each page's rows
            and the unit's new cursor (the most seen) are written in one transaction
            (``sentinel_cursors``, one cursor per unit).
        backfill: how far back a unit's first incremental run asks (a day by default).

    Raises:
        ConfigError: anything the declaration gets wrong, in one line naming it.
    """

    name: str
    endpoint: str
    parse: Callable[[Any], Any]
    table: Table
    schedule: Schedule | None
    params: Mapping[str, str]
    needs: str
    per: str
    faction_api: bool
    shows: Callable[[Any], Iterable[int]] | None
    refresh: timedelta | None
    cursor: str | None
    backfill: timedelta
    _builtin: bool

    def __init__(
        self,
        name: str,
        *,
        endpoint: str,
        parse: Callable[[Any], Any],
        table: Table,
        schedule: str | None = None,
        interval: float | None = None,
        params: Mapping[str, Any] | None = None,
        needs: str = "public",
        per: str = "user",
        faction_api: bool = False,
        shows: Callable[[Any], Iterable[int]] | None = None,
        refresh: timedelta | None = None,
        cursor: str | None = None,
        backfill: timedelta = _DEFAULT_BACKFILL,
        _owner: object = None,
    ) -> None:
        if not isinstance(name, str) or not _SYNC_NAME.match(name):
            raise ConfigError(
                f"sync name {name!r} is not valid: use lower-case letters, digits, '-', '_' "
                "or '.' (at most 63 characters)"
            )
        if not isinstance(endpoint, str) or not _ENDPOINT.match(endpoint) or "?" in endpoint:
            raise ConfigError(
                f"sync {name}: endpoint {endpoint!r} must be a Torn v2 path such as "
                "'/user/battlestats' (put its query in params=)"
            )
        if not callable(parse):
            raise ConfigError(f"sync {name}: parse= must be a function of Torn's answer")
        if not isinstance(table, Table):
            raise ConfigError(f"sync {name}: table= must be a sentinel_kit.Table")
        builtin = _owner is _BUILTIN
        reserved = _reserved(table.name)
        if reserved is not None and not builtin:
            raise ConfigError(
                f"sync {name}: table {table.name} is {reserved}; declare a table of its own"
            )
        _check_unit(name, endpoint, table, per, faction_api=faction_api, shows=shows)
        if needs not in ACCESS_LEVELS:
            raise ConfigError(
                f"sync {name}: needs={needs!r} is not a key access level; use one of "
                + ", ".join(ACCESS_LEVELS)
            )
        _check_refresh(name, refresh)
        query: dict[str, str] = {}
        for param, value in (params or {}).items():
            if not isinstance(param, str) or not param or param.lower() == "key":
                raise ConfigError(
                    f"sync {name}: query parameter {param!r} is not allowed (the key is "
                    "sent in a header, never in the URL)"
                )
            query[param] = str(value)
        _check_cursor(name, table, cursor, backfill, query)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "endpoint", endpoint)
        object.__setattr__(self, "parse", parse)
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "schedule", _schedule(name, schedule, interval))
        object.__setattr__(self, "params", MappingProxyType(query))
        object.__setattr__(self, "needs", needs)
        object.__setattr__(self, "per", per)
        object.__setattr__(self, "faction_api", bool(faction_api))
        object.__setattr__(self, "shows", shows)
        object.__setattr__(self, "refresh", refresh)
        object.__setattr__(self, "cursor", cursor)
        object.__setattr__(self, "backfill", backfill)
        object.__setattr__(self, "_builtin", builtin)

    @property
    def needs_access(self) -> bool:
        """Whether a key Torn refuses for its access level (codes 16 and 7) is marked for
        this sync, so that it is not asked again: every declared sync, whatever ``needs=``
        says (a declaration may understate it). Not sync-users: ``/user/basic`` needs only
        public access, and a 0.2 database has nowhere to keep the marks."""
        return not self._builtin

    @property
    def user_data_rules(self) -> bool:
        """Whether this is sentinel-kit's own sync-users, which writes ``user_data`` by the
        rules of 0.2 (every key of a user asked, its own attempts, its fenced function)."""
        return self._builtin and self.table.name == "user_data"

    @property
    def key_info_rules(self) -> bool:
        """Whether this is sentinel-kit's own sync-key-info, which writes one row per key
        into ``sentinel_key_info`` (every key asked, each fresh for ``refresh``)."""
        return self._builtin and self.table.name == KEY_INFO_TABLE

    @property
    def report_unit(self) -> str:
        """What a run's counts count: ``user`` (the keys of app users: sync-users and
        sync-key-info, which ask every key, count keys as 0.2 did) or ``faction``
        (``per="faction"``), the values the JSON report's ``unit`` may take."""
        return self.per

    @property
    def migrated_table(self) -> bool:
        """Whether the table is made by sentinel-kit's migrations (``user_data`` of the
        seed schema, ``sentinel_key_info``), not by a declaration's ``columns`` nor by the
        user: ``migrate --import`` and the checks before a run leave it alone."""
        return self._builtin

    @property
    def unit_column(self) -> str:
        """The column every row carries its unit in (``user_id``, ``faction_id``)."""
        return UNIT_COLUMNS[self.per]

    def path_for(self, unit_id: str | None) -> str:
        """The request path for a unit: the faction id in place of ``{id}``."""
        if unit_id is None or FACTION_PLACEHOLDER not in self.endpoint:
            return self.endpoint
        return self.endpoint.replace(FACTION_PLACEHOLDER, unit_id)

    @property
    def page_limit(self) -> int:
        """Entries per page of an incremental sync (``params`` ``limit``, 100 by default)."""
        return int(self.params.get("limit", "100"))

    def __hash__(self) -> int:
        return hash((self.name, self.endpoint, self.table))

    def __repr__(self) -> str:
        return f"TornSync({self.name!r}, endpoint={self.endpoint!r}, table={self.table.name!r})"
