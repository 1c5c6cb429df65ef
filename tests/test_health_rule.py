"""The one health rule (ops/_health_rule.py): runs, jobs, the grace period, exit codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sentinel_kit import ConfigError, RunRecord
from sentinel_kit._models import JobState
from sentinel_kit.ops import (
    VerdictKind,
    check_min_synced,
    judge_job,
    run_exit_code,
    run_is_healthy,
)

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def run(
    status: str,
    *,
    at: int = 0,
    keys: int = 10,
    synced: int = 10,
    failed: int = 0,
    skipped: int = 0,
    deferred: int = 0,
    counted: bool = True,
    error: str | None = None,
) -> RunRecord:
    """A finished run starting ``at`` minutes after T0 and lasting one minute."""
    start = T0 + timedelta(minutes=at)
    return RunRecord(
        f"run-{at}-{status}",
        "sync-users",
        status,
        start,
        start + timedelta(minutes=1),
        keys_total=keys,
        synced=synced,
        failed=failed,
        skipped=skipped,
        deferred=deferred,
        counted=counted,
        error=error,
    )


@pytest.mark.parametrize(
    ("record", "min_synced", "healthy", "code"),
    [
        (run("ok"), 0.5, True, 0),
        (run("partial", synced=5, failed=5), 0.5, True, 0),
        (run("partial", synced=4, failed=6), 0.5, False, 1),
        (run("partial", synced=4, failed=6), 0.4, True, 0),
        (run("partial", synced=0, failed=10), 0.0, True, 0),
        # 10 keys, 6 parked (skipped) and 2 deferred: 2 attempted, 1 synced = half of them.
        (run("partial", synced=1, failed=1, skipped=6, deferred=2), 0.5, True, 0),
        (run("partial", synced=1, failed=3, skipped=6), 0.5, False, 1),
        (run("aborted", synced=0, failed=10, error="Torn unreachable"), 0.5, False, 3),
        (run("timeout", synced=9, failed=1), 0.5, False, 3),
        (run("abandoned", synced=0), 0.5, False, 3),
    ],
    ids=[
        "ok",
        "partial-at-threshold",
        "partial-below",
        "partial-lower-threshold",
        "partial-none-threshold-0",
        "attempted-excludes-parked-and-deferred",
        "attempted-below",
        "aborted",
        "timeout",
        "abandoned",
    ],
)
def test_run_verdicts_and_exit_codes(
    record: RunRecord, min_synced: float, healthy: bool, code: int
) -> None:
    """ok is healthy; partial by synced >= min_synced x attempted; the rest never."""
    assert run_is_healthy(record, min_synced) is healthy
    assert run_exit_code(record, min_synced) == code


def test_latest_counted_run_decides_and_uncounted_runs_do_not() -> None:
    """A one-user re-run and a run still going change nothing; the latest counted run does."""
    history = [
        run("ok", at=0),
        run("aborted", at=60, error="Torn unreachable: ..."),
        run("ok", at=70, keys=1, synced=1, counted=False),  # users=[...] re-run
        RunRecord("r-running", "sync-users", "running", T0 + timedelta(minutes=120)),
    ]
    health = judge_job("sync-users", history, now=T0 + timedelta(hours=3))
    assert not health.healthy
    assert health.last_run_status == "aborted"
    assert health.last_healthy_at == T0 + timedelta(minutes=1)
    assert health.exit_code == 3
    assert "Torn unreachable" in health.reason
    recovered = judge_job("sync-users", [*history, run("ok", at=180)], now=T0 + timedelta(hours=4))
    assert recovered.healthy
    assert recovered.as_of == T0 + timedelta(minutes=181)


def test_a_fresh_job_is_healthy_until_its_first_tick_plus_timeout() -> None:
    """No counted run yet: healthy up to first tick + timeout, unhealthy after; without a
    registered schedule there is nothing to wait for."""
    state = JobState("sync-users", "cron:0 * * * *", 600.0, T0)
    waiting = judge_job("sync-users", [], now=T0 + timedelta(seconds=600), state=state)
    assert waiting.healthy
    assert waiting.exit_code == 0
    late = judge_job("sync-users", [], now=T0 + timedelta(seconds=601), state=state)
    assert not late.healthy
    assert late.as_of == T0 + timedelta(seconds=600)
    assert "no run finished" in late.reason
    dry_only = [run("ok", at=1, counted=False)]
    assert not judge_job("sync-users", dry_only, now=T0 + timedelta(hours=1), state=state).healthy
    unknown = judge_job("sync-users", [], now=T0)
    assert not unknown.healthy
    assert unknown.as_of is None


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_min_synced_must_be_a_share(value: float) -> None:
    """--min-synced outside 0..1 is a configuration error that names the flag."""
    with pytest.raises(ConfigError, match="--min-synced"):
        check_min_synced(value)


def test_a_job_whose_every_key_is_parked_is_not_healthy() -> None:
    """An `ok` run in which every key was parked is not healthy: the reason says `no usable
    key: 40 parked`, and `daemon --once` exits 1; a job with no keys at all stays healthy."""
    parked = run("ok", keys=40, synced=0, skipped=40)
    verdict = judge_job("sync-users", [parked], now=T0 + timedelta(hours=1))
    assert (verdict.healthy, verdict.reason, verdict.exit_code) == (
        False,
        "no usable key: 40 parked",
        1,
    )
    assert verdict.kind is VerdictKind.NO_USABLE_KEY
    assert run_exit_code(parked) == 1
    aborted = judge_job("j", [run("aborted", error="x")], now=T0 + timedelta(hours=1))
    assert aborted.kind is VerdictKind.ENDED_EARLY
    empty = judge_job("sync-users", [run("ok", keys=0, synced=0)], now=T0 + timedelta(hours=1))
    assert empty.healthy
