"""The metrics the alert rules need: a bounded cause for each aborted run, and each job's
schedule period."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sentinel_kit import RetryPolicy, RunStatus, SyncJob, WrongSecret
from sentinel_kit._report import ABORT_CAUSES, SyncReport
from sentinel_kit._schedule import CronSchedule, IntervalSchedule
from sentinel_kit._stop import Stop
from sentinel_kit.daemon._scheduler import alert_interval
from sentinel_kit.ops._metrics import Metrics
from sentinel_kit.testing import FakeTorn

from .conftest import SECRET, seed_sqlite, simple_keys


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def aborted(metrics: Metrics, job: str, cause: str) -> float | None:
    return samples(metrics).get(("sentinel_runs_aborted_total", (("cause", cause), ("job", job))))


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def job_on(db: str, url: str, **options: object) -> SyncJob:
    return SyncJob(
        db=db,
        secret=options.pop("secret", SECRET),  # type: ignore[arg-type]
        torn_url=url,
        max_rpm=0,
        per_key_rpm=0,
        policy=RetryPolicy.no_wait(),
        **options,  # type: ignore[arg-type]
    )


def test_a_run_torn_never_answers_is_aborted_torn_unreachable(tmp_path: Path) -> None:
    """No answer from Torn for several keys trips the breaker: the run ends aborted with
    cause torn_unreachable, and the metrics count it under that cause only."""
    db = seed_sqlite(tmp_path / "u.db", simple_keys(8))
    report = job_on(db, closed_url()).run()
    assert (report.status, report.cause) == (RunStatus.ABORTED, "torn_unreachable")
    metrics = Metrics()
    metrics.set_interval(report.job, 3600)
    metrics.observe_run(report, healthy=False)
    assert aborted(metrics, report.job, "torn_unreachable") == 1
    assert all(
        aborted(metrics, report.job, c) == 0 for c in ABORT_CAUSES if c != "torn_unreachable"
    )


def test_a_wrong_secret_and_a_deadline_have_their_own_causes(tmp_path: Path) -> None:
    """A wrong ENCRYPTION_KEY aborts with cause wrong_secret; a run past its timeout ends
    ``timeout`` with cause timeout; a run that ends ok has no cause."""
    db = seed_sqlite(tmp_path / "w.db", simple_keys(3))
    with FakeTorn() as torn:
        with pytest.raises(WrongSecret) as info:
            job_on(db, torn.url, secret="not the secret of these keys").run()
        wrong = info.value.report
        assert isinstance(wrong, SyncReport)
        assert (wrong.status, wrong.cause) == (RunStatus.ABORTED, "wrong_secret")
        ok = job_on(db, torn.url).run()
        assert (ok.status, ok.cause) == (RunStatus.OK, None)
    with FakeTorn(latency=3) as slow:
        late = job_on(db, slow.url, timeout=0.5).run()
    assert (late.status, late.cause) == (RunStatus.TIMEOUT, "timeout")


def test_a_report_without_a_cause_is_counted_by_its_status() -> None:
    """A plugin's report names no cause: timeout by its status, else other; the label never
    comes from the error text."""
    now = datetime.now(UTC)

    def report(status: RunStatus, error: str) -> SyncReport:
        return SyncReport("r", "plugin", status, now, now, 0, 0, 0, 0, 0, error=error)

    metrics = Metrics()
    metrics.observe_run(report(RunStatus.TIMEOUT, "store failed: torn_unreachable"), healthy=False)
    metrics.observe_run(report(RunStatus.ABORTED, "Torn unreachable"), healthy=False)
    metrics.observe_run(report(RunStatus.OK, ""), healthy=True)
    found = {
        labels: value
        for (name, labels), value in samples(metrics).items()
        if name == "sentinel_runs_aborted_total"
    }
    assert found == {
        (("cause", "timeout"), ("job", "plugin")): 1,
        (("cause", "other"), ("job", "plugin")): 1,
    }


def test_the_interval_for_alerts_is_the_schedule_period() -> None:
    """An interval's seconds; a cron schedule's gap between ticks; the longest gap when they
    differ, so "two intervals" never passes between two due runs."""
    now = datetime(2026, 12, 6, 10, 30, tzinfo=UTC)
    assert alert_interval(IntervalSchedule(600), now) == 600
    assert alert_interval(CronSchedule("*/15 * * * *"), now) == 900
    assert alert_interval(CronSchedule("0 * * * *"), now) == 3600
    assert alert_interval(CronSchedule("0 9,17 * * *"), now) == 16 * 3600
    metrics = Metrics()
    metrics.set_interval("sync-users:1/3", 3600)
    assert samples(metrics)[("sentinel_job_interval_seconds", (("job", "sync-users:1/3"),))] == 3600


def test_a_stopped_run_keeps_the_cause_its_stopper_gave(tmp_path: Path) -> None:
    """The daemon stops a run with a cause (a lost lease: other; an expired lease: store; a
    signal: interrupted, the default): the run's report carries it."""
    db = seed_sqlite(tmp_path / "s.db", simple_keys(3))
    with FakeTorn() as torn:
        for cause in ("other", "store", None):
            stop = Stop()
            if cause is None:
                stop.stop("stopped by SIGTERM after the grace period")
            else:
                stop.stop(f"stopped: {cause}", cause=cause)
            report = asyncio.run(job_on(db, torn.url).arun(stop=stop))
            assert (report.status, report.cause) == (RunStatus.ABORTED, cause or "interrupted")
            assert report.error == stop.reason
