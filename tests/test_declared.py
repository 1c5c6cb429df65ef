"""Syncs as declarations: a user's own sync (battle stats, `tests/declared_syncs.py`, under
20 lines) runs on the one engine, from the CLI, the daemon and `SyncJob(sync=)`, on SQLite,
PostgreSQL and Supabase (the PostgREST stand-in), with the protections of sync-users.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sentinel_kit import (
    ConfigError,
    KeyCipher,
    RetryPolicy,
    RunStatus,
    SyncJob,
    Table,
    TornSync,
    key_fingerprint,
)
from sentinel_kit.stores import open_store
from sentinel_kit.stores._sql import SQLStore
from sentinel_kit.stores._supabase import SupabaseStore
from sentinel_kit.testing import (
    Answer,
    FakeTorn,
    SeedKey,
    SentinelStore,
    make_key,
    simple_keys,
    torn_error,
)
from sentinel_kit.testing._stores import aseed

from .conftest import ROOT, SECRET, run_cli, sync_args
from .declared_syncs import BATTLESTATS
from .stores.supabase_helpers import PROJECT_URL, SERVICE_KEY, live_stand_in

ENV = {"ENCRYPTION_KEY": SECRET, "PYTHONPATH": str(ROOT)}
IMPORT = ("--import", "tests.declared_syncs")
DECLARED = (*IMPORT, "--job", "sync-battlestats")


def stats(total: int, strength: int | None = None) -> Answer:
    """A Torn-shaped /user/battlestats answer."""
    strength = total // 4 if strength is None else strength
    part = {"value": strength, "modifier": 0, "modifiers": []}
    body = {
        "battlestats": {
            "strength": part,
            "defense": part,
            "speed": part,
            "dexterity": part,
            "total": total,
        }
    }
    return Answer(200, json.dumps(body), {"Content-Type": "application/json"})


def script(
    torn: FakeTorn, keys: list[SeedKey], special: dict[int, Answer] | None = None
) -> dict[str, int]:
    """Script each key's battle stats (or its ``special`` answer, by index); return the
    total each user should get."""
    totals = {}
    for n, key in enumerate(keys):
        totals[key.user_id] = 1_000 * (n + 1)
        torn.script(key.plaintext, (special or {}).get(n) or stats(totals[key.user_id]))
    return totals


def ensure(store: SQLStore) -> None:
    """Create the declared table as `migrate --import` does."""

    async def go() -> None:
        async with store:
            table = BATTLESTATS.table
            await store.ensure_table(table.name, table.all_columns(), table.key)

    asyncio.run(go())


def stored_sqlite(path: Path) -> dict[str, tuple[int, int]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT user_id, strength, total FROM user_battlestats").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def stored_pg(url: str) -> dict[str, tuple[int, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT user_id, strength, total FROM user_battlestats").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


@pytest.fixture
def lite(tmp_path: Path) -> tuple[Path, SentinelStore]:
    """A migrated SQLite database with the declared table (created by `migrate --import`)."""
    path = tmp_path / "declared.db"
    result = run_cli(["migrate", "--db", f"sqlite:///{path}", *IMPORT], env=ENV, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "created table user_battlestats" in result.stdout
    return path, SentinelStore(f"sqlite:///{path}", secret=SECRET)


def test_the_cli_runs_a_declared_sync_into_its_table(
    lite: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """`sync --import M --job NAME` asks the declared endpoint once per key and upserts
    parse's rows, with user_id and updated_at, into the declared table; user_data is
    untouched, and the run is recorded under the sync's name."""
    path, store = lite
    keys = store.seed(4)
    totals = script(torn, keys)
    result = run_cli(sync_args(path, torn, *DECLARED), env=ENV, cwd=ROOT)
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert (report["job"], report["status"], report["synced"]) == ("sync-battlestats", "ok", 4)
    assert stored_sqlite(path) == {u: (t // 4, t) for u, t in totals.items()}
    assert all("/user/battlestats" in r.path for r in torn.log)
    assert store.user_data() == {}
    assert [r.job for r in store.runs()] == ["sync-battlestats"]
    job = SyncJob(db=f"sqlite:///{path}", secret=SECRET, sync=BATTLESTATS)
    shown = job.rows()
    assert {r["user_id"]: r["total"] for r in shown} == totals
    assert "user_battlestats: 4 rows" in repr(shown)
    with sqlite3.connect(path) as conn:
        stamps = conn.execute("SELECT count(*) FROM user_battlestats WHERE updated_at IS NOT NULL")
        assert stamps.fetchone()[0] == 4


def test_a_second_migrate_adds_declared_columns_and_never_drops(
    tmp_path: Path, lite: tuple[Path, SentinelStore]
) -> None:
    """A declaration that grew a column gets it from `migrate`; one it no longer declares
    stays, with its data."""
    path, _ = lite
    module = tmp_path / "grown_syncs.py"
    module.write_text(
        "import sentinel_kit\n"
        "GROWN = sentinel_kit.TornSync('sync-grown', endpoint='/user/battlestats',\n"
        "    parse=dict, interval=3600, table=sentinel_kit.Table('user_battlestats',\n"
        "    key=['user_id'], columns={'total': 'bigint', 'speed': 'double precision'}))\n"
    )
    env = {**ENV, "PYTHONPATH": f"{ROOT}:{tmp_path}"}
    result = run_cli(["migrate", "--db", f"sqlite:///{path}", "--import", "grown_syncs"], env=env)
    assert result.returncode == 0, result.stderr
    assert "added column user_battlestats.speed (double precision)" in result.stdout
    with sqlite3.connect(path) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(user_battlestats)")]
    assert columns == ["user_id", "updated_at", "strength", "total", "speed"]


def test_a_dry_run_of_a_declared_sync_writes_nothing(
    lite: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """`SyncJob(sync=).run(dry_run=True)` fetches and shows its would-be rows, and writes
    neither the table nor the run history."""
    path, store = lite
    keys = store.seed(3)
    totals = script(torn, keys)
    job = SyncJob(db=f"sqlite:///{path}", secret=SECRET, torn_url=torn.url, sync=BATTLESTATS)
    report = job.run(dry_run=True)
    assert (report.status, report.synced, report.written) == (RunStatus.OK, 3, 0)
    assert {r["user_id"]: r["total"] for r in job.dry_rows} == totals
    assert stored_sqlite(path) == {}
    assert store.runs() == []


def test_hostile_answers_of_a_declared_sync_fail_one_key_each(
    lite: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """An answer parse cannot read, and a value past the declared bigint, each fail one key
    as bad_response; the others are written."""
    path, store = lite
    keys = store.seed(4)
    bad = {1: Answer(200, '{"battlestats": {}}'), 2: stats(2**63, strength=1)}
    totals = script(torn, keys, bad)
    job = SyncJob(
        db=f"sqlite:///{path}",
        secret=SECRET,
        torn_url=torn.url,
        sync=BATTLESTATS,
        policy=RetryPolicy.no_wait(),
    )
    report = job.run()
    assert report.status is RunStatus.PARTIAL
    assert {f.user_id: f.reason.value for f in report.failures} == {
        keys[1].user_id: "bad_response",
        keys[2].user_id: "bad_response",
    }
    good = {keys[0].user_id, keys[3].user_id}
    assert stored_sqlite(path) == {u: (t // 4, t) for u, t in totals.items() if u in good}


def test_code_2_on_a_declared_sync_parks_the_key_for_sync_users_too(
    lite: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """A key Torn calls invalid (code 2) on the new endpoint is parked for every sync:
    the next sync-users run skips it without a request."""
    path, store = lite
    keys = store.seed(3)
    script(torn, keys, {0: torn_error(2)})
    job = SyncJob(db=f"sqlite:///{path}", secret=SECRET, torn_url=torn.url, sync=BATTLESTATS)
    assert job.run().failures[0].reason.value == "key_invalid"
    assert set(store.key_health()) == {keys[0].key_id}
    before = torn.count(keys[0].plaintext)
    users = SyncJob(db=f"sqlite:///{path}", secret=SECRET, torn_url=torn.url).run()
    assert (users.skipped, users.synced) == (1, 2)
    assert torn.count(keys[0].plaintext) == before


@pytest.fixture(params=["postgres", "supabase"])
def remote(request: pytest.FixtureRequest, pg_url: str) -> Iterator[Any]:
    """A store factory of a migrated PostgreSQL database with the declared table, direct
    or through Supabase's Data API (the PostgREST stand-in, live)."""
    with live_stand_in(pg_url) as server:
        ensure(open_store(pg_url))  # type: ignore[arg-type]
        if request.param == "postgres":
            yield lambda: open_store(pg_url)
        else:
            yield lambda: SupabaseStore(
                PROJECT_URL, service_key=SERVICE_KEY, transport=server.transport(), retry_wait=0
            )


@pytest.mark.postgres
def test_a_declared_sync_writes_its_table_on_postgres_and_supabase(
    remote: Any, pg_url: str, torn: FakeTorn
) -> None:
    """`SyncJob(sync=)` on PostgreSQL and Supabase writes the declared table through the one
    generic fenced upsert (sentinel_upsert_rows), twice without duplicating a row."""
    keys = simple_keys(5)

    async def seed() -> None:
        async with remote() as store:
            await aseed(store, keys, SECRET)

    asyncio.run(seed())
    for _ in range(2):
        totals = script(torn, keys)
        job = SyncJob(db=remote(), secret=SECRET, torn_url=torn.url, sync=BATTLESTATS)
        report = job.run()
        assert (report.status, report.synced, report.written) == (RunStatus.OK, 5, 5)
    assert stored_pg(pg_url) == {u: (t // 4, t) for u, t in totals.items()}
    shown = job.rows()
    assert {r["user_id"]: r["total"] for r in shown} == totals
    assert shown.columns[:2] == ("user_id", "updated_at")
    assert [r["user_id"] for r in job.rows(users=[keys[1].user_id])] == [keys[1].user_id]


@pytest.mark.postgres
def test_migrate_creates_a_declared_table_locked(pg_url: str) -> None:
    """`migrate --import` creates the declared table on PostgreSQL with row-level security
    on, no policy, and nothing for anon or authenticated; `--print` holds the same."""
    with live_stand_in(pg_url):  # Supabase's roles exist
        result = run_cli(["migrate", "--db", pg_url, *IMPORT], env=ENV, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        with psycopg.connect(pg_url) as conn:
            rls = conn.execute(
                "SELECT relrowsecurity FROM pg_class WHERE oid = 'user_battlestats'::regclass"
            ).fetchone()
            grants = conn.execute(
                "SELECT grantee FROM information_schema.role_table_grants "
                "WHERE table_name = 'user_battlestats' AND grantee IN ('anon', 'authenticated')"
            ).fetchall()
            policies = conn.execute(
                "SELECT count(*) FROM pg_policies WHERE tablename = 'user_battlestats'"
            ).fetchone()
    assert rls == (True,)
    assert grants == []
    assert policies == (0,)
    printed = run_cli(["migrate", "--print", *IMPORT], env=ENV, cwd=ROOT)
    assert 'CREATE TABLE IF NOT EXISTS "user_battlestats"' in printed.stdout
    assert "ARRAY['user_battlestats']" in printed.stdout


def test_a_sync_may_not_write_the_keys_or_our_own_tables() -> None:
    """The generic upsert refuses user_keys and sentinel_ tables, whatever a declaration says."""

    def parse(answer: Any) -> dict[str, Any]:
        return {"api_key": "x"}

    with pytest.raises(ConfigError, match="table user_keys is the app's keys"):
        TornSync(
            "sync-hostile",
            endpoint="/user/basic",
            parse=parse,
            interval=60,
            table=Table("user_keys", key=["user_id"]),
        )

    async def go() -> None:
        async with open_store("sqlite:///:memory:", create=True) as store:
            await store.migrate()
            await store.upsert_rows("user_keys", ["user_id"], [{"user_id": "u"}])

    with pytest.raises(Exception, match="may not write user_keys"):
        asyncio.run(go())


def test_each_sync_keeps_its_own_fair_order(
    lite: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """Attempts are kept per sync: battle stats' attempts of two users do not move them in
    sync-users' order, and its own next run asks the users it never attempted first."""
    path, store = lite
    keys = store.seed(4)
    db = f"sqlite:///{path}"
    by_fp = {key_fingerprint(k.plaintext): k.user_id for k in keys}

    def order(run: Any) -> list[str]:
        start = len(torn.log)
        run()
        return [by_fp[r.fingerprint] for r in torn.log[start:]]

    users = [k.user_id for k in keys]
    script(torn, keys[:2])
    first = SyncJob(db=db, secret=SECRET, torn_url=torn.url, sync=BATTLESTATS, concurrency=1)
    assert order(lambda: first.run(users=users[:2])) == users[:2]
    plain = SyncJob(db=db, secret=SECRET, torn_url=torn.url, concurrency=1)
    assert order(plain.run) == users  # never attempted by sync-users: user_id order
    script(torn, keys)
    again = SyncJob(db=db, secret=SECRET, torn_url=torn.url, sync=BATTLESTATS, concurrency=1)
    assert order(again.run) == users[2:] + users[:2]
    with sqlite3.connect(path) as conn:
        kept = conn.execute("SELECT sync, count(*) FROM sentinel_unit_attempts GROUP BY sync")
        assert kept.fetchall() == [("sync-battlestats", 4)]


def test_the_daemon_runs_a_declared_sync_once(
    lite: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """`daemon --import M --job NAME --once` runs the declared sync's latest due tick on its
    own schedule, records it under its name, and exits 0 for a healthy run."""
    path, store = lite
    keys = store.seed(3)
    totals = script(torn, keys)
    args = ["daemon", "--db", f"sqlite:///{path}", "--torn-url", torn.url, "--max-rpm", "0"]
    result = run_cli([*args, *DECLARED, "--once"], env=ENV, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert stored_sqlite(path) == {u: (t // 4, t) for u, t in totals.items()}
    (run,) = store.runs()
    assert (run.job, run.status, run.synced) == ("sync-battlestats", "ok", 3)


def test_a_per_user_sync_asks_one_key_per_user(
    lite: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """A declared per-user sync asks each user's newest key, and the next one only after a
    key-scoped failure (here code 2); the keys it did not ask are skipped, never failed."""
    path, store = lite
    made = [f"2026-01-0{day}T00:00:00+00:00" for day in (1, 2, 3)]
    keys = [SeedKey(f"k-a{n}", "user-a", make_key(n), created_at=made[n]) for n in range(3)] + [
        SeedKey(f"k-b{n}", "user-b", make_key(10 + n), created_at=made[n]) for n in range(2)
    ]
    store.seed(keys)
    torn.script(keys[2].plaintext, torn_error(2))  # user-a's newest key: dead
    torn.script(keys[1].plaintext, stats(2_000))
    torn.script(keys[4].plaintext, stats(5_000))  # user-b's newest key
    job = SyncJob(db=f"sqlite:///{path}", secret=SECRET, torn_url=torn.url, sync=BATTLESTATS)
    report = job.run()
    assert (report.synced, report.skipped, report.failed) == (2, 2, 1)
    assert [torn.count(k.plaintext) for k in keys] == [0, 1, 1, 0, 1]
    assert {u: t for u, (_, t) in stored_sqlite(path).items()} == {
        "user-a": 2_000,
        "user-b": 5_000,
    }


def test_code_16_marks_the_key_for_that_sync_only(
    lite: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """A key whose access is too low for the new endpoint (16) is not parked: sync-users
    keeps using it, the declared sync does not ask it again, until the key is re-saved."""
    path, store = lite
    keys = store.seed(2)
    script(torn, keys, {0: torn_error(16)})
    db = f"sqlite:///{path}"
    first = SyncJob(db=db, secret=SECRET, torn_url=torn.url, sync=BATTLESTATS).run()
    assert [(f.reason.value, f.torn_code) for f in first.failures] == [("torn_error", 16)]
    assert store.key_health() == {}
    users = SyncJob(db=db, secret=SECRET, torn_url=torn.url).run()
    assert (users.synced, users.skipped) == (2, 0)
    asked = torn.count(keys[0].plaintext)
    script(torn, keys[1:])
    second = SyncJob(db=db, secret=SECRET, torn_url=torn.url, sync=BATTLESTATS).run()
    assert (second.synced, second.skipped, second.failed) == (1, 1, 0)
    assert torn.count(keys[0].plaintext) == asked
    # Re-saved (a new ciphertext): asked again.
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE user_keys SET api_key = ? WHERE id = ?",
            [KeyCipher(SECRET).encrypt(keys[0].plaintext), keys[0].key_id],
        )
    script(torn, keys)
    third = SyncJob(db=db, secret=SECRET, torn_url=torn.url, sync=BATTLESTATS).run()
    assert (third.synced, third.skipped) == (2, 0)


def test_doctor_names_a_declared_column_whose_type_differs(tmp_path: Path, torn: FakeTorn) -> None:
    """`doctor --import` checks each declared table: a column of another type than declared
    is named (and left as it is); a table as declared passes."""
    path = tmp_path / "doctor.db"
    url = f"sqlite:///{path}"
    assert run_cli(["migrate", "--db", url], env=ENV, cwd=ROOT).returncode == 0
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE user_battlestats (user_id TEXT PRIMARY KEY, updated_at TEXT, "
            "strength INTEGER, total TEXT)"
        )
    args = ["doctor", "--db", url, "--torn-url", torn.url, "--json", *IMPORT]
    checks = {c["name"]: c for c in json.loads(run_cli(args, env=ENV, cwd=ROOT).stdout)["checks"]}
    declared = checks["declared_tables"]
    assert declared["status"] == "fail"
    assert "user_battlestats.total is TEXT, declared bigint" in declared["detail"]
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE user_battlestats")
    assert run_cli(["migrate", "--db", url, *IMPORT], env=ENV, cwd=ROOT).returncode == 0
    checks = {c["name"]: c for c in json.loads(run_cli(args, env=ENV, cwd=ROOT).stdout)["checks"]}
    assert checks["declared_tables"]["status"] == "pass"


def test_a_declared_sync_records_and_replays_its_endpoint(
    tmp_path: Path, lite: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """`sync --record` keeps the new endpoint's answers (keys as fingerprints), and
    `sync --replay` runs the declared sync from them alone, writing the same rows."""
    path, store = lite
    keys = store.seed(3)
    totals = script(torn, keys)
    cassette = tmp_path / "battlestats.yaml"
    recorded = run_cli(
        sync_args(path, torn, *DECLARED, "--record", str(cassette)), env=ENV, cwd=ROOT
    )
    assert recorded.returncode == 0, recorded.stderr
    text = cassette.read_text()
    assert "/user/battlestats" in text
    assert not any(k.plaintext in text for k in keys)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM user_battlestats")
        conn.execute("DELETE FROM sentinel_unit_attempts")
    sent = len(torn.log)
    replayed = run_cli(
        sync_args(path, torn, *DECLARED, "--replay", str(cassette)), env=ENV, cwd=ROOT
    )
    assert replayed.returncode == 0, replayed.stderr
    assert len(torn.log) == sent  # nothing reached the fake Torn
    assert stored_sqlite(path) == {u: (t // 4, t) for u, t in totals.items()}


def test_an_incident_during_a_declared_sync_stops_it_and_parks_none(
    lite: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """Keys that worked (on sync-users) all answering code 2 on the new endpoint are an
    incident, not dead keys: the declared sync stops after about ten requests, exits 3,
    and parks none of them."""
    path, store = lite
    keys = store.seed(40)
    users = run_cli(sync_args(path, torn), env=ENV, cwd=ROOT)
    assert users.returncode == 0, users.stderr
    before = torn.count()
    with torn.outage(torn_error(2)):
        args = sync_args(path, torn, *DECLARED, "--concurrency", "4")
        result = run_cli(args, env=ENV, cwd=ROOT)
    report = json.loads(result.stdout)
    assert result.returncode == 3, result.stderr
    assert (report["status"], "Incorrect key" in report["error"]) == ("aborted", True)
    assert 10 <= torn.count() - before <= 14  # ten, and what other workers had in flight
    assert store.key_health() == {}
    assert len(keys) == 40


def test_the_plan_and_keys_of_a_per_user_sync_count_one_key_per_user(
    lite: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """`job.plan()` of a declared per-user sync budgets one request per user (the newest
    usable key; the others spare) and leaves out a key marked without access for it;
    `job.keys()` shows that mark per key; sync-users' plan still counts every key."""
    path, store = lite
    made = [f"2026-01-0{day}T00:00:00+00:00" for day in (1, 2, 3)]
    keys = [SeedKey(f"k-a{n}", "user-a", make_key(n), created_at=made[n]) for n in range(3)] + [
        SeedKey(f"k-b{n}", "user-b", make_key(10 + n), created_at=made[n]) for n in range(2)
    ]
    store.seed(keys)
    db = f"sqlite:///{path}"
    job = SyncJob(db=db, secret=SECRET, torn_url=torn.url, max_rpm=60, sync=BATTLESTATS)
    plan = job.plan()
    assert {e.key_id: e.action for e in plan.entries} == {
        "k-a0": "spare",
        "k-a1": "spare",
        "k-a2": "request",
        "k-b0": "spare",
        "k-b1": "request",
    }
    assert (plan.budget.users, plan.budget.requests) == (2, 2)

    torn.script(keys[2].plaintext, torn_error(16))  # user-a's newest key: no access
    torn.script(keys[1].plaintext, stats(2_000))
    torn.script(keys[4].plaintext, stats(5_000))
    assert job.run().synced == 2
    plan = job.plan()
    actions = {e.key_id: e.action for e in plan.entries}
    assert (actions["k-a2"], actions["k-a1"], actions["k-a0"]) == ("no_access", "request", "spare")
    assert (plan.budget.users, plan.budget.requests) == (2, 2)
    assert "1 no access" in plan.render_text().splitlines()[0]
    table = job.keys()
    shown = {k.key_id: k.no_access for k in table}
    assert shown == {"k-a0": False, "k-a1": False, "k-a2": True, "k-b0": False, "k-b1": False}
    assert "no_access" in table.columns

    users = SyncJob(db=db, secret=SECRET, torn_url=torn.url, max_rpm=60).plan()
    assert (users.budget.users, users.budget.requests) == (2, 5)
    every = SyncJob(db=db, secret=SECRET).keys()
    assert not any(k.no_access for k in every)


def test_a_dry_run_of_a_declared_sync_shows_its_diff_by_key(
    lite: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """A dry run of a declared sync lists, per would-be row, whether it is new, changed
    (with the old values of the columns that differ) or unchanged against the table's
    current rows by key, in `changes` of `sync --dry-run --json` and the report; it writes
    nothing."""
    path, store = lite
    keys = store.seed(3)
    script(torn, keys[:2])
    db = f"sqlite:///{path}"
    job = SyncJob(db=db, secret=SECRET, torn_url=torn.url, sync=BATTLESTATS)
    assert job.run(users=[keys[0].user_id, keys[1].user_id]).written == 2
    before = stored_sqlite(path)
    script(torn, keys, {1: stats(9_000, strength=2_000)})
    result = run_cli(sync_args(path, torn, *DECLARED, "--dry-run"), env=ENV, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    changes = {c["user_id"]: c for c in json.loads(result.stdout)["changes"]}
    assert changes == {
        keys[0].user_id: {
            "user_id": keys[0].user_id,
            "change": "unchanged",
            "key": {"user_id": keys[0].user_id},
            "row": {"strength": 250, "total": 1_000},
            "old": {},
        },
        keys[1].user_id: {
            "user_id": keys[1].user_id,
            "change": "changed",
            "key": {"user_id": keys[1].user_id},
            "row": {"strength": 2_000, "total": 9_000},
            "old": {"strength": 500, "total": 2_000},
        },
        keys[2].user_id: {
            "user_id": keys[2].user_id,
            "change": "new",
            "key": {"user_id": keys[2].user_id},
            "row": {"strength": 750, "total": 3_000},
            "old": None,
        },
    }
    script(torn, keys, {1: stats(9_000, strength=2_000)})
    report = job.run(dry_run=True)
    assert [c.kind.value for c in report.changes] == ["unchanged", "changed", "new"]
    assert f"user {keys[1].user_id}: changed -> strength=2000, total=9000" in str(report)
    assert "<th>old</th>" in report._repr_html_()
    assert stored_sqlite(path) == before


def test_status_lists_every_registered_job_and_a_declared_syncs_own_backlog(
    lite: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """`status` lists every job a daemon registered in the database, also when its module
    is not imported here; with it imported, a declared sync's stale_users counts its own
    attempts (sentinel_unit_attempts), not sync-users'."""
    path, store = lite
    keys = store.seed(3)
    script(torn, keys)
    db = ["--db", f"sqlite:///{path}"]
    daemon = ["daemon", *db, "--torn-url", torn.url, "--max-rpm", "0", *DECLARED, "--once"]
    assert run_cli(daemon, env=ENV, cwd=ROOT, timeout=60).returncode == 0
    plain = run_cli(["status", *db, "--json"], env=ENV, cwd=ROOT)
    assert plain.returncode == 0, plain.stderr
    jobs = {j["job"]: j for j in json.loads(plain.stdout)}
    assert list(jobs) == ["sync-users", "sync-battlestats"]
    assert jobs["sync-battlestats"]["last_run_status"] == "ok"
    assert jobs["sync-users"]["stale_users"] == 3  # sync-users never ran
    imported = run_cli(["status", *db, "--json", *IMPORT], env=ENV, cwd=ROOT)
    assert imported.returncode == 0, imported.stderr
    jobs = {j["job"]: j for j in json.loads(imported.stdout)}
    assert list(jobs) == ["sync-users", "sync-battlestats"]
    assert (
        jobs["sync-battlestats"]["stale_users"],
        jobs["sync-battlestats"]["never_attempted"],
    ) == (0, 0)
    assert jobs["sync-users"]["stale_users"] == 3


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_attempt_stats_of_a_declared_sync_count_its_own_attempts(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A store's attempt_stats(sync=NAME) counts that sync's attempts only: users another
    sync (or sync-users) attempted are still stale for it, on SQLite and PostgreSQL."""
    from datetime import UTC, datetime, timedelta

    url = (
        f"sqlite:///{tmp_path / 'stats.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    seeded = SentinelStore(url)
    seeded.migrate()
    keys = seeded.seed(4)
    now = datetime.now(UTC)

    async def scenario() -> list[tuple[int, int, int]]:
        async with open_store(url) as store:
            users = [k.user_id for k in keys]
            await store.record_attempts(users[:3], at=now)
            await store.record_attempts(users[:1], at=now, sync="sync-battlestats")
            await store.record_attempts(users[1:2], at=now, sync="sync-other")
            since = now - timedelta(minutes=1)
            found = []
            for sync in (None, "sync-battlestats", "sync-other", "sync-never"):
                stats = await store.attempt_stats(since=since, sync=sync)
                found.append((stats.users, stats.stale_users, stats.never_attempted))
            return found

    assert asyncio.run(scenario()) == [(4, 1, 1), (4, 3, 3), (4, 3, 3), (4, 4, 4)]
