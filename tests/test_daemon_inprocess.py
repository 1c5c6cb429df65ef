"""The daemon in-process on a FakeClock: ticks, missed ticks, replicas, plugin failures,
cancellation, without waiting for wall-clock ticks.

The scheduler is the clock's only sleeper, so :class:`FakeClock` jumps from tick to tick
in schedule order. Leases, run history and job state are real (SQLite files and the real
PostgreSQL); tests/test_daemon.py keeps the subprocess tests of signals, kill -9 and
SIGSTOP that only a real process can show.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sentinel_kit import ConfigError, JobContext, RunRecord, RunStatus, SyncReport, open_store
from sentinel_kit._schedule import IntervalSchedule
from sentinel_kit._sync_jobs import sync_users
from sentinel_kit.daemon import Daemon, DaemonConfig, JobSpec
from sentinel_kit.daemon._jobs import load_jobs
from sentinel_kit.testing import FakeClock, FakeTorn, SentinelStore

from .conftest import SECRET, run_cli, seed_sqlite, simple_keys

#: A virtual start just after a minute boundary, so an interval of 60 ticks on the minute.
T0 = datetime(2026, 11, 28, 12, 0, 0, 500000, tzinfo=UTC)
MINUTE = IntervalSchedule(60)

Handler = Callable[[JobContext], Awaitable[SyncReport]]


def config(db: str, *jobs: tuple[JobSpec, Any], **extra: Any) -> DaemonConfig:
    """A daemon config with short timeouts for in-process tests."""
    return DaemonConfig(
        db_url=db,
        jobs=list(jobs),
        timeout=30,
        lease_ttl=60,
        grace=0.5,
        holder=extra.pop("holder", "in-process"),
        **extra,
    )


def sync_settings(torn: FakeTorn) -> dict[str, Any]:
    """The CLI's sync settings, for the built-in sync-users job."""
    return {
        "secret": SECRET,
        "torn_url": torn.url,
        "concurrency": 4,
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


def history(db: str, job: str) -> list[RunRecord]:
    """The job's runs, oldest first."""

    async def read() -> list[RunRecord]:
        async with open_store(db) as store:
            return await store.list_runs(job=job, limit=100)

    return sorted(asyncio.run(read()), key=lambda r: r.started_at)


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A migrated SQLite database with 6 keys."""
    return seed_sqlite(tmp_path / "daemon.db", simple_keys(6))


def counting(calls: list[datetime], *, stop_after: int, daemon: list[Daemon]) -> Handler:
    """A job that records its ticks and stops the daemon after ``stop_after`` of them."""

    async def handler(ctx: JobContext) -> SyncReport:
        calls.append(ctx.scheduled_for)
        if len(calls) >= stop_after:
            daemon[0].stop("enough ticks")
        return ctx.report(RunStatus.OK)

    return handler


def test_ticks_follow_the_grid_without_waiting(db: str) -> None:
    """An every-minute job on a FakeClock runs 12:01, 12:02, ... each once, in order, and
    the run history holds one ok run per tick."""
    calls: list[datetime] = []
    holder: list[Daemon] = []
    spec = JobSpec("tick-tock", MINUTE, counting(calls, stop_after=5, daemon=holder))
    clock = FakeClock(T0)
    daemon = Daemon(config(db, (spec, MINUTE)), clock=clock)
    holder.append(daemon)
    assert asyncio.run(daemon.run(handle_signals=False)) == 0
    minute = T0.replace(microsecond=0)
    assert calls == [minute + timedelta(minutes=n) for n in range(1, 6)]
    runs = history(db, "tick-tock")
    assert [(r.scheduled_for, r.status) for r in runs] == [(t, "ok") for t in calls]
    assert clock.slept_until[: len(calls)] == calls


def test_run_on_start_runs_the_latest_tick_at_once(db: str) -> None:
    """With run_on_start the first run is the tick at or before now (12:00), not 12:01."""
    calls: list[datetime] = []
    holder: list[Daemon] = []
    spec = JobSpec("eager", MINUTE, counting(calls, stop_after=2, daemon=holder))
    daemon = Daemon(config(db, (spec, MINUTE), run_on_start=True), clock=FakeClock(T0))
    holder.append(daemon)
    asyncio.run(daemon.run(handle_signals=False))
    assert calls[0] == T0.replace(microsecond=0)


def test_missed_ticks_are_coalesced_into_one_run(db: str, logs: list[str]) -> None:
    """A run that overlaps five ticks (the process paused) is followed by one run for the
    latest tick, with a warning, never by a pile of runs."""
    calls: list[datetime] = []
    clock = FakeClock(T0)
    daemon: Daemon

    async def slow(ctx: JobContext) -> SyncReport:
        calls.append(ctx.scheduled_for)
        if len(calls) == 2:
            clock.advance(5 * 60)  # paused for five minutes mid-run
        if len(calls) == 4:
            daemon.stop("enough")
        return ctx.report(RunStatus.OK)

    spec = JobSpec("sleepy", MINUTE, slow)
    daemon = Daemon(config(db, (spec, MINUTE)), clock=clock)
    asyncio.run(daemon.run(handle_signals=False))
    minute = T0.replace(microsecond=0)
    assert calls == [minute + timedelta(minutes=n) for n in (1, 2, 7, 8)]
    assert any("4 tick(s) missed" in line for line in logs)


def test_a_failing_plugin_job_is_recorded_aborted_and_the_others_go_on(
    db: str, logs: list[str]
) -> None:
    """A job whose handler raises is recorded `aborted` with its one-line cause at every
    tick, while another job keeps running on its own schedule."""
    good_calls: list[datetime] = []
    bad_calls: list[datetime] = []
    daemon: Daemon

    def enough() -> None:
        if len(good_calls) >= 3 and len(bad_calls) >= 3:
            daemon.stop("enough ticks")

    async def broken(ctx: JobContext) -> SyncReport:
        bad_calls.append(ctx.scheduled_for)
        enough()
        raise RuntimeError("the faction API moved\nsecond line of detail")

    async def fine(ctx: JobContext) -> SyncReport:
        good_calls.append(ctx.scheduled_for)
        enough()
        return ctx.report(RunStatus.OK)

    bad, good = JobSpec("broken", MINUTE, broken), JobSpec("fine", MINUTE, fine)
    daemon = Daemon(config(db, (bad, MINUTE), (good, MINUTE)), clock=FakeClock(T0))
    assert asyncio.run(daemon.run(handle_signals=False)) == 0
    failed = history(db, "broken")
    assert len(failed) >= 3
    assert {r.status for r in failed} == {"aborted"}
    assert failed[0].error == "job broken failed: RuntimeError: the faction API moved"
    assert {r.status for r in history(db, "fine")} == {"ok"}
    assert len(history(db, "fine")) >= 3
    assert any("job broken failed" in line for line in logs)


def test_a_job_returning_no_report_is_recorded_aborted(db: str) -> None:
    """A handler that returns something other than a SyncReport is a plugin bug: aborted."""

    async def sloppy(ctx: JobContext) -> SyncReport:
        return None  # type: ignore[return-value]

    daemon = Daemon(config(db, (JobSpec("sloppy", MINUTE, sloppy), MINUTE), once=True))
    assert asyncio.run(daemon.run(handle_signals=False)) == 3
    (run,) = history(db, "sloppy")
    assert run.status == "aborted"
    assert "not a SyncReport" in (run.error or "")


def test_cancelling_the_daemon_cancels_its_handler_and_propagates(db: str) -> None:
    """Cancelling daemon.run() mid-run cancels the job's handler (no orphan task) and the
    cancellation reaches the caller instead of being swallowed."""
    started = asyncio.Event()
    seen: list[str] = []

    async def stubborn(ctx: JobContext) -> SyncReport:
        started.set()
        try:
            await asyncio.Event().wait()  # ignores ctx.stop on purpose
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return ctx.report()  # pragma: no cover

    async def scenario() -> tuple[bool, set[asyncio.Task[Any]]]:
        daemon = Daemon(
            config(db, (JobSpec("stubborn", MINUTE, stubborn), MINUTE), run_on_start=True),
            clock=FakeClock(T0),
        )
        task = asyncio.create_task(daemon.run(handle_signals=False))
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        left = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        return task in done and task.cancelled(), left

    cancelled, left = asyncio.run(scenario())
    assert cancelled
    assert seen == ["cancelled"]
    assert left == set()


@pytest.fixture(params=["sqlite", "postgres"])
def replica_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One database for two replicas: a SQLite file, or the real PostgreSQL."""
    if request.param == "sqlite":
        return seed_sqlite(tmp_path / "replicas.db", [])
    url: str = request.getfixturevalue("pg_url")

    async def migrate() -> None:
        async with open_store(url) as store:
            await store.migrate()

    asyncio.run(migrate())
    return url


def test_two_replicas_run_each_tick_exactly_once(replica_db: str) -> None:
    """Two daemons offered the same ticks at the same moment: each tick runs exactly once
    (one holds the lease, or the tick is already taken); the other skips it."""
    ran: list[str] = []

    async def work(ctx: JobContext) -> SyncReport:
        ran.append(ctx.job)
        await asyncio.sleep(0.01)  # long enough for the two to overlap
        return ctx.report(RunStatus.OK)

    spec = JobSpec("shared", MINUTE, work)
    a = Daemon(config(replica_db, (spec, MINUTE), holder="replica-a"))
    b = Daemon(config(replica_db, (spec, MINUTE), holder="replica-b"))
    ticks = [T0.replace(microsecond=0) + timedelta(minutes=n) for n in range(6)]

    async def offer() -> list[tuple[bool, bool]]:
        outcome = []
        for tick in ticks:
            ra, rb = await asyncio.gather(a.run_tick(spec, tick), b.run_tick(spec, tick))
            outcome.append((ra.report is not None, rb.report is not None))
            # Late replica: the tick is taken even with the lease free now.
            late = await b.run_tick(spec, tick)
            assert late.report is None
            assert late.exit_code == 0  # the job is healthy
        return outcome

    outcome = asyncio.run(offer())
    assert all(x != y for x, y in outcome)  # exactly one of the two, every tick
    runs = history(replica_db, "shared")
    assert [r.scheduled_for for r in runs] == ticks
    assert {r.holder for r in runs} <= {"replica-a", "replica-b"}
    assert len(ran) == len(ticks)


def test_a_held_lease_skips_the_tick(db: str) -> None:
    """While another holder's lease is unexpired, the tick is skipped, not waited for."""

    async def work(ctx: JobContext) -> SyncReport:
        raise AssertionError("must not run")  # pragma: no cover

    spec = JobSpec("guarded", MINUTE, work)

    async def scenario() -> Any:
        async with open_store(db) as store:
            assert await store.claim_lease("guarded", "someone-else", 600) is not None
        return await Daemon(config(db, (spec, MINUTE))).run_tick(spec, T0)

    result = asyncio.run(scenario())
    assert result.report is None
    assert history(db, "guarded") == []


def test_once_runs_the_latest_tick_and_a_second_once_does_not_repeat_it(
    db: str, torn: FakeTorn
) -> None:
    """`once` runs sync-users' latest due tick at once; another `once` for the same tick
    finds it taken, runs nothing, and answers with the job's health."""
    spec = JobSpec("sync-users", MINUTE, sync_users)

    def once(holder: str) -> tuple[int, Daemon]:
        daemon = Daemon(
            config(db, (spec, MINUTE), once=True, holder=holder, settings=sync_settings(torn)),
            clock=FakeClock(T0),
        )
        return asyncio.run(daemon.run(handle_signals=False)), daemon

    first, d1 = once("cron-1")
    second, d2 = once("cron-2")
    assert (first, second) == (0, 0)
    assert d1.results[0].report is not None and d1.results[0].report.synced == 6  # noqa: PT018
    assert d2.results[0].report is None
    assert d2.results[0].health is not None and d2.results[0].health.healthy  # noqa: PT018
    assert [r.scheduled_for for r in history(db, "sync-users")] == [T0.replace(microsecond=0)]
    assert sum(torn.count(k.plaintext) for k in simple_keys(6)) == 6  # each key fetched once


@pytest.mark.postgres
def test_shards_split_the_users_and_each_runs_every_tick(pg_url: str, torn: FakeTorn) -> None:
    """Shards 0/2 and 1/2 both run the same tick, with their own leases and run history, and
    sync disjoint halves that together cover every user (two daemons, the real PostgreSQL)."""
    store = SentinelStore(pg_url)
    store.migrate()
    store.seed(20)
    spec = JobSpec("sync-users", MINUTE, sync_users)

    def shard(i: int) -> Daemon:
        settings = sync_settings(torn)
        return Daemon(
            config(
                pg_url,
                (spec, MINUTE),
                once=True,
                run_on_start=True,
                shard=(i, 2),
                holder=f"shard-{i}",
                settings=settings,
            ),
            clock=FakeClock(T0),
        )

    async def both() -> list[int]:
        first, second = shard(0), shard(1)
        codes = await asyncio.gather(
            first.run(handle_signals=False), second.run(handle_signals=False)
        )
        return list(codes)

    assert asyncio.run(both()) == [0, 0]
    zero, one = history(pg_url, "sync-users:0/2"), history(pg_url, "sync-users:1/2")
    assert len(zero) == 1 and len(one) == 1  # noqa: PT018
    tick = T0.replace(microsecond=0)
    assert zero[0].scheduled_for == one[0].scheduled_for == tick  # the same tick, both ran
    assert zero[0].synced > 0 and one[0].synced > 0  # noqa: PT018
    assert zero[0].synced + one[0].synced == 20
    assert sum(torn.count(k.plaintext) for k in store.keys) == 20  # each key fetched once
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM user_data").fetchone() == (20,)
        leases = conn.execute("SELECT name FROM sentinel_leases ORDER BY name").fetchall()
    assert leases == [("sync-users:0/2",), ("sync-users:1/2",)]


@pytest.mark.postgres
def test_status_fails_when_the_last_success_is_too_old(pg_url: str, torn: FakeTorn) -> None:
    """`status --fail-if-older-than 1h` exits 0 after a fresh run of the daemon (sync-users on
    its default schedule, in-process), 1 once it is 2 h old; `runs` lists it."""
    store = SentinelStore(pg_url)
    store.migrate()
    store.seed(20)
    never = run_cli(["status", "--db", pg_url, "--fail-if-older-than", "1h"])
    assert never.returncode == 1
    spec = load_jobs()["sync-users"]  # hourly at minute 0, as `daemon` runs it by default
    daemon = Daemon(
        config(
            pg_url,
            (spec, spec.schedule),
            once=True,
            run_on_start=True,
            holder="status-a",
            settings=sync_settings(torn),
        )
    )
    assert asyncio.run(daemon.run(handle_signals=False)) == 0
    fresh = run_cli(["status", "--db", pg_url, "--fail-if-older-than", "1h", "--json"])
    assert fresh.returncode == 0, fresh.stderr
    shown = json.loads(fresh.stdout)[0]
    assert shown["job"] == "sync-users" and shown["last_run"]["status"] == "ok"  # noqa: PT018
    assert shown["next_tick"].endswith(":00:00+00:00")  # hourly at minute 0 by default
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE sentinel_runs SET finished_at = finished_at - interval '2 hours'")
    stale = run_cli(["status", "--db", pg_url, "--fail-if-older-than", "1h"])
    assert stale.returncode == 1
    assert "no healthy run within 1h" in stale.stderr
    listed = run_cli(["runs", "--db", pg_url, "--json"])
    entry = json.loads(listed.stdout)[0]
    for field in (
        "run_id",
        "job",
        "scheduled_for",
        "holder",
        "fence",
        "status",
        "started_at",
        "finished_at",
    ):
        assert field in entry
    assert entry["holder"] == "status-a"


def test_a_job_sees_its_deadline_from_the_timeout(db: str) -> None:
    """ctx.deadline is the run's start plus --timeout, and ctx.seconds_left() counts to it."""
    seen: list[tuple[float, float]] = []

    async def timed(ctx: JobContext) -> SyncReport:
        seen.append(((ctx.deadline - ctx.started_at).total_seconds(), ctx.seconds_left()))
        return ctx.report(RunStatus.OK)

    daemon = Daemon(config(db, (JobSpec("timed", MINUTE, timed), MINUTE), once=True))
    assert asyncio.run(daemon.run(handle_signals=False)) == 0
    ((budget, left),) = seen
    assert budget == 30  # config()'s timeout
    assert 20 < left <= 30


def test_a_plugin_that_fails_to_import_is_named_with_its_cause_and_chained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_jobs raises one line naming the module and the cause, the plugin's own error
    chained for library callers."""
    (tmp_path / "broken_plugin.py").write_text(
        "import json\n\ndef helper():\n    raise RuntimeError('boom\\nsecond line')\n\nhelper()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        load_jobs(["broken_plugin"])
    message = str(caught.value)
    assert "\n" not in message
    assert "'broken_plugin'" in message
    assert "RuntimeError: boom" in message
    assert "second line" not in message
    assert "PYTHONPATH" not in message  # it was found: the hint would mislead
    assert isinstance(caught.value.__cause__, RuntimeError)
    with pytest.raises(ConfigError, match=r"'no_such_plugin'.*PYTHONPATH"):
        load_jobs(["no_such_plugin"])


def test_the_cli_shows_a_plugin_traceback_only_at_debug(tmp_path: Path) -> None:
    """`--import` of a failing plugin prints one error line; --log-level DEBUG adds the
    plugin's traceback, down to its own line."""
    (tmp_path / "broken_plugin.py").write_text(
        "def helper():\n    raise RuntimeError('boom')\n\nhelper()\n"
    )
    db = seed_sqlite(tmp_path / "s.db", simple_keys(1))
    env = {"PYTHONPATH": str(tmp_path)}
    args = ["status", "--db", db, "--import", "broken_plugin"]
    quiet = run_cli(args, env=env)
    assert quiet.returncode == 2, quiet.stderr
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) == 1, quiet.stderr
    assert lines[0].startswith("error: cannot import job module 'broken_plugin': RuntimeError")
    assert "RuntimeError: boom" in lines[0]
    loud = run_cli([*args, "--log-level", "DEBUG"], env=env)
    assert loud.returncode == 2
    assert "Traceback" in loud.stderr
    assert "broken_plugin.py" in loud.stderr
    assert "in helper" in loud.stderr
