"""Key health: which keys to leave alone, and for how long (pure).

Torn warns that repeated calls with invalid keys can get the whole IP banned, so a key that
Torn called dead (codes 1, 2, 16) is *parked*: later runs skip it until its ciphertext
changes, which is what happens when the player saves a new key. Suspended keys (10, 13, 18)
are parked for a while (hours); owner-throttled keys (5, 14) cool down for minutes. Parked
keys count as ``skipped`` in a report; ``sentinel-kit keys health`` lists them and
``--reset KEY_ID`` un-parks one.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ._models import ErrorClass, Outcome, UserKey

__all__ = [
    "HealthPolicy",
    "HealthState",
    "KeyHealth",
    "ciphertext_fingerprint",
    "health_changes",
    "parked_reason",
    "parked_until",
]


class HealthState(enum.StrEnum):
    """Why a key is parked."""

    DEAD = "dead"
    SUSPENDED = "suspended"
    COOLDOWN = "cooldown"


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """How long keys stay parked.

    Attributes:
        suspend_for: parking time of a suspended key (codes 10, 13, 18).
        cooldown_for: parking time of an owner-throttled key (codes 5, 14).
    """

    suspend_for: timedelta = timedelta(hours=6)
    cooldown_for: timedelta = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class KeyHealth:
    """One row of ``sentinel_key_health``: never any key material, only a fingerprint of the
    ciphertext, so re-saving a key (a new ciphertext) un-parks it."""

    key_id: str
    user_id: str
    fingerprint: str
    state: HealthState
    last_code: int | None
    since: datetime
    retry_after: datetime | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        """Return the JSON form shown by ``keys health --json``."""
        return {
            "key_id": self.key_id,
            "user_id": self.user_id,
            "state": self.state.value,
            "last_code": self.last_code,
            "reason": self.reason,
            "since": self.since.isoformat(),
            "retry_after": self.retry_after.isoformat() if self.retry_after else None,
        }


def ciphertext_fingerprint(ciphertext: str) -> str:
    """Return 16 hex digits of SHA-256 of the stored ciphertext (case and spaces ignored)."""
    return hashlib.sha256(ciphertext.strip().lower().encode("ascii", "replace")).hexdigest()[:16]


def parked_reason(
    health: KeyHealth | None, key: UserKey, *, now: datetime, policy: HealthPolicy
) -> KeyHealth | None:
    """Return the health row that parks ``key`` now, or None when it may be requested.

    A suspended or throttled key is parked until its stored ``retry_after`` or until
    ``since`` plus the current policy's time, whichever comes first, so shortening the
    parking time takes effect at once.

    Args:
        health: the key's stored health, if any.
        key: the key as stored now.
        now: the current time.
        policy: the parking times in force.

    Returns:
        ``health`` when it still applies: same ciphertext, and dead or not yet expired.
    """
    if health is None or health.fingerprint != ciphertext_fingerprint(key.api_key):
        return None
    limit = parked_until(health, policy=policy)
    return health if limit is None or now < limit else None


def parked_until(health: KeyHealth, *, policy: HealthPolicy) -> datetime | None:
    """Return when a parked key may be requested again; None for a dead key (never, until
    the player saves a new one).

    A suspended or throttled key waits until its stored ``retry_after`` or until ``since``
    plus the current policy's time, whichever comes first.
    """
    if health.state is HealthState.DEAD:
        return None
    limit = health.since + (
        policy.suspend_for if health.state is HealthState.SUSPENDED else policy.cooldown_for
    )
    return min(limit, health.retry_after) if health.retry_after is not None else limit


def health_changes(
    outcomes: Iterable[Outcome],
    *,
    now: datetime,
    policy: HealthPolicy,
) -> tuple[list[KeyHealth], list[str]]:
    """Derive key-health updates from a batch of outcomes.

    Args:
        outcomes: outcomes of one run (skipped ones are ignored).
        now: the current time.
        policy: parking times.

    Returns:
        ``(park, clear)``: rows to upsert, and key ids whose health row to delete (the key
        worked again).
    """
    park: list[KeyHealth] = []
    clear: list[str] = []
    for outcome in outcomes:
        if outcome.skipped:
            continue
        if outcome.ok:
            clear.append(outcome.key_id)
            continue
        state, retry_after = _park(outcome.error_class, now, policy)
        if state is None or outcome.ciphertext_fp is None:
            continue
        park.append(
            KeyHealth(
                key_id=outcome.key_id,
                user_id=outcome.user_id,
                fingerprint=outcome.ciphertext_fp,
                state=state,
                last_code=outcome.torn_code,
                since=now,
                retry_after=retry_after,
                reason=outcome.reason.value if outcome.reason else None,
            )
        )
    return park, clear


def _park(
    error_class: ErrorClass | None, now: datetime, policy: HealthPolicy
) -> tuple[HealthState | None, datetime | None]:
    if error_class is ErrorClass.KEY_DEAD:
        return HealthState.DEAD, None
    if error_class is ErrorClass.KEY_SUSPENDED:
        return HealthState.SUSPENDED, now + policy.suspend_for
    if error_class is ErrorClass.OWNER_THROTTLED:
        return HealthState.COOLDOWN, now + policy.cooldown_for
    return None, None
