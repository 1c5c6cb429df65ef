"""Frozen value objects that flow through a sync: keys, profiles, outcomes, rows and reports."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "Change",
    "ChangeKind",
    "ErrorClass",
    "Failure",
    "LeaseInfo",
    "Outcome",
    "Profile",
    "Reason",
    "RunRecord",
    "RunStatus",
    "SyncReport",
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
    """How sentinel-kit reacts to a failed Torn request (DESIGN.md, "The Torn API")."""

    KEY_DEAD = "key_dead"  # 1, 2, 16: never retry; park until the ciphertext changes
    KEY_SUSPENDED = "key_suspended"  # 10, 13, 18: park for hours
    OWNER_THROTTLED = "owner_throttled"  # 5, 14: fail this run, cool down
    GLOBAL = "global"  # 8, 9, 24, HTTP 429, Cloudflare challenge: abort the run
    TRANSIENT = "transient"  # 0, 12, 15, 17, timeouts, network, 5xx, non-JSON: retry
    REQUEST_BUG = "request_bug"  # anything else: fail the item, no retry


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


class RunStatus(enum.StrEnum):
    """How a run ended."""

    OK = "ok"
    PARTIAL = "partial"
    ABORTED = "aborted"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"

    @property
    def exit_code(self) -> int:
        """The CLI exit code of DESIGN.md for this status."""
        return {"ok": 0, "skipped": 0, "partial": 1}.get(self.value, 3)


@dataclass(frozen=True, slots=True)
class UserKey:
    """One row of ``user_keys``: the ciphertext is never decrypted here."""

    id: str
    user_id: str
    api_key: str = field(repr=False)
    created_at: str | None = None


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

    @property
    def ok(self) -> bool:
        """True when the key produced a profile."""
        return self.profile is not None


@dataclass(frozen=True, slots=True)
class UserDataRow:
    """One row to upsert into ``user_data``."""

    user_id: str
    name: str
    player_id: int
    updated_at: datetime


class ChangeKind(enum.StrEnum):
    """What an upsert does to a ``user_data`` row (shown by dry runs)."""

    NEW = "new"
    NAME_CHANGED = "name_changed"
    PLAYER_ID_CHANGED = "player_id_changed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class Change:
    """The difference between a would-be row and the current ``user_data`` row."""

    user_id: str
    kind: ChangeKind
    name: str
    player_id: int
    old_name: str | None = None
    old_player_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in reports."""
        return {
            "user_id": self.user_id,
            "change": self.kind.value,
            "name": self.name,
            "player_id": self.player_id,
            "old_name": self.old_name,
            "old_player_id": self.old_player_id,
        }


@dataclass(frozen=True, slots=True)
class Failure:
    """One key that was not synced, as listed in a report."""

    user_id: str
    key_id: str
    reason: Reason
    torn_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form of DESIGN.md's report contract."""
        return {
            "user_id": self.user_id,
            "key_id": self.key_id,
            "reason": self.reason.value,
            "torn_code": self.torn_code,
        }


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one run did; ``to_dict()`` is the JSON report contract of DESIGN.md."""

    run_id: str
    job: str
    status: RunStatus
    started_at: datetime
    finished_at: datetime
    keys_total: int
    synced: int
    failed: int
    skipped: int
    written: int
    error: str | None = None
    failures: tuple[Failure, ...] = ()
    dry_run: bool = False
    changes: tuple[Change, ...] = ()
    #: Statements that wrote ``user_data`` (about written / chunk size).
    write_calls: int = 0

    @property
    def duration_s(self) -> float:
        """Wall-clock seconds between start and finish."""
        return round((self.finished_at - self.started_at).total_seconds(), 3)

    @property
    def exit_code(self) -> int:
        """The CLI exit code for this report."""
        return self.status.exit_code

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON report (DESIGN.md, "Contracts")."""
        data: dict[str, Any] = {
            "run_id": self.run_id,
            "job": self.job,
            "status": self.status.value,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_s": self.duration_s,
            "keys_total": self.keys_total,
            "synced": self.synced,
            "failed": self.failed,
            "skipped": self.skipped,
            "written": self.written,
            "error": self.error,
            "failures": [f.to_dict() for f in self.failures],
            "dry_run": self.dry_run,
            "write_calls": self.write_calls,
        }
        if self.dry_run:
            data["changes"] = [c.to_dict() for c in self.changes]
        return data

    def summary(self) -> str:
        """One line: status, counts and duration (the log line of a finished run)."""
        line = (
            f"{self.status.value} ({self.keys_total} keys, {self.synced} synced, "
            f"{self.failed} failed, {self.skipped} skipped, {self.written} written) "
            f"in {self.duration_s:.2f}s"
        )
        return f"{line}; {self.error}" if self.error else line

    def render_text(self) -> str:
        """Return a short human-readable summary, one failure per line."""
        lines = [
            f"run {self.run_id} ({self.job}): {self.status.value}"
            f"{' (dry run)' if self.dry_run else ''} in {self.duration_s:.2f}s",
            f"  keys: {self.keys_total} total, {self.synced} synced, {self.failed} failed, "
            f"{self.skipped} skipped; rows written: {self.written}",
        ]
        if self.error:
            lines.append(f"  error: {self.error}")
        for f in self.failures:
            code = f" (torn code {f.torn_code})" if f.torn_code is not None else ""
            lines.append(f"  failed: user {f.user_id} key {f.key_id}: {f.reason.value}{code}")
        for c in self.changes:
            lines.append(
                f"  would write: user {c.user_id}: {c.kind.value} -> {c.name} [{c.player_id}]"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render_text()

    def _repr_html_(self) -> str:
        from .display import html_table

        summary = html_table(
            [
                "run",
                "job",
                "status",
                "keys",
                "synced",
                "failed",
                "skipped",
                "written",
                "seconds",
                "error",
            ],
            [
                [
                    self.run_id[:8],
                    self.job,
                    self.status.value + (" (dry run)" if self.dry_run else ""),
                    self.keys_total,
                    self.synced,
                    self.failed,
                    self.skipped,
                    self.written,
                    f"{self.duration_s:.2f}",
                    self.error or "",
                ]
            ],
            caption="sync report",
        )
        parts = [summary]
        if self.failures:
            parts.append(
                html_table(
                    ["user_id", "key_id", "reason", "torn_code"],
                    [[f.user_id, f.key_id, f.reason.value, f.torn_code] for f in self.failures],
                    caption="failures",
                )
            )
        if self.changes:
            parts.append(
                html_table(
                    ["user_id", "change", "name", "player_id", "old_name", "old_player_id"],
                    [
                        [c.user_id, c.kind.value, c.name, c.player_id, c.old_name, c.old_player_id]
                        for c in self.changes
                    ],
                    caption="would change",
                )
            )
        return "".join(parts)

    def to_pandas(self, what: str = "failures") -> Any:
        """Return the failures (or, with ``what="changes"``, a dry run's changes) as a
        pandas DataFrame.

        Raises:
            ConfigError: pandas is not installed (the message says how to install it).
        """
        from .display import to_dataframe

        if what == "changes":
            return to_dataframe(
                [c.to_dict() for c in self.changes],
                ["user_id", "change", "name", "player_id", "old_name", "old_player_id"],
            )
        return to_dataframe(
            [f.to_dict() for f in self.failures], ["user_id", "key_id", "reason", "torn_code"]
        )


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
            "written": self.written,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """Who holds a lease, under which fencing token, until when."""

    name: str
    holder: str | None
    fence: int
    expires_at: datetime | None
