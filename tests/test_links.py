"""Links that drop: the daemon and the stores behind a loopback proxy that drops connections
(as NATs and cloud load balancers drop idle ones), and stores opened twice at once.

The proxy (tests/linkproxy.py) sits between sentinel-kit and the real PostgreSQL. Runs are
the real daemon's, in-process, against the fake Torn; leases renew every ttl/3 here (short
ttls), so every renewal meets a connection the proxy dropped.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sentinel_kit import (
    JobContext,
    RunRecord,
    RunStatus,
    SyncJob,
    SyncReport,
    UserDataRow,
    open_store,
)
from sentinel_kit._key_health import HealthState, KeyHealth
from sentinel_kit._schedule import IntervalSchedule
from sentinel_kit._sync_jobs import sync_users
from sentinel_kit.daemon import Daemon, DaemonConfig, JobSpec
from sentinel_kit.daemon._daemon import MAX_RENEW_INTERVAL, renew_interval
from sentinel_kit.stores import PostgresStore
from sentinel_kit.testing import FakeTorn, SentinelStore

from .conftest import SECRET, run_cli, seed_sqlite, simple_keys
from .linkproxy import LinkProxy

MINUTE = IntervalSchedule(60)
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def seeded(pg_url: str) -> SentinelStore:
    """The real PostgreSQL, migrated, with 8 users of one key each."""
    store = SentinelStore(pg_url)
    store.migrate()
    store.seed(8)
    return store


def run_daemon_once(
    url: str, torn: FakeTorn, *, timeout: float, lease_ttl: float, concurrency: int = 1
) -> tuple[int, Daemon]:
    """Run sync-users' latest tick once with the real daemon; its exit code and itself."""
    settings = {
        "secret": SECRET,
        "torn_url": torn.url,
        "concurrency": concurrency,
        "max_rpm": 0,
        "per_key_rpm": 0,
        "request_timeout": 5.0,
        "max_attempts": 1,
        "retry_budget": 5.0,
        "park_suspended": 3600,
        "cooldown": 60,
        "pool_size": 4,
        "time_box": None,
    }
    daemon = Daemon(
        DaemonConfig(
            db_url=url,
            jobs=[(JobSpec("sync-users", MINUTE, sync_users), MINUTE)],
            timeout=timeout,
            lease_ttl=lease_ttl,
            grace=0.5,
            once=True,
            holder="linked",
            settings=settings,
        )
    )
    return asyncio.run(daemon.run(handle_signals=False)), daemon


def in_background(work: Callable[[], None]) -> threading.Thread:
    """Run ``work`` on a thread (faults injected while the daemon runs on this one)."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def lease_holder(pg_url: str) -> Any:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT holder FROM sentinel_leases WHERE name = 'sync-users'")
        return row.fetchone()


def test_renewals_come_at_least_every_minute() -> None:
    """Leases renew every ttl/3, but at least every 60 s: a default ttl of 3060 s would
    leave the connection idle for 17 minutes, past what NATs keep."""
    assert renew_interval(3060) == MAX_RENEW_INTERVAL == 60
    assert renew_interval(6) == 2


# -- the daemon behind the proxy -------------------------------------------------------------


@pytest.mark.postgres
def test_a_daemon_run_behind_a_path_that_drops_idle_connections_ends_ok(
    seeded: SentinelStore, pg_url: str, torn: FakeTorn, logs: list[str]
) -> None:
    """Behind a proxy that drops connections idle for 1 s, a 4 s daemon run whose lease
    renews every 2 s (each renewal on a dropped connection) ends ok, recorded ok, lease
    released; the log names each reconnect and never says another replica took over."""
    torn.latency = 0.5  # 8 keys one at a time: a 4 s run
    with LinkProxy(idle=1.0) as proxy:
        code, daemon = run_daemon_once(proxy.url(pg_url), torn, timeout=5.5, lease_ttl=6)
    report = daemon.results[0].report
    assert code == 0
    assert report is not None
    assert (report.status, report.synced) == (RunStatus.OK, 8)
    assert [(r.status, r.synced) for r in seeded.runs("sync-users")] == [("ok", 8)]
    assert lease_holder(pg_url) == (None,)
    assert len(seeded.user_data()) == 8
    assert proxy.dropped >= 2
    reconnects = [line for line in logs if "reconnecting" in line]
    assert any("renewing a lease" in line for line in reconnects)
    assert not any("took over" in line for line in logs)


@pytest.mark.postgres
def test_a_daemon_run_survives_every_connection_dropped_at_once(
    seeded: SentinelStore, pg_url: str, torn: FakeTorn, logs: list[str]
) -> None:
    """The proxy kills every connection mid-run (the run's store and the lease's), while
    Torn holds its answers past a renewal: the run still ends ok and recorded."""
    hold = torn.hold()
    dropped: list[int] = []

    with LinkProxy() as proxy:

        def fault() -> None:
            hold.wait_for(1, timeout=30)
            dropped.append(proxy.drop_all())
            time.sleep(2.5)  # past the renewal at 2 s
            hold.release()

        thread = in_background(fault)
        code, _ = run_daemon_once(proxy.url(pg_url), torn, timeout=5.5, lease_ttl=6, concurrency=4)
        thread.join()
    assert code == 0
    assert dropped[0] >= 2  # the daemon's own connection and the sync's
    assert [(r.status, r.synced) for r in seeded.runs("sync-users")] == [("ok", 8)]
    assert lease_holder(pg_url) == (None,)
    assert not any("took over" in line for line in logs)


@pytest.mark.postgres
def test_a_renewal_that_cannot_reach_the_database_is_retried_while_the_lease_lasts(
    seeded: SentinelStore, pg_url: str, torn: FakeTorn, logs: list[str]
) -> None:
    """The database unreachable for 3 s across a renewal (every 2 s, ttl 6 s): the renewal
    is retried until it answers, the log says how long the lease still lasts, and the run
    ends ok; nobody claims another replica took over."""
    hold = torn.hold()
    with LinkProxy() as proxy:

        def fault() -> None:
            hold.wait_for(1, timeout=30)
            proxy.refuse(3.0)
            time.sleep(3.5)
            hold.release()

        thread = in_background(fault)
        code, _ = run_daemon_once(proxy.url(pg_url), torn, timeout=5.5, lease_ttl=6)
        thread.join()
    assert code == 0
    retried = [line for line in logs if "renewal failed" in line]
    assert retried
    assert "retrying in" in retried[0]
    assert "lease valid for" in retried[0]
    assert any("renewed after" in line for line in logs)
    assert not any("took over" in line for line in logs)
    assert [r.status for r in seeded.runs("sync-users")] == ["ok"]


@pytest.mark.postgres
def test_a_lease_that_runs_out_unanswered_stops_the_run_as_unreachable(
    pg_url: str, logs: list[str]
) -> None:
    """The database unreachable from the first renewal on, with a job that runs until it
    is stopped: when the lease runs out unanswered the run is stopped saying the database
    was unreachable (not that another replica took over), and once the database is back
    the run is recorded aborted with that cause, not left running."""
    SentinelStore(pg_url).migrate()
    stopped: list[str] = []

    async def until_stopped(ctx: JobContext) -> SyncReport:
        # A plugin that ignores its deadline: only the heartbeat can end it.
        await ctx.stop.wait()
        stopped.append(ctx.stop.reason)
        return ctx.report(RunStatus.ABORTED, error=ctx.stop.reason)

    spec = JobSpec("patient", MINUTE, until_stopped)
    with LinkProxy() as proxy:
        daemon = Daemon(
            DaemonConfig(
                db_url=proxy.url(pg_url),
                jobs=[(spec, MINUTE)],
                timeout=3,
                lease_ttl=4,
                grace=0.5,
                once=True,
                holder="linked",
            )
        )

        def fault() -> None:
            deadline = time.monotonic() + 20
            while not any("started (fence" in line for line in logs):
                assert time.monotonic() < deadline, "the run never started"
                time.sleep(0.02)
            with proxy.down():
                while not stopped:
                    assert time.monotonic() < deadline, "the lease never ran out"
                    time.sleep(0.02)

        thread = in_background(fault)
        code = asyncio.run(daemon.run(handle_signals=False))
        thread.join()
    assert code == 3
    assert stopped == [
        "lease patient expired: the database was unreachable for 4s, no renewal answered"
    ]
    assert any("renewal failed" in line for line in logs)
    assert not any("took over" in line for line in logs)
    (run,) = SentinelStore(pg_url).runs("patient")
    assert (run.status, run.error) == ("aborted", stopped[0])


@pytest.mark.postgres
def test_daemon_once_behind_an_idle_dropping_path_exits_0_without_a_traceback(
    seeded: SentinelStore, pg_url: str, torn: FakeTorn
) -> None:
    """`sentinel-kit daemon --once` through a proxy that drops connections idle for 1 s
    exits 0, records the run ok and logs its reconnects as warnings, no traceback."""
    torn.latency = 0.5
    with LinkProxy(idle=1.0) as proxy:
        started = time.monotonic()
        result = run_cli(
            [
                "daemon",
                "--once",
                "--db",
                proxy.url(pg_url),
                "--torn-url",
                torn.url,
                "--max-rpm",
                "0",
                "--concurrency",
                "1",
                "--timeout",
                "5.5",
                "--lease-ttl",
                "6",
                "--interval",
                "60",
                "--time-box",
                "0",
            ],
            env={"ENCRYPTION_KEY": SECRET},
        )
        took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "reconnecting" in result.stderr
    assert [(r.status, r.synced) for r in seeded.runs("sync-users")] == [("ok", 8)]
    assert took < 20


# -- the stores ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_every_store_call_of_a_run_survives_a_dropped_connection(
    seeded: SentinelStore, pg_url: str
) -> None:
    """With the connection dropped before each call, every store call of a run (lease
    claim, renewal and release, abandoned runs, the tick claim, key pages, attempts, the
    upsert, key health, the run record, the alert state) works on a fresh connection, and
    the ones that must not run twice (the tick claim, the alert state) land once."""
    record = RunRecord(
        "00000000-0000-0000-0000-0000000000d4",
        "sync-users",
        "running",
        T0,
        scheduled_for=T0,
        holder="a",
        fence=1,
    )
    report = SyncReport(record.run_id, "sync-users", RunStatus.OK, T0, T0, 1, 1, 0, 0, 1)
    key = seeded.keys[0]
    parked = KeyHealth(key.key_id, key.user_id, "fp", HealthState.DEAD, 2, T0)

    with LinkProxy() as proxy:

        async def scenario() -> tuple[list[Any], int]:
            store = PostgresStore(proxy.url(pg_url))
            async with store:
                fence = await store.claim_lease("sync-users", "a", 60)
                assert fence is not None
                calls: list[Callable[[], Any]] = [
                    lambda: store.abandon_runs("sync-users", fence=fence.token, holder="a"),
                    lambda: store.begin_run(record),
                    lambda: store.count_keys(),
                    lambda: store.record_attempts(["u"], at=T0, job="sync-users", fence=fence),
                    lambda: store.upsert_user_data([UserDataRow("u", "N", 1, T0)], fence=fence),
                    lambda: store.save_key_health([parked], []),
                    lambda: store.renew_lease(fence, "a", 60),
                    lambda: store.record_run(report, scheduled_for=T0, holder="a", fence=1),
                    lambda: store.set_alert_state("sync-users", healthy=False, as_of=T0),
                    lambda: store.release_lease(fence, "a"),
                ]
                answers = []
                for call in calls:
                    assert proxy.drop_all() == 1
                    answers.append(await call())
                pages = []
                proxy.drop_all()
                async for page in store.iter_key_pages(page_size=3):
                    pages.append(len(page))
                    proxy.drop_all()  # between two pages too
                return [*answers, pages], store.reconnects

        answers, reconnects = asyncio.run(scenario())
    assert answers == [0, True, 8, 1, 1, None, True, None, True, True, [3, 3, 2]]
    assert reconnects == 12  # one per call, one per query of the pages (one page, then the rest)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*), min(status) FROM sentinel_runs").fetchone() == (
            1,
            "ok",
        )
        assert conn.execute("SELECT alert_state FROM sentinel_jobs").fetchone() == ("unhealthy",)
        assert conn.execute("SELECT name FROM user_data").fetchall() == [("N",)]


@pytest.mark.postgres
def test_a_database_that_stays_away_is_a_store_error_after_two_reconnects(
    pg_url: str,
) -> None:
    """A connection that drops and cannot be made again: ConnectionLost (a StoreError,
    exit 3) naming what was being done, after two fresh attempts."""
    from sentinel_kit._errors import ConnectionLost

    with LinkProxy() as proxy:

        async def scenario() -> None:
            async with PostgresStore(proxy.url(pg_url), connect_timeout=2) as store:
                with proxy.down():
                    await store.count_keys()

        with pytest.raises(ConnectionLost, match="counting keys") as info:
            asyncio.run(scenario())
    assert info.value.exit_code == 3


# -- re-entrant stores ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database with 6 keys: a SQLite file, or the real PostgreSQL."""
    if request.param == "sqlite":
        return seed_sqlite(tmp_path / "shared.db", simple_keys(6))
    url: str = request.getfixturevalue("pg_url")
    store = SentinelStore(url)
    store.migrate()
    store.seed(simple_keys(6))
    return url


def test_reading_a_job_while_its_run_is_live_uses_a_connection_of_its_own(
    shared_db: str, torn: FakeTorn
) -> None:
    """A notebook reads `job.rows()`, `job.keys()`, `job.history()` (blocking, on their own
    thread and loop) and `await job.arows()` while `await job.arun()` of the same job is
    live: every read works, and the run, whose store stayed open, ends ok with every key
    synced and recorded."""
    job = SyncJob(db=shared_db, secret=SECRET, torn_url=torn.url, max_rpm=0, concurrency=2)
    hold = torn.hold()

    async def notebook() -> tuple[SyncReport, list[Any]]:
        run = asyncio.create_task(job.arun())
        await asyncio.to_thread(hold.wait_for, 1)
        seen = [
            len(job.rows()),
            len(job.keys()),
            len(job.history()),
            len(await job.arows()),
        ]
        hold.release()
        return await run, seen

    report, seen = asyncio.run(notebook())
    assert seen == [0, 6, 0, 0]
    assert (report.status, report.synced) == (RunStatus.OK, 6)
    assert len(job.rows()) == 6
    assert [r.status for r in job.history()] == ["ok"]


def test_nested_opening_gives_an_open_copy_and_leaves_the_outer_one_open(tmp_path: Path) -> None:
    """`async with store` inside `async with store` gets an opened copy of its own; closing
    it leaves the outer one usable, and the outer exit closes the store."""
    db = seed_sqlite(tmp_path / "nested.db", simple_keys(2))

    async def scenario() -> list[Any]:
        store = open_store(db)
        async with store as outer:
            async with store as inner:
                assert inner is not outer
                inside = await inner.count_keys()
            after = await outer.count_keys()
        return [outer is store, inside, after, await _closed(store)]

    assert asyncio.run(scenario()) == [True, 2, 2, True]


async def _closed(store: Any) -> bool:
    try:
        await store.count_keys()
    except Exception as exc:
        return "not open" in str(exc)
    return False
