"""Key health: which keys to leave alone, and for how long (pure).

Torn warns that repeated calls with invalid keys can get the whole IP banned, so a key that
Torn called dead (codes 1, 2, 16) is *parked*: later runs skip it until its ciphertext
changes, which is what happens when the player saves a new key. Suspended keys (10, 13, 18)
are parked for a while (hours); owner-throttled keys (5, 14) cool down for minutes. Parked
keys count as ``skipped`` in a report; ``sentinel-kit keys health`` lists them and
``--reset KEY_ID`` un-parks one (``--run RUN_ID`` every key one run parked).

Code 2 ("Incorrect key") needs care: Torn has answered it for valid keys during incidents, and
so does a wrong ``--torn-url``. So each key's last success is kept (:class:`KeyRecord`), a
run in which nothing succeeded parks no key for code 2 but gives each a *strike*, and only
after :data:`STRIKES_TO_PARK` such runs at least :data:`STRIKE_GAP` apart is the key parked
anyway; :mod:`sentinel_kit._incident` stops a run that looks like an incident.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ._models import ErrorClass, KeyInfo, Outcome, Reason, UserKey

__all__ = [
    "INCORRECT_KEY",
    "NO_SUCCESS_PARK",
    "PARKED_REASON",
    "STRIKES_TO_PARK",
    "STRIKE_GAP",
    "HealthPolicy",
    "HealthState",
    "KeyAccess",
    "KeyHealth",
    "KeyRecord",
    "access_marks",
    "ciphertext_fingerprint",
    "current_key_info",
    "health_changes",
    "key_successes",
    "parked_reason",
    "parked_until",
    "strike",
]

#: Torn's "Incorrect key": also answered for valid keys during incidents.
INCORRECT_KEY = 2
#: Runs with no success anywhere, each answering code 2 for a key, that park it anyway.
STRIKES_TO_PARK = 3
#: The least time between two such runs for both to count.
STRIKE_GAP = timedelta(hours=1)
#: How strike-parked keys' ``reason`` starts (words for people: ``status`` counts them by
#: their strikes in ``sentinel_key_record``).
NO_SUCCESS_PARK = "parked after"


class HealthState(enum.StrEnum):
    """Why a key is parked."""

    DEAD = "dead"
    SUSPENDED = "suspended"
    COOLDOWN = "cooldown"


#: The reason a report gives a key skipped because it is parked, by why it is parked.
PARKED_REASON = {
    HealthState.DEAD: Reason.KEY_INVALID,
    HealthState.SUSPENDED: Reason.KEY_SUSPENDED,
    HealthState.COOLDOWN: Reason.RATE_LIMITED,
}


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
    #: The run that parked the key (written to ``sentinel_key_parks``, for ``keys health
    #: --reset --run``); not read back by ``load_key_health``, so not compared.
    run_id: str | None = field(default=None, compare=False)

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
    run_id: str | None = None,
) -> tuple[list[KeyHealth], list[str]]:
    """Derive key-health updates from a batch of outcomes.

    Args:
        outcomes: outcomes of one run (skipped ones are ignored).
        now: the current time.
        policy: parking times.
        run_id: the run parking them (kept so one command can un-park a run's parks).

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
                run_id=run_id,
            )
        )
    return park, clear


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One row of ``sentinel_key_record``: when a key last worked, and its strikes.

    Every fact is about the ciphertext whose fingerprint it holds: a re-saved key (a new
    ciphertext) starts fresh.

    Attributes:
        key_id: the ``user_keys`` id.
        user_id: its user.
        fingerprint: :func:`ciphertext_fingerprint` of the ciphertext the facts are about.
        succeeded_at: its last success (None: none recorded).
        strikes: runs with no success anywhere in which Torn answered code 2 for it, at
            least :data:`STRIKE_GAP` apart.
        first_strike_at: the first of those runs.
        last_strike_at: the latest of those runs.
    """

    key_id: str
    user_id: str
    fingerprint: str
    succeeded_at: datetime | None = None
    strikes: int = 0
    first_strike_at: datetime | None = None
    last_strike_at: datetime | None = None

    def worked_since(self, fingerprint: str | None, since: datetime) -> bool:
        """True when this ciphertext (``fingerprint``) succeeded at or after ``since``."""
        return (
            fingerprint == self.fingerprint
            and self.succeeded_at is not None
            and self.succeeded_at >= since
        )


def key_successes(outcomes: Iterable[Outcome], *, now: datetime) -> list[KeyRecord]:
    """The records to write for the keys that succeeded in ``outcomes`` (strikes cleared),
    sorted by user and key: the same outcomes make the same write in any arrival order."""
    found = [
        KeyRecord(o.key_id, o.user_id, o.ciphertext_fp, succeeded_at=now)
        for o in outcomes
        if o.ok and o.ciphertext_fp is not None
    ]
    return sorted(found, key=lambda r: (r.user_id, r.key_id))


def strike(
    record: KeyRecord | None, outcome: Outcome, *, now: datetime, run_id: str | None = None
) -> tuple[KeyRecord | None, KeyHealth | None]:
    """Count a run with no success anywhere against a key that answered code 2.

    A run less than :data:`STRIKE_GAP` after the key's last strike does not count again; a
    new ciphertext starts at one. At :data:`STRIKES_TO_PARK` strikes the key is parked.

    Args:
        record: the key's stored record, if any.
        outcome: the key's code-2 outcome in this run.
        now: the current time.
        run_id: the run that strikes (and may park) the key.

    Returns:
        ``(record, park)``: the record to write (None when nothing changes) and the health
        row that parks the key (None while it has fewer strikes).
    """
    fp = outcome.ciphertext_fp
    if fp is None:
        return None, None
    if record is None or record.fingerprint != fp or record.last_strike_at is None:
        succeeded = record.succeeded_at if record and record.fingerprint == fp else None
        new = KeyRecord(outcome.key_id, outcome.user_id, fp, succeeded, 1, now, now)
    elif now - record.last_strike_at < STRIKE_GAP:
        return None, None
    else:
        new = KeyRecord(
            record.key_id,
            record.user_id,
            fp,
            record.succeeded_at,
            record.strikes + 1,
            record.first_strike_at or now,
            now,
        )
    if new.strikes < STRIKES_TO_PARK:
        return new, None
    first = (new.first_strike_at or now).isoformat(timespec="minutes")
    park = KeyHealth(
        key_id=new.key_id,
        user_id=new.user_id,
        fingerprint=fp,
        state=HealthState.DEAD,
        last_code=outcome.torn_code,
        since=now,
        reason=(
            f"{NO_SUCCESS_PARK} {new.strikes} runs with no success anywhere, each answered "
            f"code {outcome.torn_code} (first {first}, last {now.isoformat(timespec='minutes')})"
        ),
        run_id=run_id,
    )
    return new, park


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


@dataclass(frozen=True, slots=True)
class KeyAccess:
    """A key without access for one sync (Torn code 16): that sync does not ask it again
    until the key is re-saved (its ciphertext, and so ``fingerprint``, changes).

    Attributes:
        key_id: the ``user_keys`` id.
        fingerprint: :func:`ciphertext_fingerprint` of the ciphertext that lacked access.
        code: Torn's error code.
        since: when it was marked.
    """

    key_id: str
    fingerprint: str
    code: int
    since: datetime


def access_marks(outcomes: Iterable[Outcome], *, now: datetime) -> list[KeyAccess]:
    """The keys of ``outcomes`` Torn refused for lack of access: marks for this sync.
    Skipped keys are not new marks (already marked, or skipped by their key info)."""
    return [
        KeyAccess(o.key_id, o.ciphertext_fp, o.torn_code or 16, now)
        for o in outcomes
        if o.error_class is ErrorClass.NO_ACCESS and not o.skipped and o.ciphertext_fp is not None
    ]


def current_key_info(info: KeyInfo | None, key: UserKey) -> KeyInfo | None:
    """``info`` while it is current for ``key`` (checked under the key's ciphertext as it
    is stored now), else None: a re-saved key is unknown until checked again."""
    if info is None:
        return None
    try:
        current = info.fingerprint == ciphertext_fingerprint(key.api_key)
    except (AttributeError, TypeError, ValueError):
        return None  # a stored value no fingerprint reads (not text)
    return info if current else None
