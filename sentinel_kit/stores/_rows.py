"""Rows to values and back, once for every backend: column lists, times, mappers (pure).

Every backend reads rows as mappings of column name to value (SQLite and Postgres zip
their tuples with the column lists here; PostgREST answers JSON objects) and writes the
mappings these functions build, so a column is named and converted in one place.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import ConfigError, ConnectionLost, SchemaMissing, StoreError
from .._key_health import HealthState, KeyHealth, KeyRecord, ciphertext_fingerprint
from .._models import JobState, KeyInfo, RunRecord, StoredUser, UserDataRow, UserKey
from .._secrets import redact

if TYPE_CHECKING:
    from .._report import SyncReport
    from ._protocols import CiphertextChange

__all__ = [
    "BACKLOG_COLUMNS",
    "HEALTH_COLUMNS",
    "JOB_COLUMNS",
    "KEY_COLUMNS",
    "KEY_INFO_COLUMNS",
    "OPTIONAL_RUN_COLUMNS",
    "RECORD_COLUMNS",
    "RUN_COLUMNS",
    "SKIP_COLUMNS",
    "USER_COLUMNS",
    "backlog_row",
    "ciphertext_change_row",
    "health_row",
    "iso",
    "job_state",
    "key_health",
    "key_info",
    "key_info_row",
    "key_record",
    "lacking_note",
    "numeric_id",
    "parse_time",
    "quoted",
    "record_row",
    "run_record",
    "run_row",
    "skips_row",
    "stored_user",
    "user_data_row",
    "user_key",
    "user_key_row",
    "with_run_columns",
    "writable_table",
]

_T = TypeVar("_T")

KEY_COLUMNS = ("id", "user_id", "api_key", "created_at")
USER_COLUMNS = ("user_id", "name", "player_id", "updated_at")
RUN_COLUMNS = (
    "run_id",
    "job",
    "status",
    "started_at",
    "finished_at",
    "scheduled_for",
    "holder",
    "fence",
    "keys_total",
    "synced",
    "failed",
    "skipped",
    "written",
    "error",
    "deferred",
    "counted",
)
#: The backlog a run left (migration 017): written when the run measured it, read when the
#: table has the columns.
BACKLOG_COLUMNS = ("stale_users", "oldest_attempt_at")
#: Why a run's keys were skipped and what its counts count (migration 018): written with
#: every run, read when the table has the columns.
SKIP_COLUMNS = ("skipped_parked", "skipped_access", "unit")
#: The column groups of ``sentinel_runs`` a database before their migration lacks.
OPTIONAL_RUN_COLUMNS = (BACKLOG_COLUMNS, SKIP_COLUMNS)
HEALTH_COLUMNS = (
    "key_id",
    "user_id",
    "fingerprint",
    "state",
    "last_code",
    "since",
    "retry_after",
    "reason",
)
RECORD_COLUMNS = (
    "key_id",
    "user_id",
    "fingerprint",
    "succeeded_at",
    "strikes",
    "first_strike_at",
    "last_strike_at",
)
KEY_INFO_COLUMNS = (
    "key_id",
    "fingerprint",
    "access_level",
    "access_type",
    "player_id",
    "faction_id",
    "faction_access",
    "checked_at",
)
JOB_COLUMNS = (
    "job",
    "schedule",
    "timeout_s",
    "first_tick",
    "alert_state",
    "alert_as_of",
    "alert_changed_at",
)
_EPOCH = datetime.fromtimestamp(0, UTC)


def parse_time(value: Any) -> datetime | None:
    """A stored time as an aware UTC datetime: a datetime (naive means UTC), ISO text
    (``Z`` allowed), a Unix timestamp, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    else:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _lenient_time(value: Any) -> datetime | None:
    """Like :func:`parse_time`, but an unreadable value in the app's own table is None."""
    try:
        return parse_time(value)
    except (TypeError, ValueError):
        return None


def iso(value: Any) -> str | None:
    """A stored time as UTC ISO-8601 text (see :func:`parse_time`)."""
    parsed = parse_time(value)
    return parsed.isoformat() if parsed else None


def _iso_or_none(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def numeric_id(value: str) -> bool:
    """True when an id is a whole number, so an integer ``user_keys.id`` column can hold it
    (a new key's UUID cannot: the column's own default numbers that key)."""
    return value.strip().removeprefix("-").isdigit()


def user_key(row: Mapping[str, Any]) -> UserKey:
    """A ``user_keys`` row; ids of any column type become text."""
    return UserKey(
        id=str(row["id"]),
        user_id=str(row["user_id"]),
        api_key=row["api_key"],
        created_at=_iso_or_none(_lenient_time(row.get("created_at"))),
    )


def user_key_row(key: UserKey) -> dict[str, Any]:
    """The values of a ``user_keys`` row to insert."""
    return {
        "id": key.id,
        "user_id": key.user_id,
        "api_key": key.api_key,
        "created_at": parse_time(key.created_at),
    }


def stored_user(row: Mapping[str, Any]) -> StoredUser:
    """A ``user_data`` row as stored."""
    pid = row.get("player_id")
    return StoredUser(
        user_id=str(row["user_id"]),
        name=row.get("name"),
        player_id=int(pid) if pid is not None else None,
        updated_at=_lenient_time(row.get("updated_at")),
    )


def user_data_row(row: UserDataRow) -> dict[str, Any]:
    """The values of a ``user_data`` row to upsert (``updated_at`` in UTC)."""
    return {
        "user_id": row.user_id,
        "name": row.name,
        "player_id": row.player_id,
        "updated_at": row.updated_at.astimezone(UTC),
    }


def run_record(row: Mapping[str, Any]) -> RunRecord:
    """A ``sentinel_runs`` row."""
    counted = row.get("counted")
    return RunRecord(
        run_id=str(row["run_id"]),
        job=str(row["job"]),
        status=str(row["status"]),
        started_at=parse_time(row["started_at"]) or _EPOCH,
        finished_at=parse_time(row.get("finished_at")),
        scheduled_for=parse_time(row.get("scheduled_for")),
        holder=row.get("holder"),
        fence=int(row["fence"]) if row.get("fence") is not None else None,
        keys_total=int(row.get("keys_total") or 0),
        synced=int(row.get("synced") or 0),
        failed=int(row.get("failed") or 0),
        skipped=int(row.get("skipped") or 0),
        written=int(row.get("written") or 0),
        error=row.get("error"),
        deferred=int(row.get("deferred") or 0),
        counted=True if counted is None else bool(counted),
        stale_users=int(row["stale_users"]) if row.get("stale_users") is not None else None,
        oldest_attempt_at=parse_time(row.get("oldest_attempt_at")),
        skipped_by=_skipped_by(row),
        unit=str(row["unit"]) if row.get("unit") is not None else None,
    )


def _skipped_by(row: Mapping[str, Any]) -> dict[str, int] | None:
    """``{"parked": n, "access": m}`` of a row from migration 018 on; None before it."""
    parked, access = row.get("skipped_parked"), row.get("skipped_access")
    if parked is None and access is None:
        return None
    return {"parked": int(parked or 0), "access": int(access or 0)}


def run_row(
    report: SyncReport,
    *,
    scheduled_for: datetime | None,
    holder: str | None,
    fence: int | None,
) -> dict[str, Any]:
    """The values of a finished run's ``sentinel_runs`` row."""
    return {
        "run_id": report.run_id,
        "job": report.job,
        "status": report.status.value,
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "scheduled_for": scheduled_for,
        "holder": holder,
        "fence": fence,
        "keys_total": report.keys_total,
        "synced": report.synced,
        "failed": report.failed,
        "skipped": report.skipped,
        "written": report.written,
        # A job's error may quote a secret: the stored line never does.
        "error": redact(report.error) if report.error else report.error,
        "deferred": report.deferred,
        "counted": report.counted,
    }


def backlog_row(report: SyncReport) -> dict[str, Any]:
    """The backlog columns of a run's row: empty when the run measured no backlog (so a
    database before migration 017 is written as before)."""
    if report.stale_users is None:
        return {}
    return {"stale_users": report.stale_users, "oldest_attempt_at": report.oldest_attempt_at}


def skips_row(report: SyncReport) -> dict[str, Any]:
    """The columns of migration 018 of a run's row: why its keys were skipped, its unit."""
    return {
        "skipped_parked": int(report.skipped_by.get("parked", 0)),
        "skipped_access": int(report.skipped_by.get("access", 0)),
        "unit": report.unit,
    }


def lacking_note(lacking: Sequence[str], exc: Exception, fix: str) -> str:
    """The warning of a run recorded without the columns its table lacks."""
    what = [
        name
        for name, group in (("backlog", BACKLOG_COLUMNS), ("skip", SKIP_COLUMNS))
        if set(group) & set(lacking)
    ]
    return (
        f"sentinel_runs has no {' or '.join(what)} columns ({exc}): the run is recorded "
        f"without them; {fix}"
    )


async def with_run_columns(
    attempt: Callable[[tuple[str, ...]], Awaitable[_T]],
    probe: Callable[[tuple[str, ...]], Awaitable[object]],
    *,
    warn: Callable[[str], None] | None = None,
    fix: str = "",
) -> _T:
    """``attempt(())`` on ``sentinel_runs`` with every optional column; after a store error,
    ``attempt(lacking)`` without the columns a database before migration 017 or 018 lacks.

    ``probe(group)`` reads one group of :data:`OPTIONAL_RUN_COLUMNS`: a store error other
    than a missing schema or a lost connection means the table lacks that group. When it
    lacks none, the first error was something else and is raised. ``warn``, when given, is
    told the :func:`lacking_note` (ending with ``fix``) before the second attempt.
    """
    try:
        return await attempt(())
    except StoreError as exc:
        lacking = await _lacking_run_columns(probe)
        if not lacking:
            raise
        if warn is not None:
            warn(lacking_note(lacking, exc, fix))
    return await attempt(lacking)


async def _lacking_run_columns(
    probe: Callable[[tuple[str, ...]], Awaitable[object]],
) -> tuple[str, ...]:
    """The optional columns ``sentinel_runs`` lacks, by probing each group of them."""
    lacking: list[str] = []
    for group in OPTIONAL_RUN_COLUMNS:
        try:
            await probe(group)
        except (SchemaMissing, ConnectionLost):
            raise
        except StoreError:
            lacking += group
    return tuple(lacking)


def key_health(row: Mapping[str, Any]) -> KeyHealth:
    """A ``sentinel_key_health`` row."""
    return KeyHealth(
        key_id=str(row["key_id"]),
        user_id=str(row["user_id"]),
        fingerprint=row["fingerprint"],
        state=HealthState(row["state"]),
        last_code=row.get("last_code"),
        since=parse_time(row["since"]) or _EPOCH,
        retry_after=parse_time(row.get("retry_after")),
        reason=row.get("reason"),
    )


def health_row(health: KeyHealth) -> dict[str, Any]:
    """The values of a ``sentinel_key_health`` row to upsert."""
    return {
        "key_id": health.key_id,
        "user_id": health.user_id,
        "fingerprint": health.fingerprint,
        "state": health.state.value,
        "last_code": health.last_code,
        "since": health.since,
        "retry_after": health.retry_after,
        "reason": health.reason,
    }


def key_record(row: Mapping[str, Any]) -> KeyRecord:
    """A ``sentinel_key_record`` row."""
    return KeyRecord(
        key_id=str(row["key_id"]),
        user_id=str(row["user_id"]),
        fingerprint=str(row["fingerprint"]),
        succeeded_at=parse_time(row.get("succeeded_at")),
        strikes=int(row.get("strikes") or 0),
        first_strike_at=parse_time(row.get("first_strike_at")),
        last_strike_at=parse_time(row.get("last_strike_at")),
    )


def record_row(record: KeyRecord) -> dict[str, Any]:
    """The values of a ``sentinel_key_record`` row to upsert (the whole row)."""
    return {
        "key_id": record.key_id,
        "user_id": record.user_id,
        "fingerprint": record.fingerprint,
        "succeeded_at": record.succeeded_at,
        "strikes": record.strikes,
        "first_strike_at": record.first_strike_at,
        "last_strike_at": record.last_strike_at,
    }


def key_info(row: Mapping[str, Any]) -> KeyInfo:
    """A ``sentinel_key_info`` row (SQLite's 0/1 and Postgres' booleans alike)."""
    player, faction = row.get("player_id"), row.get("faction_id")
    return KeyInfo(
        key_id=str(row["key_id"]),
        fingerprint=str(row["fingerprint"]),
        access_level=int(row.get("access_level") or 0),
        access_type=str(row.get("access_type") or ""),
        player_id=int(player) if player is not None else None,
        faction_id=int(faction) if faction else None,
        faction_access=bool(row.get("faction_access")),
        checked_at=parse_time(row["checked_at"]) or _EPOCH,
    )


def key_info_row(info: KeyInfo) -> dict[str, Any]:
    """The values of a ``sentinel_key_info`` row to upsert (the whole row)."""
    return {
        "key_id": info.key_id,
        "fingerprint": info.fingerprint,
        "access_level": info.access_level,
        "access_type": info.access_type,
        "player_id": info.player_id,
        "faction_id": info.faction_id,
        "faction_access": info.faction_access,
        "checked_at": info.checked_at,
    }


def job_state(row: Mapping[str, Any]) -> JobState:
    """A ``sentinel_jobs`` row."""
    timeout = row.get("timeout_s")
    return JobState(
        job=str(row["job"]),
        schedule=row.get("schedule"),
        timeout_s=float(timeout) if timeout is not None else None,
        first_tick=parse_time(row.get("first_tick")),
        alert_state=str(row.get("alert_state") or "healthy"),
        alert_as_of=parse_time(row.get("alert_as_of")),
        alert_changed_at=parse_time(row.get("alert_changed_at")),
    )


def ciphertext_change_row(change: CiphertextChange) -> dict[str, str]:
    """One element of ``sentinel_replace_ciphertexts``'s JSON argument: the key, its old and
    new ciphertexts and their fingerprints (key health is keyed by them)."""
    return {
        "key_id": change.key_id,
        "old": change.old,
        "new": change.new,
        "old_fp": ciphertext_fingerprint(change.old),
        "new_fp": ciphertext_fingerprint(change.new),
    }


_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def quoted(name: str) -> str:
    """Return ``name`` double-quoted as an SQL identifier, once it is known to be one.

    Raises:
        ConfigError: ``name`` is not a lower-case identifier (so it never reaches SQL).
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ConfigError(f"{name!r} is not a valid table or column name")
    return f'"{name}"'


def writable_table(name: str) -> str:
    """Return ``name`` quoted, if a sync may write it (not the keys, not our own tables).

    Raises:
        ConfigError: it is not an identifier, or a table no sync may write.
    """
    if name == "user_keys" or name.startswith("sentinel_"):
        raise ConfigError(f"a sync may not write {name}: choose a table of its own")
    return quoted(name)
