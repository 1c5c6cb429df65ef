"""An incident is not mass death: keys that worked answering code 2 stop the run, a run in
which nothing succeeded parks nothing for code 2, and one command un-parks a run's parks."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sentinel_kit import ErrorClass, Profile, Reason, SQLiteStore, SyncJob
from sentinel_kit._incident import IncidentGuard
from sentinel_kit._key_health import (
    STRIKE_GAP,
    HealthState,
    KeyHealth,
    KeyRecord,
    strike,
)
from sentinel_kit._models import Outcome
from sentinel_kit.sync._job import KEY_RECORD_METHODS
from sentinel_kit.testing import FakeTorn, SentinelStore, torn_error

from .conftest import SECRET, SeedKey, make_key, run_cli, seed_sqlite, simple_keys, sync_args

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ENV = {"ENCRYPTION_KEY": SECRET}


# -- pure ------------------------------------------------------------------------------------


def ok(n: int) -> Outcome:
    return Outcome(f"k{n}", f"u{n}", Profile(n, f"P{n}"), ciphertext_fp=f"fp{n}")


def incorrect(n: int) -> Outcome:
    return Outcome(
        f"k{n}",
        f"u{n}",
        reason=Reason.KEY_INVALID,
        torn_code=2,
        error_class=ErrorClass.KEY_DEAD,
        ciphertext_fp=f"fp{n}",
    )


def worked(*ns: int, at: datetime = NOW - timedelta(days=1)) -> dict[str, KeyRecord]:
    return {f"k{n}": KeyRecord(f"k{n}", f"u{n}", f"fp{n}", succeeded_at=at) for n in ns}


def park(n: int) -> KeyHealth:
    return KeyHealth(f"k{n}", f"u{n}", f"fp{n}", HealthState.DEAD, 2, NOW, run_id="r")


def test_ten_keys_that_worked_answering_code_2_trip_the_guard() -> None:
    """The tenth key that worked within 7 days answering code 2 trips it; dead keys that
    never worked, and keys whose last success is older than 7 days, do not count."""
    records = {**worked(*range(10)), **worked(50, at=NOW - timedelta(days=8))}
    guard = IncidentGuard(records, now=NOW, torn_url="http://t")
    seen = [guard.observe(incorrect(n)) for n in (100, 101, 50, *range(9))]
    assert not any(seen)
    assert guard.observe(incorrect(9))
    assert guard.tripped
    assert "--torn-url (http://t)" in guard.message
    assert "10 keys that worked within 7 days" in guard.message


def test_a_success_between_resets_the_count_and_a_new_ciphertext_never_worked() -> None:
    """A success between code-2 answers starts the count again; a re-saved key (another
    ciphertext) is not one that worked."""
    guard = IncidentGuard(worked(*range(20)), now=NOW, torn_url="http://t")
    for n in range(9):
        assert not guard.observe(incorrect(n))
    assert not guard.observe(ok(99))
    resaved = Outcome("k9", "u9", torn_code=2, reason=Reason.KEY_INVALID, ciphertext_fp="new")
    assert not guard.observe(resaved)
    assert not any(guard.observe(incorrect(n)) for n in range(10, 18))
    assert not guard.tripped


def test_code_2_parks_wait_for_a_success_and_an_incident_undoes_them() -> None:
    """Code-2 parks are held until the run's first success; after an incident the code-2
    parks made since the first key of the streak are returned to un-park, earlier ones stay."""
    guard = IncidentGuard(worked(*range(10)), now=NOW, torn_url="http://t")
    guard.observe(incorrect(100))  # a dead key that never worked, before any success
    suspended = KeyHealth("k7", "u7", "fp", HealthState.SUSPENDED, 10, NOW)
    assert guard.admit([park(100), suspended]) == [suspended]
    guard.observe(ok(200))
    assert guard.admit([]) == [park(100)]  # released by the success
    guard.observe(incorrect(0))
    guard.observe(incorrect(101))  # never worked, but after the streak began
    assert guard.admit([park(0), park(101)]) == [park(0), park(101)]
    assert not any(guard.observe(incorrect(n)) for n in range(1, 9))
    assert guard.observe(incorrect(9))
    assert guard.admit([park(9)]) == []
    assert guard.to_unpark() == ["k0", "k101"]
    assert guard.strikes(now=NOW) == ([], [])  # a run with a success strikes no one


def test_three_no_success_runs_an_hour_apart_park() -> None:
    """Strikes count runs at least an hour apart; the third parks the key and says why; a
    new ciphertext starts again at one."""
    first, none = strike(None, incorrect(1), now=NOW)
    assert (first and first.strikes, none) == (1, None)
    assert strike(first, incorrect(1), now=NOW + STRIKE_GAP / 2) == (None, None)
    second, _ = strike(first, incorrect(1), now=NOW + STRIKE_GAP)
    third, parked = strike(second, incorrect(1), now=NOW + 2 * STRIKE_GAP, run_id="r3")
    assert third is not None
    assert third.strikes == 3
    assert parked is not None
    assert parked.state is HealthState.DEAD
    assert parked.run_id == "r3"
    assert (parked.reason or "").startswith("parked after 3 runs with no success anywhere")
    resaved = Outcome("k1", "u1", torn_code=2, reason=Reason.KEY_INVALID, ciphertext_fp="new")
    again, _ = strike(third, resaved, now=NOW + 3 * STRIKE_GAP)
    assert again is not None
    assert again.strikes == 1


# -- through the CLI, on SQLite ----------------------------------------------------------------


def sync(db: str, torn: FakeTorn, *extra: str) -> tuple[int, dict[str, Any], str]:
    result = run_cli(sync_args(db, torn, "--concurrency", "4", *extra), env=ENV)
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, report, result.stderr


def cli_json(*args: str) -> Any:
    result = run_cli([*args, "--json"], env=ENV)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def shift_back(path: Path, table: str, columns: tuple[str, ...], by: timedelta) -> None:
    """Make what was recorded happen ``by`` earlier (as if the run was that long ago)."""
    with sqlite3.connect(path) as conn:
        for column in columns:
            rows = conn.execute(f"SELECT rowid, {column} FROM {table}").fetchall()  # noqa: S608
            for rowid, value in rows:
                if value:
                    moved = (datetime.fromisoformat(value) - by).isoformat()
                    conn.execute(
                        f"UPDATE {table} SET {column} = ? WHERE rowid = ?",  # noqa: S608
                        (moved, rowid),
                    )


def test_keys_that_synced_yesterday_all_answering_code_2_stop_early_and_park_none(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """60 keys that synced yesterday all answering code 2: the run stops after about ten
    requests, parks none, exits 3 naming --torn-url, the job is unhealthy; the next run,
    with Torn answering, syncs everyone."""
    path = tmp_path / "s.db"
    db = seed_sqlite(path, simple_keys(60))
    code, report, _ = sync(db, torn)
    assert (code, report["synced"]) == (0, 60)
    shift_back(path, "sentinel_key_record", ("succeeded_at",), timedelta(days=1))
    shift_back(path, "sentinel_user_attempts", ("attempted_at",), timedelta(days=1))
    before = torn.count()
    with torn.outage(torn_error(2)):
        code, report, stderr = sync(db, torn)
    sent = torn.count() - before
    assert code == 3, stderr
    assert report["status"] == "aborted"
    assert "Incorrect key" in report["error"]
    assert "--torn-url" in report["error"]
    assert 10 <= sent <= 14  # ten, and what the other workers had in flight
    invalid = [f for f in report["failures"] if f["reason"] == "key_invalid"]
    assert len(invalid) == sent
    assert all(f["torn_code"] == 2 for f in invalid)
    assert cli_json("keys", "health", "--db", db) == []
    (shown,) = cli_json("status", "--db", db)
    assert shown["healthy"] is False
    assert "Incorrect key" in shown["reason"]
    assert len(report["error"]) <= 160 + len(torn.url)
    table = run_cli(["status", "--db", db], env=ENV).stdout
    assert "…" in table  # the reason is cut in the table; --json keeps it whole
    assert max(len(line) for line in table.splitlines()) <= 220
    # In text, the cause prints once on stderr, and the code-2 keys read as one line.
    with torn.outage(torn_error(2)):
        text = run_cli([a for a in sync_args(db, torn) if a != "--json"], env=ENV)
    assert text.returncode == 3, text.stderr
    assert text.stderr.count("Torn's API status page") == 1
    assert "failed: user" not in text.stdout
    assert " keys: key_invalid (torn code 2) (the first: user " in text.stdout
    code, report, stderr = sync(db, torn)
    assert (code, report["synced"], report["skipped"]) == (0, 60, 0), stderr


def test_a_first_migration_with_dead_keys_first_parks_them_and_trips_nothing(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """A first run over 100 users whose first 40 (user-id order) hold dead keys: every key
    is requested, the 40 are parked (by this run), nothing trips; `keys health --reset
    --run` un-parks them in one command."""
    keys = [
        SeedKey(f"key-{n:03d}", f"user-{n:03d}", make_key(n), created_at="2026-01-01")
        for n in range(100)
    ]
    for key in keys[:40]:
        torn.always(key.plaintext, torn_error(2))
    path = tmp_path / "m.db"
    db = seed_sqlite(path, keys)
    code, report, stderr = sync(db, torn)
    assert code == 1, stderr
    assert (report["status"], report["synced"], report["failed"]) == ("partial", 60, 40)
    assert torn.count() == 100
    parked = cli_json("keys", "health", "--db", db)
    assert sorted(h["key_id"] for h in parked) == [k.key_id for k in keys[:40]]
    result = run_cli(["keys", "health", "--db", db, "--reset", "--run", report["run_id"]], env=ENV)
    assert result.returncode == 0, result.stderr
    assert "un-parked 40 keys" in result.stdout
    assert cli_json("keys", "health", "--db", db) == []


def test_reset_by_code_and_time_unparks_only_what_it_selects(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """`keys health --reset --code 2 --since T` un-parks the code-2 parks from T on, and
    leaves a suspended key (code 10) parked; --run alone, --run with a KEY_ID, or nothing
    to select, are one-line usage errors."""
    keys = simple_keys(6)
    for key in keys[:3]:
        torn.always(key.plaintext, torn_error(2))
    torn.always(keys[3].plaintext, torn_error(10))
    db = seed_sqlite(tmp_path / "c.db", keys)
    since = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    code, _, stderr = sync(db, torn)
    assert code == 1, stderr
    assert len(cli_json("keys", "health", "--db", db)) == 4
    later = run_cli(
        ["keys", "health", "--db", db, "--reset", "--code", "2", "--since", "2099-01-01"], env=ENV
    )
    assert "un-parked 0 keys" in later.stdout
    result = run_cli(
        ["keys", "health", "--db", db, "--reset", "--code", "2", "--since", since], env=ENV
    )
    assert result.returncode == 0, result.stderr
    assert "un-parked 3 keys for code 2" in result.stdout
    assert [h["last_code"] for h in cli_json("keys", "health", "--db", db)] == [10]
    for args in (["--run", "r"], ["--reset", "k1", "--run", "r"], ["--reset"]):
        bad = run_cli(["keys", "health", "--db", db, *args], env=ENV)
        assert bad.returncode == 2
        assert bad.stderr.strip().startswith("error:")
        assert "Traceback" not in bad.stderr


def test_reset_names_unknown_runs_and_reads_durations(tmp_path: Path, torn: FakeTorn) -> None:
    """`--reset --run` with a run id the database never recorded exits 2 naming `sentinel-kit
    runs`; `--since 2h` means two hours back; a malformed --since is one line with an
    example; one key un-parked reads "it"; --since without --code un-parks every kind."""
    keys = simple_keys(3)
    torn.always(keys[0].plaintext, torn_error(2))
    torn.always(keys[1].plaintext, torn_error(10))
    db = seed_sqlite(tmp_path / "u.db", keys)
    code, _, stderr = sync(db, torn)
    assert code == 1, stderr
    for typo in ("nope", "00000000-0000-4000-8000-000000000000"):
        bad = run_cli(["keys", "health", "--db", db, "--reset", "--run", typo], env=ENV)
        assert bad.returncode == 2, bad.stdout
        assert bad.stderr.count("\n") == 1
        assert "sentinel-kit runs" in bad.stderr
    malformed = run_cli(["keys", "health", "--db", db, "--reset", "--since", "2 hours"], env=ENV)
    assert malformed.returncode == 2
    assert malformed.stderr.count("\n") == 1
    assert "e.g. 2026-11-28T10:00:00" in malformed.stderr
    assert "%Y" not in malformed.stderr
    one = run_cli(
        ["keys", "health", "--db", db, "--reset", "--code", "2", "--since", "2h"], env=ENV
    )
    assert one.returncode == 0, one.stderr
    assert "un-parked 1 key for code 2 since " in one.stdout
    assert one.stdout.rstrip().endswith("the next sync will request it")
    rest = run_cli(["keys", "health", "--db", db, "--reset", "--since", "1d"], env=ENV)
    assert "un-parked 1 key since" in rest.stdout  # the suspended one: every kind of park
    assert cli_json("keys", "health", "--db", db) == []
    helped = run_cli(["keys", "health", "--help"], env=ENV)
    assert "every kind of park" in " ".join(helped.stdout.split())


def test_runs_with_no_success_park_nothing_until_three_an_hour_apart(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """Five keys, all answering code 2, none ever worked: a run parks none; a second run
    within the hour adds no strike; after three runs an hour apart they park, `status`
    says why, and the job is unhealthy (no usable key) in `status` and `daemon --once`."""
    keys = simple_keys(5)
    for key in keys:
        torn.always(key.plaintext, torn_error(2))
    path = tmp_path / "n.db"
    db = seed_sqlite(path, keys)
    for _ in range(2):  # the second within the hour: still one strike
        code, report, stderr = sync(db, torn)
        assert (code, report["failed"]) == (1, 5), stderr
        assert cli_json("keys", "health", "--db", db) == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT DISTINCT strikes FROM sentinel_key_record").fetchall() == [(1,)]
    for _ in range(2):
        shift_back(path, "sentinel_key_record", ("first_strike_at", "last_strike_at"), STRIKE_GAP)
        code, report, _ = sync(db, torn)
    parked = cli_json("keys", "health", "--db", db)
    assert len(parked) == 5
    assert all(h["reason"].startswith("parked after 3 runs with no success") for h in parked)
    assert torn.count() == 20
    code, report, _ = sync(db, torn)  # every key parked: nothing to do, "ok"
    assert (code, report["status"], report["skipped"]) == (0, "ok", 5)
    assert torn.count() == 20
    (shown,) = cli_json("status", "--db", db)
    assert (shown["healthy"], shown["reason"]) == (False, "no usable key: 5 parked")
    assert shown["parked_after_no_success"] == 5
    # Known by the strikes stored, not by the words of the reason (other words, same count).
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE sentinel_key_health SET reason = 'struck: ' || reason")
    (reworded,) = cli_json("status", "--db", db)
    assert reworded["parked_after_no_success"] == 5
    text = run_cli(["status", "--db", db], env=ENV)
    assert "parked sync-users: 5 keys struck: parked after 3 runs with no success" in text.stdout
    once = run_cli(
        [
            *("daemon", "--db", db, "--torn-url", torn.url, "--max-rpm", "0"),
            *("--interval", "60", "--once"),
        ],
        env=ENV,
    )
    assert once.returncode == 1, once.stderr
    assert "no usable key: 5 parked" in once.stderr


@pytest.mark.parametrize("keys", [200], ids=["200-keys"])
def test_measure_an_incident_stops_within_seconds(
    tmp_path: Path, torn: FakeTorn, keys: int
) -> None:
    """200 keys that worked yesterday all answering code 2, Torn taking 50 ms an answer:
    the run stops within about ten requests and a few seconds, parks none."""
    path = tmp_path / "b.db"
    db = seed_sqlite(path, simple_keys(keys))
    assert sync(db, torn)[0] == 0
    shift_back(path, "sentinel_key_record", ("succeeded_at",), timedelta(days=1))
    shift_back(path, "sentinel_user_attempts", ("attempted_at",), timedelta(days=1))
    torn.latency = 0.05
    before = torn.count()
    started = time.monotonic()
    with torn.outage(torn_error(2)):
        code, report, _ = sync(db, torn)
    wall = time.monotonic() - started
    sent = torn.count() - before
    print(f"incident: {keys} keys, {sent} requests before the stop, {wall:.2f}s wall, exit {code}")
    assert code == 3
    assert sent <= 14
    assert report["skipped"] == 0
    assert cli_json("keys", "health", "--db", db) == []


@pytest.mark.postgres
def test_an_incident_on_postgres_parks_none_and_the_next_run_syncs_everyone(
    pg_url: str, torn: FakeTorn
) -> None:
    """On PostgreSQL too: keys that synced yesterday all answering code 2 stop the run
    early (exit 3), none is parked, and the next run syncs every user."""
    import psycopg

    store = SentinelStore(pg_url)
    store.migrate()
    store.seed(40)
    assert sync(pg_url, torn)[0] == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE sentinel_key_record SET succeeded_at = succeeded_at - interval '1d'")
        conn.execute(
            "UPDATE sentinel_user_attempts SET attempted_at = attempted_at - interval '1d'"
        )
    before = torn.count()
    with torn.outage(torn_error(2)):
        code, report, stderr = sync(pg_url, torn)
    assert code == 3, stderr
    assert torn.count() - before <= 14
    assert "Incorrect key" in report["error"]
    assert store.key_health() == {}
    code, report, stderr = sync(pg_url, torn)
    assert (code, report["synced"]) == (0, 40), stderr


class StoreOf02(SQLiteStore):
    """A user's store written for 0.2: it lacks the methods KeyHealthStore gained since."""

    def __getattribute__(self, name: str) -> Any:
        if name in KEY_RECORD_METHODS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return super().__getattribute__(name)


def test_a_store_written_for_0_2_runs_and_parks_code_2_as_before(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """A store without load_key_records, save_key_records and unpark_keys runs (no
    `internal` end): code-2 keys park as in 0.2, once warned which methods to add."""
    keys = simple_keys(4)
    for key in keys[:2]:
        torn.always(key.plaintext, torn_error(2))
    path = tmp_path / "old.db"
    seed_sqlite(path, keys)
    job = SyncJob(db=StoreOf02(path), secret=SECRET, torn_url=torn.url, max_rpm=0)
    with pytest.warns(DeprecationWarning, match="load_key_records, save_key_records, unpark_keys"):
        report = job.run()
    assert (report.status, report.synced, report.failed) == ("partial", 2, 2)
    assert {f.reason for f in report.failures} == {Reason.KEY_INVALID}
    parked = cli_json("keys", "health", "--db", f"sqlite:///{path}")
    assert sorted(h["key_id"] for h in parked) == sorted(k.key_id for k in keys[:2])
    again = job.run()  # warned once per store class; the parked keys are skipped
    assert (again.status, again.skipped, again.synced) == ("ok", 2, 2)
