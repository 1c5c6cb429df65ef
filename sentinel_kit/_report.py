"""What a run did: failures, dry-run changes, the :class:`SyncReport` and its tally (pure)."""

from __future__ import annotations

import enum
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from ._display import html_table, to_dataframe
from ._models import ErrorClass, Outcome, Reason, RunStatus

__all__ = [
    "ABORT_CAUSES",
    "NOT_ASKED",
    "SYNC_JOB_NAME",
    "Change",
    "ChangeKind",
    "Failure",
    "RowChange",
    "SyncReport",
    "Tally",
    "build_report",
    "keys_without_key_info",
    "no_faction_known",
    "run_log_fields",
    "skip_kind",
    "skipped_phrase",
]

#: The detail of a key a per-faction run did not ask because another key answered first.
NOT_ASKED = "not asked"

_NO_FACTION = re.compile(r"no faction known yet: (\d+) keys? without key info")


def no_faction_known(keys: int) -> str:
    """The note of a per-faction run that has keys but knows no faction of theirs (no
    current key info): kept as the run's ``error``, so the health rule reads it back."""
    return (
        f"no faction known yet: {keys} key{'s' if keys != 1 else ''} without key info; "
        "run `sentinel-kit sync --job sync-key-info` first"
    )


def keys_without_key_info(error: str | None) -> int | None:
    """The keys a :func:`no_faction_known` note counts; None for any other error."""
    found = _NO_FACTION.match(error or "")
    return int(found.group(1)) if found else None


#: Why an aborted or timed-out run ended, as a bounded metric label: Torn refused every key
#: (a global error), Torn unreachable, a Torn incident, the database, a wrong
#: ``ENCRYPTION_KEY``, the deadline, a stop or interrupt, a bug, anything else.
ABORT_CAUSES = (
    "torn_global",
    "torn_unreachable",
    "incident",
    "store",
    "wrong_secret",
    "timeout",
    "interrupted",
    "internal",
    "other",
)

#: The built-in user sync's job name (``sync/_builtin.py`` declares it under this name).
SYNC_JOB_NAME = "sync-users"


class ChangeKind(enum.StrEnum):
    """What an upsert does to a row (shown by dry runs): ``user_data``'s kinds, ``changed``
    for a declared table's row whose columns differ, ``removed`` for a row a replacing
    table would delete."""

    NEW = "new"
    NAME_CHANGED = "name_changed"
    PLAYER_ID_CHANGED = "player_id_changed"
    UNCHANGED = "unchanged"
    CHANGED = "changed"
    #: A row a replacing table (``Table(replace=...)``) would delete: its unit's new answer
    #: no longer has it (a member who left).
    REMOVED = "removed"


_CHANGE_COLUMNS = ("user_id", "change", "name", "player_id", "old_name", "old_player_id")
_ROW_CHANGE_COLUMNS = ("user_id", "change", "key", "row", "old")
_FAILURE_COLUMNS = ("user_id", "key_id", "reason", "torn_code", "key_fingerprint", "unit_id")
_SUMMARY_COLUMNS = (
    "run",
    "job",
    "status",
    "keys",
    "synced",
    "failed",
    "skipped",
    "deferred",
    "written",
    "seconds",
    "error",
)


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
        return dict(
            zip(
                _CHANGE_COLUMNS,
                (
                    self.user_id,
                    self.kind.value,
                    self.name,
                    self.player_id,
                    self.old_name,
                    self.old_player_id,
                ),
                strict=True,
            )
        )


def _plain(value: Any) -> Any:
    """A column value as JSON shows it (a report is dumped as JSON)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


@dataclass(frozen=True, slots=True)
class RowChange:
    """The difference between a would-be row of a declared table and its current row.

    Attributes:
        user_id: the unit the row belongs to.
        kind: ``new``, ``changed`` or ``unchanged``.
        key: the row's key columns and values (the table's ``key``).
        row: the would-be row's other columns (``updated_at`` left out).
        old: of a changed row, the current values of the columns that differ.
    """

    user_id: str
    kind: ChangeKind
    key: Mapping[str, Any]
    row: Mapping[str, Any]
    old: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in reports."""
        return {
            "user_id": self.user_id,
            "change": self.kind.value,
            "key": {c: _plain(v) for c, v in self.key.items()},
            "row": {c: _plain(v) for c, v in self.row.items()},
            "old": None if self.old is None else {c: _plain(v) for c, v in self.old.items()},
        }

    def describe(self) -> str:
        """The row as one phrase: ``total=4000, strength=1000``."""
        shown = {c: v for c, v in self.key.items() if c != "user_id"} | dict(self.row)
        return ", ".join(f"{c}={json.dumps(_plain(v), default=str)}" for c, v in shown.items())


def _change_columns(changes: Sequence[Change | RowChange]) -> tuple[str, ...]:
    """The columns of a report's changes (those of one sync: all of one kind)."""
    return _ROW_CHANGE_COLUMNS if changes and isinstance(changes[0], RowChange) else _CHANGE_COLUMNS


#: Why skipped keys were not asked, as the report's ``skipped_by`` counts them.
SKIP_KINDS = ("parked", "access")


def skip_kind(outcome: Outcome) -> str | None:
    """Why a skipped key was not asked: ``parked`` (key health: dead, suspended, cooling
    down), ``access`` (known to lack the access the sync needs: Torn's code 16 or 7 earlier,
    or its key info), or None (not skipped, or another key of its user answered)."""
    if not outcome.skipped:
        return None
    if outcome.error_class is ErrorClass.NO_ACCESS:
        return "access"
    # A parked key keeps the reason it was parked for; "not asked" carries none.
    return "parked" if outcome.reason is not None else None


def skipped_phrase(skipped: int, skipped_by: Mapping[str, int]) -> str:
    """``3 skipped (2 parked, 1 without access)``; the parenthesis names only what counts."""
    parts = []
    if skipped_by.get("parked"):
        parts.append(f"{skipped_by['parked']} parked")
    if skipped_by.get("access"):
        parts.append(f"{skipped_by['access']} without access")
    return f"{skipped} skipped" + (f" ({', '.join(parts)})" if parts else "")


@dataclass(frozen=True, slots=True)
class Failure:
    """One key that was not synced, as listed in a report.

    ``key_fingerprint`` is the decrypted key's fingerprint (see
    :func:`~sentinel_kit.key_fingerprint`), the label cassettes and DEBUG logs use for it;
    None when the key was never decrypted (a ``decrypt_error``, or a key not attempted).
    ``unit_id`` is the unit the key was asked for: its user, or the faction of a per-faction
    run (the faction id as text).
    """

    user_id: str
    key_id: str
    reason: Reason
    torn_code: int | None = None
    key_fingerprint: str | None = None
    unit_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form of the report contract."""
        return {
            "user_id": self.user_id,
            "key_id": self.key_id,
            "reason": self.reason.value,
            "torn_code": self.torn_code,
            "key_fingerprint": self.key_fingerprint,
            "unit_id": self.unit_id if self.unit_id is not None else self.user_id,
        }


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one run did; ``to_dict()`` is the JSON report contract (see ARCHITECTURE.md).

    ``deferred`` counts keys a time-boxed run left for the next run: neither failed nor
    skipped. ``skipped_by`` splits the skipped keys by why: ``parked`` (key health) and
    ``access`` (known to lack the access the sync needs); ``skipped`` is their sum plus the
    keys a per-user sync did not ask because another key of their user answered.
    ``not_reached`` counts keys whose request was never sent because the run
    ended first (deadline, stop, interrupt, a global error): they are in ``failed`` but not
    listed in ``failures``, which holds the keys that were sent or failed on their own;
    :meth:`not_reached_keys` names them. ``counted`` is False for runs the health rule
    ignores: dry runs, re-runs of a few users, and runs a person interrupted.

    ``unit`` is what the counts count: ``user`` (keys of app users, as always),
    ``faction`` (a per-faction run: ``keys_total``, ``synced``, ``failed``, ``skipped`` are
    factions, so the health rule reads the same) or ``key`` (sync-key-info, which asks
    every key, not one per user).
    """

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
    changes: tuple[Change | RowChange, ...] = ()
    #: Statements that wrote ``user_data`` (about written / chunk size).
    write_calls: int = 0
    deferred: int = 0
    counted: bool = True
    #: Keys not reached (counted in ``failed``, not in ``failures``).
    not_reached: int = 0
    #: The keys not reached, kept in memory only: never in the JSON report.
    unreached: tuple[Failure, ...] = field(default=(), repr=False, compare=False)
    #: Skipped keys by why (:data:`SKIP_KINDS`): ``{"parked": n, "access": m}``.
    skipped_by: Mapping[str, int] = field(default_factory=dict)
    #: What the counts count: ``user``, ``faction`` or ``key`` (sync-key-info).
    unit: str = "user"
    #: The backlog a whole run left for its sync and shard, recorded in ``sentinel_runs``
    #: (None for dry runs and re-runs of a few users): users not attempted within one
    #: interval of the schedule, and the oldest attempt.
    stale_users: int | None = None
    oldest_attempt_at: datetime | None = None
    #: Why an aborted or timed-out run ended: one of :data:`ABORT_CAUSES` (a bounded label
    #: for metrics; ``error`` is the line for people). None for other runs.
    cause: str | None = None

    def __post_init__(self) -> None:
        # When the keys are known, their count is theirs: the two never disagree. (A report
        # read back from JSON knows only the count, and keeps it.)
        if self.unreached and self.not_reached != len(self.unreached):
            object.__setattr__(self, "not_reached", len(self.unreached))
        # Every kind, zero or not, so readers of the JSON find both keys.
        by = {kind: int(self.skipped_by.get(kind, 0)) for kind in SKIP_KINDS}
        object.__setattr__(self, "skipped_by", by)

    @property
    def duration_s(self) -> float:
        """Wall-clock seconds between start and finish."""
        return round((self.finished_at - self.started_at).total_seconds(), 3)

    @property
    def attempted(self) -> int:
        """Keys the run tried: every key but the parked (skipped) and deferred ones."""
        return self.keys_total - self.skipped - self.deferred

    @property
    def exit_code(self) -> int:
        """The CLI exit code for this report."""
        return self.status.exit_code

    def reasons(self) -> dict[str, int]:
        """Failed keys counted by reason, most frequent first (the keys not reached too, so
        the counts add up to ``failed``)."""
        every = (*self.failures, *self.unreached)
        return dict(Counter(f.reason.value for f in every).most_common())

    def not_reached_keys(self) -> tuple[Failure, ...]:
        """The keys the run never sent a request for because it ended first, by (user_id,
        key_id), each with the reason the run ended (``timeout`` or ``aborted``)."""
        return self.unreached

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON report of the contract (additions only, never removals)."""
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
            "skipped_by": dict(self.skipped_by),
            "deferred": self.deferred,
            "written": self.written,
            # `error` is a cause of an aborted or timed-out run only: a per-faction run that
            # knows no faction yet keeps its note (which the run history stores as the run's
            # error, for the health rule) under `note`.
            "error": None if self.note else self.error,
            "note": self.note,
            "failures": [f.to_dict() for f in self.failures],
            "not_reached": self.not_reached,
            "dry_run": self.dry_run,
            "write_calls": self.write_calls,
            "unit": self.unit,
        }
        if self.dry_run:
            data["changes"] = [c.to_dict() for c in self.changes]
        return data

    @property
    def note(self) -> str | None:
        """Why a run that was otherwise ok did nothing (a per-faction run that knows no
        faction yet), kept in ``error`` for the run history; else None."""
        return self.error if keys_without_key_info(self.error) is not None else None

    def counts(self) -> str:
        """The counts as one phrase: ``7 keys, 5 synced, 2 failed, 0 skipped, ...``."""
        deferred = f", {self.deferred} deferred" if self.deferred else ""
        unreached = f" ({self.not_reached} not reached)" if self.not_reached else ""
        counted = "keys" if self.unit == "user" else f"{self.unit}s"
        return (
            f"{self.keys_total} {counted}, {self.synced} synced, {self.failed} failed{unreached}, "
            f"{skipped_phrase(self.skipped, self.skipped_by)}{deferred}, {self.written} written"
        )

    def summary(self) -> str:
        """One line: status, counts and duration (the log line of a finished run)."""
        line = f"{self.status.value} ({self.counts()}) in {self.duration_s:.2f}s"
        return f"{line}; {self.error}" if self.error else line

    def render_text(self) -> str:
        """Return a short human-readable summary, one failure per line."""
        deferred = f", {self.deferred} deferred to the next run" if self.deferred else ""
        lines = [
            f"run {self.run_id} ({self.job}): {self.status.value}"
            f"{' (dry run)' if self.dry_run else ''} in {self.duration_s:.2f}s",
            f"  {'keys' if self.unit == 'user' else self.unit + 's'}: {self.keys_total} total, "
            f"{self.synced} synced, {self.failed} failed, "
            f"{skipped_phrase(self.skipped, self.skipped_by)}{deferred}; "
            f"rows written: {self.written}",
        ]
        if self.error:
            # An ok run's error is a note (a per-faction run that knows no faction yet).
            label = "note" if self.status is RunStatus.OK else "error"
            lines.append(f"  {label}: {self.error}")
        if self.not_reached:
            lines.append(
                f"  not reached: {self.not_reached} keys (the run ended before their "
                "requests were sent; they keep their place for the next run)"
            )
        lines += _failure_lines(self.failures)
        for c in self.changes:
            shown = c.describe() if isinstance(c, RowChange) else f"{c.name} [{c.player_id}]"
            lines.append(f"  would write: {self.unit} {c.user_id}: {c.kind.value} -> {shown}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render_text()

    def _repr_html_(self) -> str:
        summary = html_table(
            _SUMMARY_COLUMNS,
            [
                [
                    self.run_id[:8],
                    self.job,
                    self.status.value + (" (dry run)" if self.dry_run else ""),
                    self.keys_total,
                    self.synced,
                    self.failed,
                    self.skipped,
                    self.deferred,
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
                    _FAILURE_COLUMNS,
                    [list(f.to_dict().values()) for f in self.failures],
                    caption="failures",
                )
            )
        if self.changes:
            parts.append(
                html_table(
                    _change_columns(self.changes),
                    [list(c.to_dict().values()) for c in self.changes],
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
        if what == "changes":
            return to_dataframe([c.to_dict() for c in self.changes], _change_columns(self.changes))
        return to_dataframe([f.to_dict() for f in self.failures], _FAILURE_COLUMNS)


@dataclass(slots=True)
class Tally:
    """Counts of a run's outcomes, keeping only the failures, so memory stays flat."""

    total: int = 0
    synced: int = 0
    skipped: int = 0
    deferred: int = 0
    #: Skipped keys by why (:func:`skip_kind`).
    skipped_by: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    #: Failed keys whose request was never sent (the run ended first).
    not_reached: list[Failure] = field(default_factory=list)

    def add(self, outcomes: Iterable[Outcome]) -> None:
        """Count a batch of outcomes."""
        for o in outcomes:
            self.total += 1
            if o.ok:
                self.synced += 1
            elif o.deferred:
                self.deferred += 1
            elif o.skipped:
                self.skipped += 1
                kind = skip_kind(o)
                if kind is not None:
                    self.skipped_by[kind] += 1
            elif o.reason is not None:
                failure = Failure(
                    o.user_id, o.key_id, o.reason, o.torn_code, o.key_fingerprint, o.unit
                )
                (self.not_reached if o.not_reached else self.failures).append(failure)

    def add_unit(self, outcomes: Sequence[Outcome]) -> None:
        """Count one unit (a faction) by its keys' outcomes, in the order they were asked:
        synced when one key answered; else as the last key asked ended (deferred, skipped,
        or its failure). Keys not asked because another answered are not counted."""
        asked = [o for o in outcomes if o.detail != NOT_ASKED]
        if not asked:
            return
        answered = next((o for o in asked if o.ok), None)
        self.add([answered if answered is not None else asked[-1]])

    def refuse(self, outcome: Outcome, reason: Reason) -> None:
        """Count a key already counted as synced as failed: its row could not be written."""
        self.synced -= 1
        self.failures.append(
            Failure(
                outcome.user_id,
                outcome.key_id,
                reason,
                None,
                outcome.key_fingerprint,
                outcome.unit,
            )
        )


#: More failures of one reason and code than this read as one line in the text summary
#: (`failures` in the JSON still lists each).
GROUPED_FAILURES = 5


def _unit_of(failure: Failure) -> str:
    """``unit ID: `` when a failure's unit is not its user (a per-faction run's faction)."""
    if failure.unit_id is None or failure.unit_id == failure.user_id:
        return ""
    return f"unit {failure.unit_id}: "


def _failure_lines(failures: Sequence[Failure]) -> list[str]:
    """One line per failure, except a reason and code shared by many: one line for them
    (an incident's ten keys answering code 2 read as one fact, not ten)."""
    groups: dict[tuple[Reason, int | None], list[Failure]] = {}
    for f in failures:
        groups.setdefault((f.reason, f.torn_code), []).append(f)
    lines = []
    for (reason, torn_code), group in groups.items():
        code = f" (torn code {torn_code})" if torn_code is not None else ""
        if len(group) > GROUPED_FAILURES:
            first = group[0]
            lines.append(
                f"  failed: {len(group)} keys: {reason.value}{code} (the first: user "
                f"{first.user_id} key {first.key_id}; `--json` lists them all)"
            )
            continue
        lines += [
            f"  failed: {_unit_of(f)}user {f.user_id} key {f.key_id}: {reason.value}{code}"
            for f in group
        ]
    return lines


def build_report(
    outcomes: Iterable[Outcome] | Tally,
    *,
    run_id: str,
    job: str,
    started_at: datetime,
    finished_at: datetime,
    written: int,
    error: str | None = None,
    status: RunStatus | None = None,
    dry_run: bool = False,
    changes: Sequence[Change | RowChange] = (),
    write_calls: int = 0,
    counted: bool = True,
    unit: str = "user",
    cause: str | None = None,
) -> SyncReport:
    """Summarise a run's outcomes into a :class:`SyncReport`.

    Args:
        outcomes: one per key of the run, or their :class:`Tally`.
        run_id: the run's id.
        job: the job name.
        started_at: when the run started.
        finished_at: when it ended.
        written: ``user_data`` rows written.
        error: the one-line cause of an aborted or timed-out run.
        status: forced status (aborted, timeout); otherwise ok or partial by the failures.
        dry_run: whether writes were suppressed.
        changes: what a dry run would have changed.
        write_calls: statements that wrote ``user_data``.
        counted: whether the health rule counts this run.
        unit: what the counts count (``user``; ``faction`` for a per-faction run; ``key``
            for sync-key-info, which asks every key).
        cause: why a forced status ended the run (one of :data:`ABORT_CAUSES`).

    Returns:
        The report; failures (and the keys not reached) sorted by (user_id, key_id).
    """
    if isinstance(outcomes, Tally):
        tally = outcomes
    else:
        tally = Tally()
        tally.add(outcomes)
    failures = sorted(tally.failures, key=lambda f: (f.user_id, f.key_id))
    unreached = sorted(tally.not_reached, key=lambda f: (f.user_id, f.key_id))
    if status is None:
        status = RunStatus.PARTIAL if failures or unreached else RunStatus.OK
    return SyncReport(
        run_id=run_id,
        job=job,
        status=status,
        started_at=started_at,
        finished_at=finished_at,
        keys_total=tally.total,
        synced=tally.synced,
        failed=len(failures) + len(unreached),
        skipped=tally.skipped,
        skipped_by=dict(tally.skipped_by),
        written=written,
        error=error,
        failures=tuple(failures),
        dry_run=dry_run,
        changes=tuple(changes),
        write_calls=write_calls,
        deferred=tally.deferred,
        counted=counted and not dry_run,
        not_reached=len(unreached),
        unreached=tuple(unreached),
        unit=unit,
        cause=cause if status in (RunStatus.ABORTED, RunStatus.TIMEOUT) else None,
    )


def run_log_fields(report: SyncReport) -> dict[str, Any]:
    """The fields of a run's finish line (top-level keys of ``--log-format json``): the
    counts, and the failures by reason, so a 10,000-key run logs one line, not 10,000."""
    return {
        "status": report.status.value,
        "keys_total": report.keys_total,
        "synced": report.synced,
        "failed": report.failed,
        "skipped": report.skipped,
        "skipped_by": dict(report.skipped_by),
        "deferred": report.deferred,
        "not_reached": report.not_reached,
        "written": report.written,
        "duration_s": report.duration_s,
        "reasons": report.reasons(),
        "counted": report.counted,
        "dry_run": report.dry_run,
        "error": None if report.note else report.error,
        "note": report.note,
    }
