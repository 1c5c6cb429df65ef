"""Frozen value objects that flow through a sync: keys, profiles, outcomes, rows, run records."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "ErrorClass",
    "JobState",
    "KeyInfo",
    "LeaseInfo",
    "Outcome",
    "Profile",
    "Reason",
    "RunRecord",
    "RunStatus",
    "StoredUser",
    "TornKey",
    "UserDataRow",
    "UserKey",
    "key_fingerprint",
]


def key_fingerprint(plaintext: str) -> str:
    """Return a short, stable, non-reversible label for a key (12 hex digits of SHA-256).

    Args:
        plaintext: the decrypted Torn key.

    Returns:
        The first 12 hex digits of ``sha256(plaintext)``; cassettes and logs use it in place
        of the key.
    """
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()[:12]


class TornKey:
    """A decrypted Torn API key whose ``repr`` and ``str`` never show it.

    Call :meth:`reveal` at the one place the key must be sent (the request header).

    >>> k = TornKey("abcdEFGH12345678")
    >>> k
    TornKey(fp=...)
    """

    __slots__ = ("_fingerprint", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._fingerprint = key_fingerprint(value)

    @property
    def fingerprint(self) -> str:
        """The key's fingerprint (see :func:`key_fingerprint`)."""
        return self._fingerprint

    def reveal(self) -> str:
        """Return the plaintext key; only the request builder should call this."""
        return self._value

    def __repr__(self) -> str:
        return f"TornKey(fp={self._fingerprint})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TornKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __reduce__(self) -> Any:
        # Refuse to be pickled: a pickle would carry the plaintext into caches or queues.
        raise TypeError("TornKey cannot be pickled")


class ErrorClass(enum.StrEnum):
    """How sentinel-kit reacts to a failed Torn request (README, "How a sync works")."""

    KEY_DEAD = "key_dead"  # 1, 2: never retry; park until the ciphertext changes
    KEY_SUSPENDED = "key_suspended"  # 10, 13, 18: park for hours
    OWNER_THROTTLED = "owner_throttled"  # 5, 14: fail this run, cool down
    GLOBAL = "global"  # 8, 9, 24, HTTP 429, Cloudflare challenge: abort the run
    TRANSIENT = "transient"  # 0, 12, 15, 17, timeouts, network, 5xx, non-JSON: retry
    REQUEST_BUG = "request_bug"  # anything else: fail the item, no retry
    #: 16 (the key's access level is too low for this endpoint): not dead; marked for this
    #: sync only, until the key is re-saved.
    NO_ACCESS = "no_access"


class Reason(enum.StrEnum):
    """Why one key was not synced (the ``reason`` of a report failure)."""

    DECRYPT_ERROR = "decrypt_error"
    KEY_INVALID = "key_invalid"
    KEY_SUSPENDED = "key_suspended"
    RATE_LIMITED = "rate_limited"
    TORN_ERROR = "torn_error"
    TIMEOUT = "timeout"
    NETWORK = "network"
    BAD_RESPONSE = "bad_response"
    ABORTED = "aborted"
    #: An unexpected error of ours while processing this one key (a bug): the key fails,
    #: the run goes on.
    INTERNAL = "internal"


class RunStatus(enum.StrEnum):
    """How a run ended."""

    OK = "ok"
    PARTIAL = "partial"
    ABORTED = "aborted"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"

    @property
    def exit_code(self) -> int:
        """The CLI exit code for this status: 0 ok or skipped, 1 partial, 3 otherwise."""
        return {"ok": 0, "skipped": 0, "partial": 1}.get(self.value, 3)


@dataclass(frozen=True, slots=True)
class UserKey:
    """One row of ``user_keys``: the ciphertext is never decrypted here."""

    id: str
    user_id: str
    api_key: str = field(repr=False)
    created_at: str | None = None
    #: The unit a per-faction run asks this key for (the faction id as text); None: its
    #: user, as every per-user run.
    unit_id: str | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    """What sentinel-kit keeps of a Torn profile."""

    player_id: int
    name: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one key in one run: a profile, or a failure reason."""

    key_id: str
    user_id: str
    profile: Profile | None = None
    reason: Reason | None = None
    torn_code: int | None = None
    detail: str | None = None
    key_created_at: str | None = None
    #: True when key health parked the key and no request was sent.
    skipped: bool = False
    #: How the failure is handled (None on success and for decrypt errors).
    error_class: ErrorClass | None = None
    #: Fingerprint of the stored ciphertext, so key health notices a re-saved key.
    ciphertext_fp: str | None = None
    #: Fingerprint of the decrypted key (None when it was never decrypted).
    key_fingerprint: str | None = None
    #: True when a time-boxed run left the key for the next run (no request was sent).
    deferred: bool = False
    #: True when the run ended (deadline, stop, interrupt, a global error, the wrong
    #: secret) before this key's request was sent: a failure of the run, not of the key,
    #: counted in the report's ``not_reached`` rather than listed.
    not_reached: bool = False
    #: The rows a declared sync's ``parse`` made of the answer (column -> value each);
    #: None for a failure.
    rows: tuple[Mapping[str, Any], ...] | None = None
    #: The unit of a per-faction run (the faction id as text); None: the user.
    unit_id: str | None = None

    @property
    def unit(self) -> str:
        """The unit this outcome is for: the faction of a per-faction run, else the user."""
        return self.unit_id if self.unit_id is not None else self.user_id

    @property
    def ok(self) -> bool:
        """True when the key produced a profile (or a declared sync's rows)."""
        return self.profile is not None or self.rows is not None


@dataclass(frozen=True, slots=True)
class UserDataRow:
    """One row to upsert into ``user_data``."""

    user_id: str
    name: str
    player_id: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One row of ``sentinel_runs``: a run of a job, for a scheduled tick when the daemon ran it."""

    run_id: str
    job: str
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    scheduled_for: datetime | None = None
    holder: str | None = None
    fence: int | None = None
    keys_total: int = 0
    synced: int = 0
    failed: int = 0
    skipped: int = 0
    written: int = 0
    error: str | None = None
    deferred: int = 0
    #: False for runs the health rule ignores (re-runs of a few users, interrupted runs).
    counted: bool = True
    #: The skipped keys by why (``{"parked": n, "access": m}``), when known: kept in the
    #: run history from migration 018 on; None for runs recorded before it.
    skipped_by: Mapping[str, int] | None = None
    #: Users the run left not attempted within one interval of the schedule (its sync and
    #: shard); None for dry runs, re-runs of a few users and databases before migration 017.
    stale_users: int | None = None
    #: The oldest attempt of any user (of the sync and shard) when the run ended; None as
    #: for ``stale_users``, or when no user was ever attempted.
    oldest_attempt_at: datetime | None = None
    #: What the run's counts count (``user``, ``faction`` or ``key``); None for runs
    #: recorded before migration 018.
    unit: str | None = None

    @property
    def attempted(self) -> int:
        """Keys the run tried: every key but the parked (skipped) and deferred ones."""
        return self.keys_total - self.skipped - self.deferred

    @property
    def oldest_attempt_age_s(self) -> float | None:
        """Seconds between the oldest attempt and the run's end (None when either is unknown)."""
        if self.oldest_attempt_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.oldest_attempt_at).total_seconds(), 3)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form of ``sentinel-kit runs --json`` (ISO-8601 times)."""
        return {
            "run_id": self.run_id,
            "job": self.job,
            "scheduled_for": self.scheduled_for.isoformat() if self.scheduled_for else None,
            "holder": self.holder,
            "fence": self.fence,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "keys_total": self.keys_total,
            "synced": self.synced,
            "failed": self.failed,
            "skipped": self.skipped,
            "deferred": self.deferred,
            "written": self.written,
            # An ok run's stored error is a note (a per-faction run that knew no faction
            # yet): `error` stays a cause of runs that did not end well, as in the report.
            "error": None if self.status == "ok" else self.error,
            "note": self.error if self.status == "ok" else None,
            "counted": self.counted,
            "skipped_by": dict(self.skipped_by) if self.skipped_by is not None else None,
            "stale_users": self.stale_users,
            "oldest_attempt_at": (
                self.oldest_attempt_at.isoformat() if self.oldest_attempt_at else None
            ),
            "oldest_attempt_age_s": self.oldest_attempt_age_s,
            "unit": self.unit,
        }


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """Who holds a lease, under which fencing token, until when."""

    name: str
    holder: str | None
    fence: int
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobState:
    """One row of ``sentinel_jobs``: what the daemon said about a job, and its alert state.

    Attributes:
        job: the job (lease) name, e.g. ``sync-users`` or ``sync-users:0/3``.
        schedule: the schedule as the daemon runs it (``cron:0 * * * *``, ``interval:60``).
        timeout_s: the daemon's ``--timeout`` for the job.
        first_tick: the first tick any daemon scheduled for the job; a job with no counted
            run yet is healthy until ``first_tick + timeout``.
        alert_state: ``healthy`` or ``unhealthy``, as last announced by an alert.
        alert_as_of: when the run (or grace period) that the alert state judged ended.
        alert_changed_at: when the alert state last changed.
    """

    job: str
    schedule: str | None = None
    timeout_s: float | None = None
    first_tick: datetime | None = None
    alert_state: str = "healthy"
    alert_as_of: datetime | None = None
    alert_changed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredUser:
    """One ``user_data`` row as stored (the app's own rows may hold NULLs)."""

    user_id: str
    name: str | None
    player_id: int | None
    updated_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (ISO-8601 time)."""
        return {
            "user_id": self.user_id,
            "name": self.name,
            "player_id": self.player_id,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What one key can do, as Torn's ``/key/info`` answered it (no key material).

    A KeyInfo is *current* for a key while ``fingerprint`` equals the fingerprint of the
    key's stored ciphertext (``ciphertext_fingerprint``): a re-saved key is unknown again.

    Attributes:
        key_id: the ``user_keys`` id.
        fingerprint: the fingerprint of the ciphertext that was checked.
        access_level: Torn's ``info.access.level``: 1 public, 2 minimal, 3 limited, 4 full
            (0 unknown).
        access_type: Torn's ``info.access.type`` ("Limited Access", "Custom", ...).
        player_id: the key owner's player id (``info.user.id``).
        faction_id: the owner's faction (``info.user.faction_id``); None outside a faction.
        faction_access: whether the owner has faction API access (``info.access.faction``).
        checked_at: when Torn answered.
    """

    key_id: str
    fingerprint: str
    access_level: int
    access_type: str
    player_id: int | None
    faction_id: int | None
    faction_access: bool
    checked_at: datetime
