"""What the reading API returns: typed tables of rows, keys, key health and runs (pure).

Each is a :class:`~sentinel_kit._display.Table`: a read-only sequence of frozen values that
renders as a table in a notebook, prints as one in a terminal, and has ``to_pandas()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from .. import _models
from .._crypto import KeyCipher
from .._display import Table
from .._errors import DecryptError
from .._key_health import (
    HealthPolicy,
    HealthState,
    KeyHealth,
    current_key_info,
    parked_reason,
    parked_until,
)
from .._models import RunRecord, StoredUser, UserKey, key_fingerprint
from ._spec import ACCESS_LEVELS

__all__ = [
    "DeclaredRows",
    "HealthTable",
    "KeyInfo",
    "KeyTable",
    "RunHistory",
    "UserRows",
    "access_name",
    "current_key_info",
    "declared_rows",
    "key_info",
    "one_key_per_user",
]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One stored key as the next run sees it; never the key itself.

    Attributes:
        key_id: the ``user_keys`` row id.
        user_id: the app user it belongs to.
        created_at: when the app stored it (as stored).
        fingerprint: the decrypted key's fingerprint (the label in reports, cassettes and
            logs; see :func:`~sentinel_kit.key_fingerprint`); None when it does not decrypt.
        decrypt_error: why the job's secret does not decrypt it (None when it does).
        parked: why key health leaves it alone now (dead, suspended, cooldown), or None.
        last_code: the Torn error code that parked it.
        parked_until: when a suspended or cooling key is requested again (None for a dead
            key, which waits until the player saves a new one).
        no_access: Torn refused the key for this sync's endpoint (code 16, or 7 for
            faction data): this sync does not ask it again until the key is re-saved;
            other syncs use it.
        spare: a per-user sync asks one key per user, the newest usable one; this key is
            asked only after a failure of a newer one of its user.
        access: the key's access level as sync-key-info found it (``public``, ``minimal``,
            ``limited``, ``full``); None while unknown (never checked, or re-saved since).
        access_type: Torn's name for it (``Limited Access``, ``Custom``...).
        player_id: the key's owner; faction_id: the owner's faction (None outside one).
        faction_access: whether the owner has faction API access.
        checked_at: when sync-key-info checked the key.
        fresh: the sync's ``refresh=`` says the key needs no request yet (sync-key-info:
            checked within a day under its current ciphertext).
        planned: a per-faction sync's action for the key, as its plan decides it
            (``request``, ``spare``, ``parked``, ``no_access``, ``no_faction``,
            ``unknown``: no current key info, ``fresh`` or ``other_shard``); None for a
            per-user sync, whose action follows from the fields above.
    """

    key_id: str
    user_id: str
    created_at: str | None
    fingerprint: str | None
    decrypt_error: str | None = None
    parked: HealthState | None = None
    last_code: int | None = None
    parked_until: datetime | None = None
    no_access: bool = False
    spare: bool = False
    access: str | None = None
    access_type: str | None = None
    player_id: int | None = None
    faction_id: int | None = None
    faction_access: bool | None = None
    checked_at: datetime | None = None
    fresh: bool = False
    planned: str | None = None

    @property
    def decrypts(self) -> bool:
        """Whether the job's secret decrypts the key."""
        return self.decrypt_error is None

    @property
    def action(self) -> str:
        """What the next run does with it: ``request``, ``parked``, ``decrypt_error``,
        ``no_access`` (refused for this sync), ``spare`` (another key of its user is
        asked first) or ``fresh`` (not asked before the sync's ``refresh`` is up); for a
        per-faction sync, what its plan does (:attr:`planned`)."""
        if self.planned is not None:
            if self.planned in ("request", "spare") and not self.decrypts:
                return "decrypt_error"
            return self.planned
        if self.parked is not None:
            return "parked"
        if self.no_access:
            return "no_access"
        if not self.decrypts:
            return "decrypt_error"
        if self.fresh:
            return "fresh"
        return "spare" if self.spare else "request"


def key_info(
    key: UserKey,
    *,
    cipher: KeyCipher,
    health: KeyHealth | None,
    now: datetime,
    policy: HealthPolicy,
    no_access: bool = False,
    checked: _models.KeyInfo | None = None,
    fresh: bool = False,
    planned: str | None = None,
) -> KeyInfo:
    """Describe one stored key: does it decrypt, under which fingerprint, is it parked.

    Args:
        key: the ``user_keys`` row.
        cipher: the job's secret.
        health: the key's stored health row, if any.
        now: the time to judge parking at.
        policy: the parking times in force.
        no_access: the key is marked without access for the job's sync.
        checked: what sync-key-info found for the key (shown only while current).
        fresh: the key needs no request before the sync's ``refresh`` is up.
        planned: a per-faction sync's action for the key (:attr:`KeyInfo.planned`).

    Returns:
        The :class:`KeyInfo`; the plaintext is dropped once fingerprinted.
    """
    fingerprint = error = None
    try:
        fingerprint = key_fingerprint(cipher.decrypt(key.api_key))
    except DecryptError as exc:
        error = str(exc)
    parked = parked_reason(health, key, now=now, policy=policy)
    return KeyInfo(
        key_id=key.id,
        user_id=key.user_id,
        created_at=key.created_at,
        fingerprint=fingerprint,
        decrypt_error=error,
        parked=parked.state if parked else None,
        last_code=parked.last_code if parked else None,
        parked_until=parked_until(parked, policy=policy) if parked else None,
        no_access=no_access,
        fresh=fresh,
        planned=planned,
        **_access_fields(current_key_info(checked, key)),
    )


def access_name(level: int) -> str | None:
    """The name of Torn's access level number (1 ``public`` .. 4 ``full``); None for 0."""
    return ACCESS_LEVELS[level - 1] if 1 <= level <= len(ACCESS_LEVELS) else None


def _access_fields(info: _models.KeyInfo | None) -> dict[str, Any]:
    if info is None:
        return {}
    return {
        "access": access_name(info.access_level),
        "access_type": info.access_type or None,
        "player_id": info.player_id,
        "faction_id": info.faction_id,
        "faction_access": info.faction_access,
        "checked_at": info.checked_at,
    }


def one_key_per_user(infos: Sequence[KeyInfo]) -> list[KeyInfo]:
    """Mark, of each user's keys, all but the newest requestable one as spare (what a
    per-user sync does: it asks the next key only after a failure of a newer one); the
    order is kept."""
    first: dict[str, KeyInfo] = {}
    for info in infos:
        if info.action != "request":
            continue
        best = first.get(info.user_id)
        if best is None or (info.created_at or "", info.key_id) > (
            best.created_at or "",
            best.key_id,
        ):
            first[info.user_id] = info
    return [
        replace(i, spare=True) if i.action == "request" and first[i.user_id] is not i else i
        for i in infos
    ]


class UserRows(Table[StoredUser]):
    """``user_data`` rows: one per app user, the Torn player the sync found for it."""

    __slots__ = ()
    columns = ("user_id", "name", "player_id", "updated_at")


class KeyTable(Table[KeyInfo]):
    """The stored keys and what the next run does with each (see :class:`KeyInfo`)."""

    __slots__ = ("sync",)

    def __init__(self, items: Iterable[KeyInfo] = (), *, caption: str = "", sync: str = "") -> None:
        super().__init__(items, caption=caption)
        #: The sync whose next run the actions are of (its name; the plot's title says it).
        self.sync = sync

    columns = (
        "user_id",
        "key_id",
        "created_at",
        "fingerprint",
        "action",
        "parked",
        "last_code",
        "parked_until",
        "decrypt_error",
        "no_access",
        "access",
        "access_type",
        "player_id",
        "faction_id",
        "faction_access",
        "checked_at",
    )

    def plot(self) -> Figure:
        """Draw the keys by state (requested, parked by reason, no access, not decryptable):
        one bar per state the keys are in; and, once sync-key-info has checked keys, a
        second panel of the keys by access level (full, limited, minimal, public, unknown).

        Returns:
            A matplotlib ``Figure``; a notebook shows it, ``savefig`` writes it.

        Raises:
            ConfigError: matplotlib is not installed (``pip install 'sentinel-kit[notebook]'``).
        """
        from .._plots import keys_figure

        return keys_figure(self.records(), caption=self.caption, sync=self.sync)


class HealthTable(Table[KeyHealth]):
    """Rows of key health: keys Torn called dead, suspended or throttled."""

    __slots__ = ()
    columns = ("user_id", "key_id", "state", "last_code", "reason", "since", "retry_after")


class RunHistory(Table[RunRecord]):
    """Recorded runs, newest first."""

    __slots__ = ()
    columns = (
        "run_id",
        "job",
        "status",
        "started_at",
        "duration_s",
        "keys_total",
        "synced",
        "failed",
        "skipped",
        "deferred",
        "written",
        "counted",
        "stale_users",
        "oldest_attempt_age_s",
        "error",
        "scheduled_for",
        "holder",
        "unit",
    )

    def record(self, item: RunRecord) -> dict[str, Any]:
        """One run as a record; ``duration_s`` is None while it runs."""
        duration = (
            round((item.finished_at - item.started_at).total_seconds(), 3)
            if item.finished_at
            else None
        )
        values = {c: getattr(item, c) for c in self.columns if c != "duration_s"}
        return {**values, "duration_s": duration}

    def plot(self) -> Figure:
        """Draw the runs over time, oldest first: synced, failed, skipped and deferred keys
        as stacked bars, the duration as a line on a second axis; one panel per job.

        Returns:
            A matplotlib ``Figure``; a notebook shows it, ``savefig`` writes it.

        Raises:
            ConfigError: matplotlib is not installed (``pip install 'sentinel-kit[notebook]'``).
        """
        from .._plots import history_figure

        return history_figure(self.records(), caption=self.caption)


class DeclaredRows(Table[dict[str, Any]]):
    """Rows of a declared sync's table (column -> value each), in the table's columns."""

    __slots__ = ()

    def record(self, item: dict[str, Any]) -> dict[str, Any]:
        """Return one row as a record, keyed by :attr:`columns`."""
        return {c: item.get(c) for c in self.columns}


def declared_rows(rows: list[dict[str, Any]], *, caption: str) -> DeclaredRows:
    """A :class:`DeclaredRows` table whose columns are those of ``rows``."""
    columns = tuple(rows[0]) if rows else ("user_id",)
    kind: type[DeclaredRows] = type(
        "DeclaredRows", (DeclaredRows,), {"__slots__": (), "columns": columns}
    )
    return kind(rows, caption=caption)
