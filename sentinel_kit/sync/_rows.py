"""From outcomes to ``user_data`` rows, and what those rows would change (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from .._models import Outcome, StoredUser, UserDataRow
from .._report import Change, ChangeKind

__all__ = ["build_upserts", "diff_rows"]


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
