"""From outcomes to ``user_data`` rows, and what rows would change (pure)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from .._models import Outcome, StoredUser, UserDataRow
from .._report import Change, ChangeKind, RowChange

__all__ = ["build_upserts", "diff_rows", "diff_table_rows"]


def _winner_key(outcome: Outcome) -> tuple[str, str]:
    return (outcome.key_created_at or "", outcome.key_id)


def build_upserts(outcomes: Iterable[Outcome], *, now: datetime) -> list[UserDataRow]:
    """Build one ``user_data`` row per user from a run's successful outcomes.

    When a user has several working keys, the newest key wins (latest ``created_at``, then
    the greatest key id), so the same outcomes always give the same rows.

    Args:
        outcomes: outcomes of any keys, in any order; failures are ignored.
        now: the ``updated_at`` of every row.

    Returns:
        Rows ordered by ``user_id``.
    """
    best: dict[str, Outcome] = {}
    for outcome in outcomes:
        if outcome.profile is None:
            continue
        current = best.get(outcome.user_id)
        if current is None or _winner_key(outcome) > _winner_key(current):
            best[outcome.user_id] = outcome
    rows = []
    for user_id in sorted(best):
        profile = best[user_id].profile
        if profile is None:  # pragma: no cover - filtered above; narrows the type
            continue
        rows.append(
            UserDataRow(
                user_id=user_id, name=profile.name, player_id=profile.player_id, updated_at=now
            )
        )
    return rows


def diff_rows(rows: Sequence[UserDataRow], current: Mapping[str, StoredUser]) -> list[Change]:
    """Say what upserting ``rows`` would change in ``user_data``.

    Args:
        rows: the would-be rows.
        current: the stored rows of the same users, by user id.

    Returns:
        One :class:`Change` per row, in row order.
    """
    changes = []
    for row in rows:
        stored = current.get(row.user_id)
        if stored is None:
            kind = ChangeKind.NEW
        elif stored.player_id != row.player_id:
            kind = ChangeKind.PLAYER_ID_CHANGED
        elif stored.name != row.name:
            kind = ChangeKind.NAME_CHANGED
        else:
            kind = ChangeKind.UNCHANGED
        changes.append(
            Change(
                row.user_id,
                kind,
                row.name,
                row.player_id,
                old_name=stored.name if stored else None,
                old_player_id=stored.player_id if stored else None,
            )
        )
    return changes


def diff_table_rows(
    rows: Sequence[Mapping[str, Any]],
    current: Iterable[Mapping[str, Any]],
    *,
    key: Sequence[str],
    unit: str,
    replace: bool = False,
) -> list[RowChange]:
    """Say what upserting ``rows`` would change in a declared table, row by key.

    Args:
        rows: the would-be rows (each with ``unit`` and every ``key`` column).
        current: the table's current rows of the same units, as the store reads them.
        key: the table's key columns.
        unit: the column of the unit (``user_id``).
        replace: the table replaces each unit's rows (``Table(replace=...)``): a current
            row of a unit in ``rows`` that ``rows`` do not have is ``removed``.

    Returns:
        One :class:`RowChange` per row, in row order: ``new`` when no current row has its
        key, ``changed`` (with the old values of the columns that differ) or ``unchanged``;
        then, with ``replace``, each current row it would delete (``removed``).
    """
    stored = {tuple(str(r.get(k)) for k in key): r for r in current}
    changes = []
    for row in rows:
        values = {c: v for c, v in row.items() if c not in key and c != "updated_at"}
        old_row = stored.get(tuple(str(row[k]) for k in key))
        if old_row is None:
            kind, old = ChangeKind.NEW, None
        else:
            old = {c: old_row.get(c) for c, v in values.items() if not _same(v, old_row.get(c))}
            kind = ChangeKind.CHANGED if old else ChangeKind.UNCHANGED
        changes.append(RowChange(str(row[unit]), kind, {k: row[k] for k in key}, values, old=old))
    if replace:
        units = {str(row[unit]) for row in rows}
        kept = {tuple(str(row[k]) for k in key) for row in rows}
        for found, old_row in stored.items():
            if str(old_row.get(unit)) in units and found not in kept:
                gone = {c: v for c, v in old_row.items() if c not in key and c != "updated_at"}
                changes.append(
                    RowChange(
                        str(old_row.get(unit)),
                        ChangeKind.REMOVED,
                        {k: old_row.get(k) for k in key},
                        {},
                        old=gone,
                    )
                )
    return changes


def _same(new: Any, old: Any) -> bool:
    """Whether a stored value equals a would-be one, across what the backends return
    (SQLite's 0/1 for booleans, text for JSON and times, Decimal for numbers)."""
    if isinstance(new, bool) or isinstance(old, bool):
        return new is not None and old is not None and bool(new) == bool(old)
    numbers = (int, float, Decimal)
    if isinstance(new, numbers) and isinstance(old, numbers):
        return float(new) == float(old) if float in (type(new), type(old)) else new == old
    if isinstance(new, dict | list) and isinstance(old, str):
        try:
            return bool(new == json.loads(old))
        except ValueError:
            return False
    if isinstance(new, datetime) and isinstance(old, str):
        try:
            return new == datetime.fromisoformat(old)
        except ValueError:
            return False
    return bool(new == old)
