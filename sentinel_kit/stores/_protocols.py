"""What a database must offer, split by concern: keys, user data, runs and leases, key health,
job state.

:class:`Store` is all five plus opening, closing and migrating. The sync reads keys and
writes user data and key health; the daemon claims leases, records runs and registers its
jobs; ``status``, ``/healthz`` and alerts read the run history and the job state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

from .._key_health import KeyAccess, KeyHealth, KeyRecord
from .._models import (
    JobState,
    KeyInfo,
    LeaseInfo,
    RunRecord,
    StoredUser,
    UserDataRow,
    UserKey,
)
from .._security import SecurityFacts

if TYPE_CHECKING:
    from .._report import SyncReport

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_PAGE_SIZE",
    "AttemptStats",
    "CiphertextChange",
    "CursorStore",
    "Fence",
    "InspectableStore",
    "JobStateStore",
    "KeyAccessStore",
    "KeyHealthStore",
    "KeyInfoStore",
    "KeyStore",
    "RunStore",
    "Store",
    "TableStore",
    "UserDataStore",
    "abandon_note",
    "dedupe_rows",
]

#: Rows per upsert statement.
DEFAULT_CHUNK_SIZE = 500
#: Keys per read. Supabase caps a response at 1000 rows, so never ask for more.
DEFAULT_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Fence:
    """A lease tenure: writes carrying it are refused once another holder claimed the lease."""

    lease: str
    token: int


@dataclass(frozen=True, slots=True)
class CiphertextChange:
    """A key re-encrypted under a new secret (``keys rotate``): store ``new`` in place of
    ``old``, but only while the key still holds ``old``."""

    key_id: str
    old: str = field(repr=False)
    new: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AttemptStats:
    """The backlog: how far behind the sync is with the users of ``user_keys``.

    Attributes:
        users: distinct users in ``user_keys`` (of the shard, when one was asked for).
        stale_users: those not attempted since the ``since`` asked for (never attempted
            ones included).
        never_attempted: those no run ever attempted.
        oldest_attempt_at: the oldest last attempt among them (None when none was ever
            attempted).
    """

    users: int
    stale_users: int
    never_attempted: int
    oldest_attempt_at: datetime | None


@runtime_checkable
class KeyStore(Protocol):
    """``user_keys``: the app's encrypted keys, and when each user was last attempted
    (``sentinel_user_attempts``)."""

    async def count_keys(self) -> int:
        """Return how many rows ``user_keys`` holds."""
        ...

    def iter_key_pages(
        self,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        shard: tuple[int, int] | None = None,
        attempted_before: datetime | None = None,
        sync: str | None = None,
    ) -> AsyncIterator[list[UserKey]]:
        """Yield ``user_keys`` in pages of at most ``page_size``, in fair order.

        With ``sync`` (a declared sync's name), the order is that sync's own attempts
        (``sentinel_unit_attempts``); without, sync-users' (``sentinel_user_attempts``).

        The order is each user's last attempt (never attempted first, then the oldest),
        then ``user_id``, then the key's id, ids compared as text; so each user's keys are
        adjacent. Pages follow each other by keyset (never by offset), so attempts written
        while the pages are read skip no one.

        Args:
            page_size: keys per page at most.
            shard: ``(i, n)``: only the users whose :func:`~sentinel_kit.shard_of` is ``i``
                (filtered in the query).
            attempted_before: only users never attempted or last attempted before this
                time (a run passes its start, so a user it reached does not come round
                again in the same run).
        """
        ...

    async def record_attempts(
        self,
        user_ids: Sequence[str],
        *,
        at: datetime,
        job: str | None = None,
        fence: Fence | None = None,
        sync: str | None = None,
    ) -> int:
        """Record that these users were attempted at ``at`` (by ``job``); return how many.
        With ``sync``, as that declared sync's own attempts, which order only its runs.

        With ``fence``, written only while the fence is still the lease's current token,
        checked in the same transaction; otherwise :class:`~sentinel_kit.StaleFence`.
        """
        ...

    async def load_unit_attempts(self, sync: str) -> dict[str, datetime]:
        """Return when each unit of ``sync`` was last attempted (``sentinel_unit_attempts``),
        by unit id: a per-faction sync's factions, and its key uses (``sync`` + ``:keys``)."""
        ...

    async def attempt_stats(
        self, *, since: datetime, shard: tuple[int, int] | None = None, sync: str | None = None
    ) -> AttemptStats:
        """Return the backlog of the users in ``user_keys`` (of ``shard`` when given):
        how many were not attempted since ``since``, and the oldest attempt; by sync-users'
        attempts, or with ``sync`` by that declared sync's own (``sentinel_unit_attempts``)."""
        ...

    async def add_key(self, key: UserKey) -> str:
        """Insert one ``user_keys`` row (the ciphertext is stored as given); return its id.

        When ``user_keys.id`` is an integer column and ``key.id`` is not a number, the
        column's default generates the id.
        """
        ...

    async def add_keys(self, keys: Sequence[UserKey]) -> int:
        """Insert many ``user_keys`` rows in chunks; return how many."""
        ...

    async def replace_ciphertexts(self, changes: Sequence[CiphertextChange]) -> int:
        """Swap re-encrypted ciphertexts in, in one transaction; return how many.

        A key is replaced only while it still holds ``change.old`` (an app that re-saved
        the key meanwhile keeps its value), and a parked key's health row moves to the new
        ciphertext's fingerprint in the same transaction, so it stays parked.
        """
        ...


@runtime_checkable
class UserDataStore(Protocol):
    """``user_data``: one row per user, written by the sync."""

    async def upsert_user_data(
        self, rows: Sequence[UserDataRow], *, fence: Fence | None = None
    ) -> int:
        """Insert or update rows by ``user_id`` (deduplicated, chunked); return rows written.

        With ``fence``, each chunk is written only if the fence is still the lease's current
        token, checked in the same transaction; otherwise :class:`~sentinel_kit.StaleFence`.
        """
        ...

    async def fetch_user_data(self, user_ids: Sequence[str]) -> dict[str, StoredUser]:
        """Return the current ``user_data`` rows of these users (missing ones are absent)."""
        ...

    async def list_user_data(self, *, limit: int = 100) -> list[StoredUser]:
        """Return up to ``limit`` ``user_data`` rows ordered by user_id."""
        ...


@runtime_checkable
class TableStore(Protocol):
    """Any declared table: the rows of a sync other than the user sync."""

    async def upsert_rows(
        self,
        table: str,
        key: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        *,
        fence: Fence | None = None,
    ) -> int:
        """Insert or update rows of ``table`` on the ``key`` columns, in chunks; return rows
        written. Every row has the same columns; names are validated and quoted, never taken
        as SQL. Fenced like :meth:`UserDataStore.upsert_user_data`.

        Raises:
            ConfigError: a name is not an identifier, or names a table no sync may write
                (``user_keys``, sentinel-kit's own).
            StoreDataError: the database refused a value.
        """
        ...

    async def replace_rows(
        self,
        table: str,
        key: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        *,
        unit_column: str,
        unit: str,
        fence: Fence | None = None,
    ) -> int:
        """Replace one unit's rows of ``table`` (a faction's roster): upsert ``rows`` on
        ``key`` and delete the unit's other rows (``unit_column`` = ``unit``, compared as
        text), in one fenced transaction; return rows written. No rows: nothing is written
        or deleted (an empty answer never empties a unit).

        Raises:
            ConfigError: a bad name, a table no sync may write, or ``unit_column`` not a key
                column.
            StoreDataError: the database refused a value, or a row is not of ``unit``.
        """
        ...

    async def list_rows(
        self,
        table: str,
        *,
        order_by: Sequence[str],
        limit: int = 100,
        users: Sequence[str] | None = None,
        unit_column: str = "user_id",
    ) -> list[dict[str, Any]]:
        """Return up to ``limit`` rows of a declared table ordered by ``order_by`` (only the
        rows of ``users``, by ``unit_column``, when given): for the notebook's
        ``job.rows()`` and a dry run's diff (a per-faction table's units are factions)."""
        ...


@runtime_checkable
class RunStore(Protocol):
    """``sentinel_runs`` and ``sentinel_leases``: run history, one run per tick, fencing."""

    async def begin_run(self, record: RunRecord) -> bool:
        """Insert a ``running`` row for a scheduled tick; False when (job, scheduled_for) is
        taken, i.e. another replica already ran or runs this tick."""
        ...

    async def record_run(
        self,
        report: SyncReport,
        *,
        scheduled_for: datetime | None = None,
        holder: str | None = None,
        fence: int | None = None,
    ) -> None:
        """Insert or complete (by run_id) a run's row in ``sentinel_runs``."""
        ...

    async def list_runs(self, *, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Return recent runs, newest first."""
        ...

    async def abandon_runs(self, job: str, *, fence: int, holder: str) -> int:
        """Mark ``running`` rows of ``job`` from older tenures (fence below ``fence``) as
        ``abandoned``: their holder died, and ``holder`` now holds the lease. Return how many."""
        ...

    async def get_lease(self, name: str) -> LeaseInfo | None:
        """Return a lease's current holder, token and expiry (None if never claimed)."""
        ...

    async def claim_lease(self, name: str, holder: str, ttl: float) -> Fence | None:
        """Take lease ``name`` for ``ttl`` seconds; None while another holder's is unexpired."""
        ...

    async def renew_lease(self, fence: Fence, holder: str, ttl: float) -> bool:
        """Extend a lease still held under ``fence``; False when it was lost."""
        ...

    async def release_lease(self, fence: Fence, holder: str) -> bool:
        """Give a lease up; False when it was no longer ours."""
        ...


@runtime_checkable
class KeyAccessStore(Protocol):
    """``sentinel_key_access``: keys without access for one sync (Torn code 16)."""

    async def load_key_access(self, sync: str) -> dict[str, str]:
        """Return the keys marked for ``sync``: key id -> the ciphertext fingerprint it was
        marked under (empty when the table is not there yet: migration 013)."""
        ...

    async def save_key_access(self, sync: str, marks: Sequence[KeyAccess]) -> None:
        """Mark keys for ``sync`` (upserted on key id and sync)."""
        ...


@runtime_checkable
class KeyInfoStore(Protocol):
    """``sentinel_key_info``: what each key can do, as Torn's ``/key/info`` answered."""

    async def load_key_info(self) -> dict[str, KeyInfo]:
        """Return every key's info, by key id (empty when the table is not there yet:
        migration 014). Callers compare ``fingerprint`` with the key's ciphertext
        fingerprint: a re-saved key's info is not current."""
        ...

    async def save_key_info(self, infos: Sequence[KeyInfo], *, fence: Fence | None = None) -> None:
        """Upsert whole rows on key id, a chunk at a time. With ``fence``, each chunk is
        written only while the fence is still the lease's current token, checked in the same
        transaction; otherwise :class:`~sentinel_kit.StaleFence`."""
        ...

    async def forget_key_info(self, key_ids: Sequence[str]) -> int:
        """Delete these keys' info (to check them again soon: the owner changed faction);
        return how many rows were deleted."""
        ...


@runtime_checkable
class CursorStore(Protocol):
    """``sentinel_cursors``: how far each unit of an incremental sync has read its log."""

    async def load_cursors(self, sync: str) -> dict[str, int]:
        """Return the cursors of ``sync``: unit id -> the latest entry time written (a Unix
        timestamp)."""
        ...

    async def write_page(
        self,
        table: str,
        key: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        *,
        sync: str,
        unit_id: str,
        cursor: int,
        fence: Fence | None = None,
    ) -> int:
        """Upsert one page of a log's rows and move the unit's cursor to ``cursor`` (never
        back), in one transaction, fenced; return the rows written. Names are validated
        as for :meth:`TableStore.upsert_rows`.

        Raises:
            ConfigError: a name is not an identifier, or names a table no sync may write.
            StoreDataError: the database refused a value (neither rows nor cursor written).
        """
        ...

    async def prune_rows(
        self,
        table: str,
        column: str,
        *,
        before: int,
        limit: int,
        fence: Fence | None = None,
    ) -> int:
        """Delete at most ``limit`` rows of ``table`` whose ``column`` (a Unix timestamp) is
        below ``before``, fenced; return how many (``Table(keep=)``)."""
        ...


@runtime_checkable
class KeyHealthStore(Protocol):
    """``sentinel_key_health``: keys parked because Torn called them dead or suspended."""

    async def load_key_health(self) -> dict[str, KeyHealth]:
        """Return every parked key's health row, by key id."""
        ...

    async def save_key_health(self, park: Sequence[KeyHealth], clear: Sequence[str]) -> None:
        """Upsert ``park`` rows and delete the rows of the ``clear`` key ids, atomically; the
        run that parked each key (``KeyHealth.run_id``) goes to ``sentinel_key_parks``."""
        ...

    async def reset_key_health(self, key_id: str) -> bool:
        """Un-park one key; return False when it was not parked."""
        ...

    async def unpark_keys(
        self,
        *,
        run_id: str | None = None,
        code: int | None = None,
        since: datetime | None = None,
    ) -> int:
        """Un-park the keys parked by run ``run_id``, with Torn code ``code``, parked at or
        after ``since`` (every condition given must hold; at least one must be given) and
        forget their strikes, in one transaction; return how many were un-parked."""
        ...

    async def load_key_records(self) -> dict[str, KeyRecord]:
        """Return every ``sentinel_key_record`` row (last success, strikes), by key id."""
        ...

    async def save_key_records(self, records: Sequence[KeyRecord]) -> None:
        """Upsert whole ``sentinel_key_record`` rows (one statement per chunk)."""
        ...


@runtime_checkable
class JobStateStore(Protocol):
    """``sentinel_jobs``: when each job started being scheduled, and its alert state.

    ``status`` runs in another process than the daemon, so what the health rule needs to
    know about a job that has not run yet (its first tick and timeout) lives here; so does
    the state the last alert announced, so a restart or a second replica never repeats it.
    """

    async def register_job(
        self, job: str, *, schedule: str, timeout_s: float, first_tick: datetime
    ) -> None:
        """Insert or refresh a job's row; the first ``first_tick`` ever registered is kept."""
        ...

    async def get_job_states(self, jobs: Sequence[str] | None = None) -> dict[str, JobState]:
        """Return the rows of these jobs (all jobs for None), by job name."""
        ...

    async def set_alert_state(self, job: str, *, healthy: bool, as_of: datetime) -> bool:
        """Compare-and-set a job's alert state; True when this call changed it.

        The row is created ``healthy`` when missing. The state changes only when it differs
        and ``as_of`` (the end of the run the verdict judged) is newer than the one the
        current state was set from, so a replica reading an older run can never flip it
        back. Exactly one caller sees True for a change: that caller sends the alert.
        """
        ...


@runtime_checkable
class Store(
    KeyStore,
    UserDataStore,
    TableStore,
    RunStore,
    KeyHealthStore,
    KeyAccessStore,
    KeyInfoStore,
    CursorStore,
    JobStateStore,
    Protocol,
):
    """A database holding ``user_keys`` and ``user_data`` and sentinel's own tables.

    Connections are opened by ``async with store:`` inside the run's event loop, so a store
    built in one thread (a notebook cell) works from the run's own thread.

    >>> from sentinel_kit import open_store
    >>> store = open_store("sqlite:///sentinel.db")      # doctest: +SKIP
    >>> async with store:                                # doctest: +SKIP
    ...     await store.upsert_user_data(rows)
    """

    #: A description safe to print: the backend and location, never a password or key.
    label: str
    #: Statements that wrote ``user_data`` since the store was opened (for benchmarks).
    write_calls: int

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def check_schema(self) -> None:
        """Raise :class:`~sentinel_kit.SchemaMissing` unless the tables a sync needs exist."""
        ...

    async def migrate(self) -> list[str]:
        """Apply the packaged migrations that are missing; return the names applied."""
        ...


@runtime_checkable
class InspectableStore(Protocol):
    """What ``sentinel-kit doctor`` and ``migrate`` read about a database."""

    async def applied_migrations(self) -> list[str]:
        """Return the names in ``sentinel_migrations`` (SchemaMissing when it is absent)."""
        ...

    async def column_types(self) -> dict[str, dict[str, str]]:
        """Return ``{table: {column: declared type}}`` of ``user_keys`` and ``user_data``
        (a missing table is absent)."""
        ...

    async def security_facts(self) -> SecurityFacts | None:
        """Return who can reach our tables and functions; None where there are no roles
        (SQLite)."""
        ...


def abandon_note(holder: str, fence: int) -> str:
    """The error recorded on a run whose holder died (see ``RunStore.abandon_runs``)."""
    return (
        f"abandoned: its holder stopped before finishing; {holder} took the lease (fence {fence})"
    )


def dedupe_rows(rows: Sequence[UserDataRow]) -> list[UserDataRow]:
    """Keep the last row of each ``user_id``: Postgres rejects a batch touching a row twice.

    Args:
        rows: rows in arrival order.

    Returns:
        One row per user, in first-seen order.
    """
    by_user: dict[str, UserDataRow] = {}
    for row in rows:
        by_user[row.user_id] = row
    return list(by_user.values())
