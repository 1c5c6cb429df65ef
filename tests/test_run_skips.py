"""The run history keeps why a run's keys were skipped and what it counts (migration 018),
so `status`, `runs --json` and the health rule name "without access" for a run read back
from the database; a database before 018 still records its runs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

import sentinel_kit
from sentinel_kit import SyncJob
from sentinel_kit.testing import FakeTorn

from .conftest import ROOT, SECRET, run_cli, simple_keys
from .skip_syncs import TOTALS
from .test_reading import seed

KEYS = simple_keys(4)
ENV = {"ENCRYPTION_KEY": SECRET, "PYTHONPATH": str(ROOT)}
IMPORT = ("--import", "tests.skip_syncs")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database of each SQL backend with four keys and the sync's table."""
    url = (
        f"sqlite:///{tmp_path / 's.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    seed(url, KEYS)
    migrated = run_cli(["migrate", "--db", url, *IMPORT], env=ENV, cwd=ROOT)
    assert migrated.returncode == 0, migrated.stderr
    return url


def public_keys_run_twice(db: str, torn: FakeTorn) -> SyncJob:
    """Every key Public: the first run learns it (Torn's 16), the second skips them all."""
    for key in KEYS:
        torn.key_access(key.plaintext, "public")
    job = SyncJob(db=db, secret=SECRET, torn_url=torn.url, sync=TOTALS, max_rpm=0)
    job.run()
    second = job.run()
    assert (second.skipped, second.skipped_by) == (4, {"parked": 0, "access": 4})
    return job


def test_the_history_names_keys_skipped_without_access(db: str, torn: FakeTorn) -> None:
    """Read back from the database, the run says 4 without access (not "4 parked") in
    job.history(), `runs --json`, sentinel_kit.status() and `sentinel-kit status`."""
    job = public_keys_run_twice(db, torn)
    latest = job.history()[0]
    assert (latest.skipped_by, latest.unit) == ({"parked": 0, "access": 4}, "user")

    shown = run_cli(["runs", "--db", db, "--json", "--job", "trial-totals"], env=ENV, cwd=ROOT)
    assert shown.returncode == 0, shown.stderr
    (newest, _) = json.loads(shown.stdout)
    assert (newest["skipped_by"], newest["unit"]) == ({"parked": 0, "access": 4}, "user")

    report = sentinel_kit.status(db, ["trial-totals"])
    assert report["trial-totals"].health.reason == "no usable key: 4 without access"
    text = run_cli(["status", "--db", db, "--job", "trial-totals", *IMPORT], env=ENV, cwd=ROOT)
    assert "no usable key: 4 without access" in text.stdout
    assert "parked" not in text.stdout


def drop_skip_columns(db: str) -> None:
    """Make the database what the release before migration 018 left."""
    statements = (
        "ALTER TABLE sentinel_runs DROP COLUMN skipped_parked",
        "ALTER TABLE sentinel_runs DROP COLUMN skipped_access",
        "ALTER TABLE sentinel_runs DROP COLUMN unit",
        "DELETE FROM sentinel_migrations WHERE name = '018_run_skips.sql'",
    )
    if db.startswith("sqlite:///"):
        with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
            for s in statements:
                conn.execute(s)
        return
    with psycopg.connect(db, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


def test_a_database_before_migration_018_still_records_its_runs(
    db: str, torn: FakeTorn, logs: list[str]
) -> None:
    """Without the skip columns a run is recorded without them (one warning naming
    `migrate`), the history reads as before (its backlog too), and `migrate` adds them."""
    drop_skip_columns(db)
    job = public_keys_run_twice(db, torn)
    history = job.history()
    latest = history[0]
    # No stored unit: job.history() says its own sync's (a per-user sync: "user").
    assert (latest.status, latest.skipped, latest.skipped_by, latest.unit) == (
        "ok",
        4,
        None,
        "user",
    )
    assert history[0].stale_users is not None  # 017's backlog still recorded
    assert any("no skip columns" in line and "migrate" in line for line in logs)

    migrated = run_cli(["migrate", "--db", db, *IMPORT], env=ENV, cwd=ROOT)
    assert migrated.returncode == 0, migrated.stderr
    assert "018_run_skips.sql" in migrated.stdout
    again = job.run()
    assert job.history()[0].run_id == again.run_id
    assert job.history()[0].skipped_by == {"parked": 0, "access": 4}
