"""The one health rule of ``status``, ``/healthz``, alerts and ``daemon --once`` (pure).

The rule (README, "Health and operations"):

- A run's *attempted* keys are ``keys_total - skipped - deferred``. A run is healthy when it
  is ``ok``, or ``partial`` with ``synced >= min_synced x attempted``; ``aborted``,
  ``timeout`` (and ``abandoned``: its holder died) are not.
- A run of a job that has keys but could use none of them (every key parked, or known to
  lack the access the sync needs) is not healthy, whatever its status: ``no usable key: 40
  parked, 12 without access`` (each named when the run's ``skipped_by`` is known); so is a
  per-faction run that has keys but knows none of their factions (no key info yet: its
  ``error`` is the note ``no faction known yet: 6 keys ...``): ``no usable key: 6 keys
  without key info``.
- Only counted runs speak for a job: not dry runs, not ``users=[...]`` re-runs, not runs a
  person interrupted. Runs still ``running`` (and ``skipped`` ones) have no verdict yet.
- A job is healthy when its latest counted run is healthy. A job with no counted run yet is
  healthy until its first due tick plus its timeout has passed.

Times are arguments; nothing here reads the clock, the environment or a database.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .._errors import ConfigError
from .._models import JobState, RunRecord
from .._report import keys_without_key_info

__all__ = [
    "DEFAULT_MIN_SYNCED",
    "JobHealth",
    "Verdict",
    "VerdictKind",
    "check_min_synced",
    "judge_job",
    "run_exit_code",
    "run_is_healthy",
    "run_verdict",
    "run_verdict_of",
]

#: The share of attempted keys a partial run must sync to be healthy.
DEFAULT_MIN_SYNCED = 0.5
#: Statuses that carry no verdict: the run has not ended, or did no work by design.
_NO_VERDICT = frozenset({"running", "skipped"})


class VerdictKind(enum.StrEnum):
    """Why a run is not healthy: code branches on this, never on the text."""

    #: The job has keys but could use none (every key parked): about the job's keys,
    #: whatever the run's status.
    NO_USABLE_KEY = "no_usable_key"
    #: A partial run that synced less than ``min_synced`` of its attempted keys.
    BELOW_MIN_SYNCED = "below_min_synced"
    #: The run ended aborted, timed out or abandoned.
    ENDED_EARLY = "ended_early"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a run is not healthy: a :class:`VerdictKind` and its words for people."""

    kind: VerdictKind
    text: str


def check_min_synced(value: float) -> float:
    """Return ``value`` if it is a share between 0 and 1.

    Raises:
        ConfigError: it is not.
    """
    if not 0.0 <= value <= 1.0:
        raise ConfigError(
            f"--min-synced {value:g} is not a share: give a number from 0 to 1, e.g. 0.5"
        )
    return value


def run_verdict_of(run: RunRecord, min_synced: float = DEFAULT_MIN_SYNCED) -> Verdict | None:
    """Why ``run`` is not healthy, as a :class:`Verdict`; None when it is healthy.

    Args:
        run: a finished run.
        min_synced: the share of attempted keys a partial run must sync.
    """
    unknown = keys_without_key_info(run.error)
    if unknown and run.keys_total == 0:
        # A per-faction job that has keys but knows none of their factions: it syncs no
        # one until sync-key-info has checked them.
        return Verdict(VerdictKind.NO_USABLE_KEY, f"no usable key: {unknown} keys without key info")
    if run.keys_total > 0 and run.skipped >= run.keys_total:
        # Every key skipped: "ok" with nothing to do, run after run, would hide that the job
        # syncs no one (a Torn incident parked them, every user's key died, or no key has
        # the access the sync needs).
        return Verdict(VerdictKind.NO_USABLE_KEY, f"no usable key: {_unusable(run)}")
    if run.status == "ok":
        return None
    if run.status == "partial":
        attempted = run.attempted
        if run.synced >= min_synced * attempted:
            return None
        return Verdict(
            VerdictKind.BELOW_MIN_SYNCED,
            f"partial: {run.synced} of {attempted} attempted "
            f"{'factions' if run.unit == 'faction' else 'keys'} synced, "
            f"below --min-synced {min_synced:g}",
        )
    if run.error and run.error.startswith(run.status):
        return Verdict(VerdictKind.ENDED_EARLY, run.error)  # "abandoned: ..." says its status
    cause = f": {run.error}" if run.error else ""
    return Verdict(VerdictKind.ENDED_EARLY, f"{run.status}{cause}")


def _unusable(run: RunRecord) -> str:
    """``40 parked, 12 without access``: each kind that counts, when the run knows them."""
    by = run.skipped_by
    if not by or not (by.get("parked") or by.get("access")):
        return f"{run.skipped} parked"  # a run recorded before migration 018: as in 0.2
    parts = [f"{by['parked']} parked"] if by.get("parked") else []
    if by.get("access"):
        parts.append(f"{by['access']} without access")
    return ", ".join(parts)


def run_verdict(run: RunRecord, min_synced: float = DEFAULT_MIN_SYNCED) -> str | None:
    """Why ``run`` is not healthy, in a few words; None when it is healthy.

    Args:
        run: a finished run.
        min_synced: the share of attempted keys a partial run must sync.
    """
    verdict = run_verdict_of(run, min_synced)
    return verdict.text if verdict is not None else None


def run_is_healthy(run: RunRecord, min_synced: float = DEFAULT_MIN_SYNCED) -> bool:
    """True when ``run`` is ``ok``, or ``partial`` with enough of its attempted keys synced."""
    return run_verdict_of(run, min_synced) is None


def run_exit_code(run: RunRecord, min_synced: float = DEFAULT_MIN_SYNCED) -> int:
    """The exit code ``daemon --once`` gives for one run: 0 healthy, 1 a completed run that
    is not (partial below ``min_synced``, or no usable key), 3 aborted, timed out or
    abandoned."""
    if run_is_healthy(run, min_synced):
        return 0
    return 1 if run.status in ("ok", "partial") else 3


@dataclass(frozen=True, slots=True)
class JobHealth:
    """The health rule's verdict on one job.

    Attributes:
        job: the job name.
        healthy: the verdict.
        reason: why, in a few words (also for healthy jobs: "latest run ok").
        last_run: the latest counted, finished run the verdict rests on (None if none).
        last_healthy_at: when the latest healthy counted run finished (None if none).
        as_of: the moment the verdict speaks for: the end of ``last_run``, or of the grace
            period; alerts only move forward in it.
        exit_code: what ``daemon --once`` exits with for this job (0 when healthy).
        kind: why the latest counted run is not healthy (None when it is, or when no run
            speaks yet): branch on this, not on ``reason``'s words.
    """

    job: str
    healthy: bool
    reason: str
    last_run: RunRecord | None
    last_healthy_at: datetime | None
    as_of: datetime | None
    exit_code: int
    kind: VerdictKind | None = None

    @property
    def last_run_status(self) -> str | None:
        """The status of :attr:`last_run`."""
        return self.last_run.status if self.last_run else None


def _finished_at(run: RunRecord) -> datetime:
    return run.finished_at or run.started_at


def _job_reason(run: RunRecord, why_not: Verdict | None) -> str:
    if why_not is None:
        return f"latest run {run.status}"
    # "no usable key" speaks of the job's keys, whatever the run's status.
    if why_not.kind is VerdictKind.NO_USABLE_KEY:
        return why_not.text
    return f"latest run {why_not.text}"


def judge_job(
    job: str,
    runs: Iterable[RunRecord],
    *,
    now: datetime,
    state: JobState | None = None,
    min_synced: float = DEFAULT_MIN_SYNCED,
) -> JobHealth:
    """Apply the health rule to one job.

    Args:
        job: the job name.
        runs: the job's recent runs, in any order.
        now: the current time.
        state: the job's ``sentinel_jobs`` row (first tick and timeout), when a daemon
            registered it.
        min_synced: the share of attempted keys a partial run must sync.

    Returns:
        The :class:`JobHealth`.
    """
    counted = sorted(
        (r for r in runs if r.counted and r.status not in _NO_VERDICT),
        key=lambda r: (r.started_at, _finished_at(r)),
        reverse=True,
    )
    last_healthy = next((r for r in counted if run_is_healthy(r, min_synced)), None)
    last_healthy_at = _finished_at(last_healthy) if last_healthy else None
    if counted:
        latest = counted[0]
        why_not = run_verdict_of(latest, min_synced)
        return JobHealth(
            job=job,
            healthy=why_not is None,
            reason=_job_reason(latest, why_not),
            last_run=latest,
            last_healthy_at=last_healthy_at,
            as_of=_finished_at(latest),
            exit_code=run_exit_code(latest, min_synced),
            kind=why_not.kind if why_not is not None else None,
        )
    if state is None or state.first_tick is None:
        return JobHealth(
            job=job,
            healthy=False,
            reason="no counted run yet, and no daemon has scheduled the job",
            last_run=None,
            last_healthy_at=None,
            as_of=None,
            exit_code=3,
        )
    deadline = state.first_tick + timedelta(seconds=state.timeout_s or 0.0)
    if now <= deadline:
        return JobHealth(
            job=job,
            healthy=True,
            reason=f"no run yet; its first tick has until {deadline.isoformat()}",
            last_run=None,
            last_healthy_at=None,
            as_of=state.first_tick,
            exit_code=0,
        )
    return JobHealth(
        job=job,
        healthy=False,
        reason=f"no run finished by {deadline.isoformat()} (first tick plus --timeout)",
        last_run=None,
        last_healthy_at=None,
        as_of=deadline,
        exit_code=3,
    )
