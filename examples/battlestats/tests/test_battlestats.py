"""The battle-stats sync, run by sentinel-kit's engine against the fake Torn: its rows, and
the protections every sync gets (key health by scope, the global stop, the shared budget)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from battlestats import BATTLESTATS

from sentinel_kit import RunStatus
from sentinel_kit.testing import Answer, torn_error

HERE = Path(__file__).resolve().parent.parent
SYNC = "sync-battlestats"


def cli(*args: str, secret: str = "") -> subprocess.CompletedProcess[str]:
    """``sentinel-kit ARGS`` as a user runs it, from this folder (so --import finds us)."""
    command = Path(sys.executable).with_name("sentinel-kit")
    # Our own console script and arguments, no shell.
    return subprocess.run(  # noqa: S603
        [str(command), *args],
        cwd=HERE,
        env={"PATH": "", "LANG": "C.UTF-8", "PYTHONPATH": str(HERE), "ENCRYPTION_KEY": secret},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def answer(total: int) -> Answer:
    """A Torn-shaped answer holding both a profile and battle stats, so a key scripted with
    it answers /user/basic (sync-users) and /user/battlestats alike."""
    part = {"value": total // 4, "modifier": 0, "modifiers": []}
    stats = {p: part for p in ("strength", "defense", "speed", "dexterity")}
    body = {
        "profile": {"id": total, "name": f"Player{total}", "level": 1, "status": {}},
        "battlestats": {**stats, "total": total},
    }
    return Answer(200, json.dumps(body), {"Content-Type": "application/json"})


def rows(db: str) -> dict[str, tuple[int, int]]:
    """The table's rows: user -> (strength, total)."""
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        found = conn.execute("SELECT user_id, strength, total FROM user_battlestats").fetchall()
    return {user: (strength, total) for user, strength, total in found}


@pytest.fixture
def db(sentinel_store) -> str:
    """The test's database with user_battlestats, created by `migrate --import battlestats`."""
    result = cli("migrate", "--db", sentinel_store.url, "--import", "battlestats")
    assert result.returncode == 0, result.stderr
    assert "user_battlestats" in result.stdout
    return sentinel_store.url


def test_each_user_gets_a_row(fake_torn, seed_keys, run_job, db):
    """Every user's stats are upserted into user_battlestats, one row per user."""
    keys = seed_keys(3)
    for n, key in enumerate(keys):
        fake_torn.script(key.plaintext, answer(1_000 * (n + 1)))
    report = run_job(SYNC)
    assert (report.status, report.synced, report.written) == (RunStatus.OK, 3, 3)
    assert rows(db) == {k.user_id: (250 * (n + 1), 1_000 * (n + 1)) for n, k in enumerate(keys)}


def test_a_dry_run_writes_nothing(fake_torn, seed_keys, run_job, db):
    """SyncJob(sync=BATTLESTATS) in dry run asks Torn and shows its rows, writes none."""
    keys = seed_keys(2)
    for key in keys:
        fake_torn.script(key.plaintext, answer(4_000))
    job = run_job.sync_job(sync=BATTLESTATS)
    report = job.run(dry_run=True)
    assert report.synced == 2
    assert sorted(row["total"] for row in job.dry_rows) == [4_000, 4_000]
    assert rows(db) == {}


def test_a_dead_key_is_parked_for_sync_users_too(fake_torn, seed_keys, run_job, db, sentinel_store):
    """Code 2 (incorrect key) on /user/battlestats parks the key for every sync: the next
    sync-users run skips it without a request."""
    dead, alive = seed_keys(2)
    fake_torn.script(dead.plaintext, torn_error(2))
    fake_torn.script(alive.plaintext, answer(2_000))
    report = run_job(SYNC)
    assert [(f.user_id, f.reason.value) for f in report.failures] == [(dead.user_id, "key_invalid")]
    assert set(sentinel_store.key_health()) == {dead.key_id}
    users = run_job("sync-users")
    assert (users.synced, users.skipped) == (1, 1)
    assert fake_torn.count(dead.plaintext) == 1


def test_a_key_without_access_is_marked_for_this_sync_only(fake_torn, seed_keys, run_job, db):
    """Code 16 (access level too low) is not a dead key: sync-users still uses it, and this
    sync does not ask it again (until the key is re-saved)."""
    low, full = seed_keys(2)
    fake_torn.script(low.plaintext, torn_error(16))
    fake_torn.script(full.plaintext, answer(2_000))
    first = run_job(SYNC)
    assert [(f.user_id, f.torn_code) for f in first.failures] == [(low.user_id, 16)]
    users = run_job("sync-users")
    assert (users.synced, users.skipped) == (2, 0)
    asked = fake_torn.count(low.plaintext)
    fake_torn.script(full.plaintext, answer(3_000))
    second = run_job(SYNC)
    assert (second.synced, second.skipped, second.failed) == (1, 1, 0)
    assert fake_torn.count(low.plaintext) == asked
    assert rows(db) == {full.user_id: (750, 3_000)}


def test_an_ip_block_aborts_the_run(fake_torn, seed_keys, sentinel_store, db):
    """Code 8 (IP block) from the CLI: the run aborts with exit 3 after one request, and
    no key is parked (the block is this machine's, not the keys')."""
    seed_keys(6)
    args = ["--db", db, "--torn-url", fake_torn.url, "--concurrency", "1", "--json"]
    with fake_torn.outage(torn_error(8)):
        result = cli(
            "sync", "--import", "battlestats", "--job", SYNC, *args, secret=sentinel_store.secret
        )
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert (report["status"], fake_torn.count()) == ("aborted", 1)
    assert "IP block" in report["error"]
    assert sentinel_store.key_health() == {}


def test_two_syncs_in_one_daemon_share_one_budget(fake_torn, seed_keys, sentinel_store, db):
    """sync-users and sync-battlestats at once in one daemon under --max-rpm 4: together
    they send 4 requests in the minute, not 4 each, counted at the fake Torn; the time box
    defers the users left to the next runs."""
    keys = seed_keys(6)
    for n, key in enumerate(keys):
        fake_torn.always(key.plaintext, answer(1_000 * (n + 1)), times=4)
    jobs = ["--job", "sync-users", "--job", SYNC]
    limits = ["--max-rpm", "4", "--time-box", "2", "--once"]
    args = ["--db", db, "--torn-url", fake_torn.url, *jobs, *limits]
    result = cli("daemon", "--import", "battlestats", *args, secret=sentinel_store.secret)
    assert result.returncode == 0, result.stderr
    assert fake_torn.max_in_window(60) == fake_torn.count() == 4
    runs = {run.job: run for run in sentinel_store.runs()}
    assert sorted(runs) == sorted(["sync-users", SYNC])
    assert sum(run.synced for run in runs.values()) == 4
    assert sum(run.deferred for run in runs.values()) == 8


def test_the_daemon_runs_it_under_its_name(fake_torn, seed_keys, sentinel_store, db):
    """`sentinel-kit daemon --import battlestats --job sync-battlestats --once` runs one tick,
    writes the rows, and records the run under the sync's name."""
    keys = seed_keys(2)
    for key in keys:
        fake_torn.script(key.plaintext, answer(8_000))
    args = ["--db", db, "--torn-url", fake_torn.url, "--job", SYNC, "--once"]
    result = cli("daemon", "--import", "battlestats", *args, secret=sentinel_store.secret)
    assert result.returncode == 0, result.stderr
    assert rows(db) == {k.user_id: (2_000, 8_000) for k in keys}
    (run,) = sentinel_store.runs()
    assert (run.job, run.status, run.synced) == (SYNC, "ok", 2)
