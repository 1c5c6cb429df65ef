"""Where a sync's rows go: the one seam between the engine and a declared table.

The engine (``sync/_pipeline.py``) knows no table. It hands each key's outcome to the sink of
its sync's table, which checks the rows against what the table holds (a value that does not
fit fails that key as ``bad_response``), builds the rows of a chunk (one row set per unit:
the newest key's), writes them fenced and chunked with refused rows isolated, and says what
a dry run would change.

Three sinks: :class:`TableSink` for any declared table (the generic fenced upsert of every
store), :class:`UserDataSink` for the app's own ``user_data``, which keeps the write path
of 0.2 (its columns read from the database, its dry-run diff by name and player id, its
existing fenced function that replicas of 0.2 still call), and :class:`KeyInfoSink` for
sync-key-info: one :class:`~sentinel_kit._models.KeyInfo` per key into ``sentinel_key_info``
(``Store.save_key_info``, fenced and chunked), every key asked, each fresh for the sync's
``refresh``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from .._errors import StoreDataError
from .._key_health import current_key_info
from .._models import ErrorClass, KeyInfo, Outcome, Profile, Reason, UserKey
from .._report import Change, RowChange
from ..stores import Fence, Store
from ._limits import RowLimits, column_problem
from ._rows import build_upserts, diff_rows, diff_table_rows
from ._spec import Row, TornSync, is_column_name
from ._writes import upsert_isolating, write_isolating

__all__ = ["USER_DATA", "KeyInfoSink", "Sink", "TableSink", "UserDataSink", "sink_for"]

#: The app's table of the user sync.
USER_DATA = "user_data"


class Sink(Protocol):
    """What the engine asks of a table."""

    def admit(self, outcome: Outcome) -> Outcome:
        """The outcome as the table sees it: rows that do not fit fail the key."""
        ...

    def build(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[Any]:
        """The rows to write for these outcomes, sorted, one set per unit."""
        ...

    def unit_of(self, row: Any) -> str:
        """The unit (user id) a row belongs to."""
        ...

    @property
    def attempts(self) -> str | None:
        """Whose attempts order the keys (``sync=`` of the store's paging)."""
        ...

    @property
    def one_key(self) -> bool:
        """Ask one key per user (the newest usable), the next only after a key-scoped
        failure; False asks every key of a user."""
        ...

    @property
    def keyed_refresh(self) -> bool:
        """Whether the sink judges freshness key by key (:meth:`fresh`); False: by unit,
        through the pages' ``attempted_before``."""
        ...

    def fresh(self, key: UserKey, *, now: datetime) -> bool:
        """Whether ``key`` needs no request this run (fresh: not read, not counted)."""
        ...

    async def write(
        self, store: Store, rows: Sequence[Any], *, fence: Fence | None
    ) -> tuple[int, list[tuple[Any, StoreDataError]]]:
        """Write the rows; return how many, and the rows refused with their error."""
        ...

    async def diff(self, store: Store, rows: Sequence[Any]) -> Sequence[Change | RowChange]:
        """What writing the rows would change (dry run)."""
        ...


def _bad(outcome: Outcome, problem: str) -> Outcome:
    return replace(
        outcome,
        profile=None,
        rows=None,
        reason=Reason.BAD_RESPONSE,
        detail=problem,
        error_class=ErrorClass.REQUEST_BUG,
    )


def _winner_key(outcome: Outcome) -> tuple[str, str]:
    return (outcome.key_created_at or "", outcome.key_id)


@dataclass(slots=True)
class UserDataSink:
    """``user_data``: one row per user (name and player id), by the rules of 0.2."""

    limits: RowLimits
    #: Whose attempts order the keys: None for ``sentinel_user_attempts``, which replicas
    #: of 0.2 share.
    attempts: str | None = None
    #: sync-users asks every key of a user (the newest key's profile wins), as in 0.2.
    one_key: bool = False

    #: Freshness, if declared, is the unit's (the pages' ``attempted_before``).
    keyed_refresh: bool = False

    def fresh(self, key: UserKey, *, now: datetime) -> bool:
        return False

    def admit(self, outcome: Outcome) -> Outcome:
        if outcome.rows is None:
            return outcome
        if len(outcome.rows) != 1:
            return _bad(outcome, "expected one user_data row per answer")
        row = outcome.rows[0]
        profile = Profile(player_id=row["player_id"], name=row["name"])
        problem = self.limits.problem(profile)
        if problem is not None:
            return _bad(outcome, problem)
        return replace(outcome, profile=profile, rows=None)

    def build(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[Any]:
        return list(build_upserts(outcomes, now=now))

    def unit_of(self, row: Any) -> str:
        return str(row.user_id)

    async def write(
        self, store: Store, rows: Sequence[Any], *, fence: Fence | None
    ) -> tuple[int, list[tuple[Any, StoreDataError]]]:
        written, refused = await upsert_isolating(store, rows, fence=fence)
        return written, list(refused)

    async def diff(self, store: Store, rows: Sequence[Any]) -> Sequence[Change | RowChange]:
        current = await store.fetch_user_data([r.user_id for r in rows])
        return diff_rows(rows, current)


@dataclass(slots=True)
class TableSink:
    """A declared table: the rows ``parse`` returned, with ``user_id`` and ``updated_at``."""

    spec: TornSync
    #: The table's columns as the database has them, read once at the start of the run for
    #: a table without declared ``columns`` (None when the store cannot say: Supabase).
    existing: Mapping[str, str] | None = None

    @property
    def attempts(self) -> str | None:
        """The sync's own attempts (``sentinel_unit_attempts``) order its keys."""
        return self.spec.name

    @property
    def one_key(self) -> bool:
        """A declared per-user sync asks one key per user."""
        return True

    @property
    def keyed_refresh(self) -> bool:
        """Freshness, if declared, is the unit's (the pages' ``attempted_before``)."""
        return False

    def fresh(self, key: UserKey, *, now: datetime) -> bool:
        return False

    def admit(self, outcome: Outcome) -> Outcome:
        if outcome.rows is None:
            return outcome
        table = self.spec.table
        declared = table.all_columns() if table.columns is not None else None
        # Names never come from data: a column the table does not have (or no column can
        # have) fails this key here, not the run at the database.
        known = declared if declared is not None else self.existing
        unit = self.spec.unit_column
        for row in outcome.rows:
            for column, value in row.items():
                if not is_column_name(column):
                    return _bad(outcome, f"parse returned {column!r}, not a valid column name")
                if column in (unit, "updated_at"):
                    return _bad(outcome, f"parse set column {column}, which sentinel-kit fills in")
                if known is not None and column not in known:
                    return _bad(outcome, f"parse returned column {column!r}, not in {table.name}")
                problem = column_problem(
                    str(column), declared.get(column) if declared else None, value
                )
                if problem is not None:
                    return _bad(outcome, problem)
            missing = [k for k in table.key if k != unit and k not in row]
            if missing:
                return _bad(outcome, f"a row has no value for key column {missing[0]}")
        return outcome

    def build(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[Any]:
        best: dict[str, Outcome] = {}
        for outcome in outcomes:
            if outcome.rows is None:
                continue
            current = best.get(outcome.unit)
            if current is None or _winner_key(outcome) > _winner_key(current):
                best[outcome.unit] = outcome
        unit = self.spec.unit_column
        keyed: dict[tuple[Any, ...], dict[str, Any]] = {}
        for unit_id in sorted(best):
            # A faction id is a number (bigint); a user id is text.
            value: Any = int(unit_id) if unit == "faction_id" else unit_id
            for parsed in best[unit_id].rows or ():
                row = {unit: value, **parsed, "updated_at": now}
                # One row per key value: two in one statement would be refused together.
                keyed[tuple(str(row[k]) for k in self.spec.table.key)] = row
        return [keyed[k] for k in sorted(keyed)]

    def unit_of(self, row: Any) -> str:
        return str(row[self.spec.unit_column])

    async def write(
        self, store: Store, rows: Sequence[Any], *, fence: Fence | None
    ) -> tuple[int, list[tuple[Any, StoreDataError]]]:
        table = self.spec.table
        columns = list(table.all_columns()) or _columns_of(rows)

        async def upsert(part: Sequence[Mapping[str, Any]]) -> int:
            full = [{c: r.get(c) for c in columns} for r in part]
            return await store.upsert_rows(table.name, table.key, full, fence=fence)

        replace_by = table.replace
        if replace_by is None:
            written, refused = await write_isolating(upsert, rows)
            return written, list(refused)
        # Each unit's rows replace its rows: one fenced transaction per unit, so rows of a
        # unit missing from its new answer (members who left) go with the same write.
        written, refused = 0, []
        for unit_rows in _by_unit(rows, replace_by):
            full = [{c: r.get(c) for c in columns} for r in unit_rows]
            try:
                written += await store.replace_rows(
                    table.name,
                    table.key,
                    full,
                    unit_column=replace_by,
                    unit=str(unit_rows[0][replace_by]),
                    fence=fence,
                )
            except StoreDataError as exc:
                # The unit's answer is refused whole: nothing of it is written or deleted.
                refused += [(r, exc) for r in unit_rows]
        return written, refused

    async def write_page(
        self,
        store: Store,
        rows: Sequence[Any],
        *,
        unit_id: str,
        cursor: int,
        fence: Fence | None,
    ) -> int:
        """Write one page of an incremental sync and its unit's cursor, in one transaction
        (every declared column in every row, as :meth:`write` does)."""
        table = self.spec.table
        columns = list(table.all_columns()) or _columns_of(rows)
        full = [{c: r.get(c) for c in columns} for r in rows]
        return await store.write_page(
            table.name,
            table.key,
            full,
            sync=self.spec.name,
            unit_id=unit_id,
            cursor=cursor,
            fence=fence,
        )

    async def diff(self, store: Store, rows: Sequence[Any]) -> Sequence[Change | RowChange]:
        # The table's current rows of these units, compared by the table's key.
        if not rows:
            return []
        table, unit = self.spec.table, self.spec.unit_column
        units = sorted({str(r[unit]) for r in rows})
        current = await store.list_rows(
            table.name,
            order_by=table.key,
            # Enough for every current row of these units, which may hold more rows
            # than this run would write (a parse that returns fewer now).
            limit=max(_DIFF_READ, 10 * len(rows)),
            users=units,
            unit_column=unit,
        )
        return diff_table_rows(
            rows, current, key=table.key, unit=unit, replace=table.replace is not None
        )


@dataclass(frozen=True, slots=True)
class KeyInfoRow:
    """A row of ``sentinel_key_info`` and the user whose key it describes."""

    user_id: str
    info: KeyInfo


#: The values ``parse`` returns for a key (sync-key-info's ``parse_key_info``).
_KEY_INFO_VALUES: dict[str, type | tuple[type, ...]] = {
    "access_level": int,
    "access_type": str,
    "player_id": (int, type(None)),
    "faction_id": (int, type(None)),
    "faction_access": bool,
}

#: Their column types in ``sentinel_key_info`` (what a value must fit).
_KEY_INFO_TYPES = {
    "access_level": "integer",
    "access_type": "text",
    "player_id": "bigint",
    "faction_id": "bigint",
    "faction_access": "boolean",
}


@dataclass(slots=True)
class KeyInfoSink:
    """``sentinel_key_info``: one row per key (not per user), every key asked, a key fresh
    while its current info (same ciphertext fingerprint) is younger than ``refresh``."""

    spec: TornSync
    #: The key info at the start of the run (``Store.load_key_info``), by key id.
    known: Mapping[str, KeyInfo] = field(default_factory=dict)

    @property
    def attempts(self) -> str | None:
        """The sync's own attempts (``sentinel_unit_attempts``) order its keys."""
        return self.spec.name

    @property
    def one_key(self) -> bool:
        """Every key of a user is asked: each key has its own access."""
        return False

    @property
    def keyed_refresh(self) -> bool:
        """Freshness is each key's: a user's new or re-saved key is asked within minutes,
        however recently the user's other keys were."""
        return True

    def fresh(self, key: UserKey, *, now: datetime) -> bool:
        info = current_key_info(self.known.get(key.id), key)
        refresh = self.spec.refresh
        return info is not None and refresh is not None and info.checked_at > now - refresh

    def admit(self, outcome: Outcome) -> Outcome:
        if outcome.rows is None:
            return outcome
        if len(outcome.rows) != 1:
            return _bad(outcome, "expected one key info row per answer")
        for column, kind in _KEY_INFO_VALUES.items():
            value = outcome.rows[0].get(column)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                return _bad(outcome, f"key info has no usable {column}")
            problem = column_problem(column, _KEY_INFO_TYPES[column], value)
            if problem is not None:
                return _bad(outcome, problem)
        return outcome

    def build(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[Any]:
        rows = [
            KeyInfoRow(o.user_id, _key_info(o, o.rows[0], o.ciphertext_fp, now))
            for o in outcomes
            if o.rows and o.ciphertext_fp is not None
        ]
        return sorted(rows, key=lambda r: r.info.key_id)

    def unit_of(self, row: Any) -> str:
        return str(row.user_id)

    async def write(
        self, store: Store, rows: Sequence[Any], *, fence: Fence | None
    ) -> tuple[int, list[tuple[Any, StoreDataError]]]:
        async def save(part: Sequence[KeyInfoRow]) -> int:
            await store.save_key_info([r.info for r in part], fence=fence)
            return len(part)

        written, refused = await write_isolating(save, rows)
        return written, list(refused)

    async def diff(self, store: Store, rows: Sequence[Any]) -> Sequence[Change | RowChange]:
        # Against the key info read at the start (no second read).
        # Stored key info has no app user: both sides carry the user of the row that would
        # be written, so an unchanged key reads as unchanged.
        users = {r.info.key_id: r.user_id for r in rows}
        current = [{"user_id": users.get(i.key_id), **_info_values(i)} for i in self.known.values()]
        would = [{"user_id": r.user_id, **_info_values(r.info)} for r in rows]
        return diff_table_rows(would, current, key=("key_id",), unit="user_id")


def _key_info(outcome: Outcome, values: Row, fingerprint: str, now: datetime) -> KeyInfo:
    return KeyInfo(
        key_id=outcome.key_id,
        fingerprint=fingerprint,
        access_level=int(values["access_level"]),
        access_type=str(values["access_type"]),
        player_id=values["player_id"],
        faction_id=values["faction_id"],
        faction_access=bool(values["faction_access"]),
        checked_at=now,
    )


def _info_values(info: KeyInfo) -> dict[str, Any]:
    """What a dry run compares of a key's info (not when it was checked, nor the
    fingerprint, which is no one's business in a report)."""
    return {
        "key_id": info.key_id,
        "access_level": info.access_level,
        "access_type": info.access_type,
        "player_id": info.player_id,
        "faction_id": info.faction_id,
        "faction_access": info.faction_access,
    }


#: Rows read at least, per chunk, to diff a dry run against.
_DIFF_READ = 1_000


def _by_unit(rows: Sequence[Any], column: str) -> list[list[Any]]:
    """Rows grouped by their unit (``column``), in first-seen order."""
    groups: dict[str, list[Any]] = {}
    for row in rows:
        groups.setdefault(str(row[column]), []).append(row)
    return list(groups.values())


def _columns_of(rows: Sequence[Row]) -> list[str]:
    """The columns of rows for a table without declared columns, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def sink_for(
    spec: TornSync,
    limits: RowLimits,
    existing: Mapping[str, str] | None = None,
    key_info: Mapping[str, KeyInfo] | None = None,
) -> Sink:
    """The sink of a sync's table.

    Args:
        spec: the sync.
        limits: what ``user_data``'s columns hold (read from the database at the start).
        existing: the columns of a table without declared ``columns``, as the database has
            them (read at the start); None when unknown.
        key_info: every key's info at the start of the run (sync-key-info's freshness).
    """
    # Chosen by the declaration, never by a table's name: only sync-users keeps 0.2's rules,
    # only sync-key-info writes sentinel_key_info.
    if spec.user_data_rules:
        return UserDataSink(limits)
    if spec.key_info_rules:
        return KeyInfoSink(spec, key_info or {})
    return TableSink(spec, existing)
