"""Each whole run records the backlog it left (migration 017), and a database without the
columns still records its runs."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from sentinel_kit import RetryPolicy, SyncJob, open_store, shard_of
from sentinel_kit.sync.builtin.faction_members import SYNC_FACTION_MEMBERS
from sentinel_kit.sync.builtin.key_info import SYNC_KEY_INFO
from sentinel_kit.testing import FakeTorn

from .conftest import SECRET, run_cli, simple_keys
from .test_reading import seed

KEYS = simple_keys(4)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database of each SQL backend holding four good keys."""
    url = (
        f"sqlite:///{tmp_path / 'b.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    seed(url, KEYS)
    return url


def job_on(db: str, torn: FakeTorn, **options: object) -> SyncJob:
    return SyncJob(
        db=db,
        secret=SECRET,
        torn_url=torn.url,
        max_rpm=0,
        per_key_rpm=0,
        policy=RetryPolicy.no_wait(),
        **options,  # type: ignore[arg-type]
    )


def drop_backlog_columns(db: str) -> None:
    """Make the database what the release before migration 017 left."""
    statements = (
        "ALTER TABLE sentinel_runs DROP COLUMN stale_users",
        "ALTER TABLE sentinel_runs DROP COLUMN oldest_attempt_at",
        "DELETE FROM sentinel_migrations WHERE name = '017_run_backlog.sql'",
    )
    if db.startswith("sqlite:///"):
        with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
            for s in statements:
                conn.execute(s)
        return
    with psycopg.connect(db, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


def test_a_whole_run_records_the_backlog_it_left(db: str, torn: FakeTorn) -> None:
    """The first run leaves no stale user and its oldest attempt is its own; a run whose keys
    Torn refuses leaves them attempted (not stale); a dry run and a run of a few users record
    no backlog; `runs --json` and job.history() show it."""
    job = job_on(db, torn)
    before = datetime.now(UTC)
    report = job.run()
    assert (report.stale_users, report.synced) == (0, 4)
    assert report.oldest_attempt_at is not None
    assert before <= report.oldest_attempt_at <= report.finished_at

    job.run(users=[KEYS[0].user_id])
    job.run(dry_run=True)
    history = job.history()
    assert [(r.counted, r.stale_users) for r in history] == [(False, None), (True, 0)]
    whole = history[1]
    assert whole.oldest_attempt_at == report.oldest_attempt_at
    age = whole.oldest_attempt_age_s
    assert age is not None
    assert 0 <= age <= (report.finished_at - before).total_seconds()
    shown_row = history.record(whole)  # the notebook table's columns
    assert (shown_row["stale_users"], shown_row["oldest_attempt_age_s"]) == (0, age)

    shown = run_cli(["runs", "--db", db, "--json"], env={"ENCRYPTION_KEY": SECRET})
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    runs = rows if isinstance(rows, list) else rows["runs"]
    assert [r["stale_users"] for r in runs] == [None, 0]
    assert runs[1]["oldest_attempt_at"] == report.oldest_attempt_at.isoformat()
    assert runs[1]["oldest_attempt_age_s"] == age


def age_attempts(db: str, at: datetime) -> None:
    """Move every user's last attempt back to ``at``."""

    async def go() -> None:
        async with open_store(db) as store:
            await store.record_attempts([k.user_id for k in KEYS], at=at, job="sync-users")

    asyncio.run(go())


def test_users_not_attempted_within_an_interval_are_stale(db: str, torn: FakeTorn) -> None:
    """Users a time-boxed run defers, last attempted more than the schedule's interval ago
    (one hour without a schedule), are the stale users it records, and the oldest attempt
    is theirs. A shard's run counts its own shard's users only."""
    job_on(db, torn).run()
    old = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    age_attempts(db, old)
    report = job_on(db, torn, time_box=1e-9).run()
    assert report.deferred >= 1
    assert (report.stale_users, report.oldest_attempt_at) == (report.deferred, old)
    assert job_on(db, torn).history()[0].stale_users == report.deferred

    for index in (0, 1):
        age_attempts(db, old)
        name = f"sync-users:{index}/2"
        users = sum(1 for k in KEYS if shard_of(k.user_id, 2) == index)
        shard = job_on(db, torn, shard=(index, 2), job=name, time_box=1e-9).run()
        assert shard.keys_total == users
        assert shard.stale_users == shard.deferred, name
        assert job_on(db, torn, job=name).history()[0].stale_users == shard.deferred


def test_a_database_before_migration_017_still_records_its_runs(
    db: str, torn: FakeTorn, logs: list[str]
) -> None:
    """Without the backlog columns a run is recorded without its backlog (one warning naming
    `migrate`), the history reads as before, and `migrate` adds the columns back."""
    drop_backlog_columns(db)
    job = job_on(db, torn)
    report = job.run()
    assert report.stale_users == 0
    history = job.history()
    assert [(r.run_id, r.status, r.stale_users) for r in history] == [(report.run_id, "ok", None)]
    assert any("no backlog columns" in line and "migrate" in line for line in logs)

    migrated = run_cli(["migrate", "--db", db], env={"ENCRYPTION_KEY": SECRET})
    assert migrated.returncode == 0, migrated.stderr
    assert "017_run_backlog.sql" in migrated.stdout
    again = job.run()
    assert [r.stale_users for r in job.history()] == [0, None]
    assert job.history()[0].run_id == again.run_id


def test_syncs_whose_units_are_not_users_record_no_users_backlog(db: str, torn: FakeTorn) -> None:
    """sync-key-info's units are keys (each asked when its info is a day old) and a
    per-faction sync's are factions: neither leaves a users' backlog, so their runs record
    none (a users' count would call every user stale between two checks of a key) and
    `status` shows none for them; sync-users on the same database still records its own."""
    for n, key in enumerate(KEYS):
        torn.key_access(key.plaintext, "full", owner=(100 + n, 4242))
    env = {"ENCRYPTION_KEY": SECRET}
    migrated = run_cli(["migrate", "--db", db, "--job", "sync-faction-members"], env=env)
    assert migrated.returncode == 0, migrated.stderr

    checked = job_on(db, torn, sync=SYNC_KEY_INFO).run()
    assert (checked.synced, checked.stale_users, checked.oldest_attempt_at) == (4, None, None)
    again = job_on(db, torn, sync=SYNC_KEY_INFO).run()  # every key fresh: nothing asked
    assert (again.keys_total, again.stale_users) == (0, None)
    roster = job_on(db, torn, sync=SYNC_FACTION_MEMBERS).run()
    assert (roster.unit, roster.synced, roster.stale_users) == ("faction", 1, None)
    assert job_on(db, torn).run().stale_users == 0

    shown = run_cli(["runs", "--db", db, "--json"], env=env)
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    runs = rows if isinstance(rows, list) else rows["runs"]
    assert sorted((r["job"], r["stale_users"]) for r in runs) == [
        ("sync-faction-members", None),
        ("sync-key-info", None),
        ("sync-key-info", None),
        ("sync-users", 0),
    ]
    names = ("--job", "sync-key-info", "--job", "sync-faction-members", "--job", "sync-users")
    status = run_cli(["status", "--db", db, *names, "--json"], env=env)
    assert status.returncode == 0, status.stderr
    shown_jobs = json.loads(status.stdout)
    jobs = shown_jobs if isinstance(shown_jobs, list) else shown_jobs["jobs"]
    assert {j["job"]: j["stale_users"] for j in jobs} == {
        "sync-key-info": None,
        "sync-faction-members": None,
        "sync-users": 0,
    }
