"""A database set up by the last release (commit 8c04469) upgrades in place with `migrate`.

tests/data/release_8c04469/ holds that release's `migrate --print` scripts, verbatim: the
database is built exactly as that release left it (on Supabase, by pasting the script),
with data in it, then the current `migrate` upgrades it. That release created user_keys
and user_data without row-level security, so under Supabase's default privileges they
were open: the upgrade warns, never locks them silently, and `--lock-tables` does.

tests/data/release_063fc9e/ holds the 0.2 release's script the same way: a database it made
is upgraded while a 0.2 replica keeps writing through that release's own SQL.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from sentinel_kit import KeyCipher
from sentinel_kit._key_health import ciphertext_fingerprint
from sentinel_kit.stores._migrations import migrations
from sentinel_kit.testing import FakeTorn

from ..conftest import SECRET, make_key, run_cli, sync_args
from .pg_helpers import apply_supabase_roles, as_role

OLD = Path(__file__).resolve().parent.parent / "data" / "release_8c04469"
OLD_POSTGRES = [
    "001_seed_tables.sql",
    "002_sentinel_tables.sql",
    "003_sentinel_functions.sql",
    "004_sentinel_security.sql",
]
USERS = 12
DEAD = 5


def seed_old_data(run: Callable[[str, tuple[Any, ...]], object], mark: str) -> None:
    """Keys, user data, a finished run and a parked dead key, as the old release wrote them
    (``run`` is a psycopg or sqlite3 ``execute``; ``mark`` its placeholder)."""
    cipher = KeyCipher(SECRET)
    for n in range(USERS):
        key_id = str(uuid.UUID(int=0xE000 + n))
        ciphertext = cipher.encrypt(make_key(n))
        run(
            f"INSERT INTO user_keys (id, user_id, api_key, created_at) "  # noqa: S608
            f"VALUES ({mark}, {mark}, {mark}, {mark})",
            (key_id, f"old-user-{n:02d}", ciphertext, "2026-01-01 00:00:00"),
        )
        if n == DEAD:
            run(
                "INSERT INTO sentinel_key_health (key_id, user_id, fingerprint, state, "  # noqa: S608
                f"last_code, since) VALUES ({mark}, {mark}, {mark}, 'dead', 2, {mark})",
                (
                    key_id,
                    f"old-user-{n:02d}",
                    ciphertext_fingerprint(ciphertext),
                    "2026-11-01T00:00:00+00:00",
                ),
            )
    run(
        f"INSERT INTO user_data (user_id, name, player_id, updated_at) "  # noqa: S608
        f"VALUES ({mark}, 'Stale', 1, '2026-01-01 00:00:00')",
        ("old-user-00",),
    )
    run(
        "INSERT INTO sentinel_runs (run_id, job, status, started_at, finished_at, keys_total, "  # noqa: S608
        f"synced) VALUES ({mark}, 'sync-users', 'ok', {mark}, {mark}, {USERS}, {USERS - 1})",
        (str(uuid.uuid4()), "2026-11-27T10:00:00+00:00", "2026-11-27T10:01:00+00:00"),
    )


def test_postgres_set_up_by_the_last_release_upgrades(pg_url: str, torn: FakeTorn) -> None:
    """On Supabase's roles: the old release's script, data, then today's migrate applies
    only the new migrations, keeps every row, warns about the two open tables;
    --lock-tables locks them; doctor passes; a sync runs and the dead key stays parked."""
    apply_supabase_roles(pg_url)
    subprocess.run(
        ["psql", pg_url, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(OLD / "postgres.sql")],
        check=True,
        capture_output=True,
    )
    with psycopg.connect(pg_url, autocommit=True) as conn:
        seed_old_data(conn.execute, "%s")
        with as_role(conn, "anon"):  # what the old release left behind
            leaked = conn.execute("SELECT count(*) FROM user_keys").fetchone()
        assert leaked == (USERS,)
        applied = [r[0] for r in conn.execute("SELECT name FROM sentinel_migrations ORDER BY 1")]
    assert applied == OLD_POSTGRES

    upgrade = run_cli(["migrate", "--db", pg_url])
    assert upgrade.returncode == 0, upgrade.stderr
    new = [name for name, _ in migrations("postgres") if name not in OLD_POSTGRES]
    assert new[0] == "005_run_counts.sql"
    assert upgrade.stdout.splitlines()[0].split(": ", 1)[1].split(", ") == new
    # The ready-made syncs' tables are opt-in (`migrate --job NAME`): none comes with it.
    assert "created table" not in upgrade.stdout
    assert "table user_keys is open" in upgrade.stderr
    assert "table user_data is open" in upgrade.stderr

    env = {"ENCRYPTION_KEY": SECRET}
    before = run_cli(["doctor", "--db", pg_url, "--torn-url", torn.url, "--json"], env=env)
    checks = {c["name"]: c["status"] for c in json.loads(before.stdout)["checks"]}
    assert before.returncode == 1
    assert checks["tables_closed"] == "fail"
    assert checks["function_search_path_mutable"] == "pass"  # the old functions, replaced
    assert checks["migrations"] == "pass"

    locked = run_cli(["migrate", "--db", pg_url, "--lock-tables"])
    assert "locked table user_keys" in locked.stdout
    after = run_cli(["doctor", "--db", pg_url, "--torn-url", torn.url], env=env)
    assert after.returncode == 0, after.stdout

    result = run_cli(sync_args(pg_url, torn), env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["synced"], report["skipped"]) == (USERS - 1, 1)
    assert torn.count(make_key(DEAD)) == 0
    with psycopg.connect(pg_url) as conn:
        runs = conn.execute(
            "SELECT status, synced, deferred, counted FROM sentinel_runs ORDER BY started_at"
        ).fetchall()
        users = conn.execute("SELECT count(*) FROM user_data").fetchone()
    assert runs == [("ok", USERS - 1, 0, True), ("ok", USERS - 1, 0, True)]
    assert users == (USERS - 1,)


def test_sqlite_set_up_by_the_last_release_upgrades(tmp_path: Path, torn: FakeTorn) -> None:
    """SQLite: the old release's script and data, then today's migrate applies only what is
    new, keeps every row, and the database syncs; doctor passes."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((OLD / "sqlite.sql").read_text())
        seed_old_data(conn.execute, "?")
        old = {r[0] for r in conn.execute("SELECT name FROM sentinel_migrations")}
    assert len(old) == 4
    url = f"sqlite:///{path}"
    upgrade = run_cli(["migrate", "--db", url])
    assert upgrade.returncode == 0, upgrade.stderr
    new = [name for name, _ in migrations("sqlite") if name not in old]
    assert new[0] == "005_run_counts.sql"
    assert upgrade.stdout.splitlines() == [
        # The ready-made syncs' tables are opt-in (`migrate --job NAME`): none comes with it.
        f"applied {len(new)} migration(s) to {url}: {', '.join(new)}",
    ]
    env = {"ENCRYPTION_KEY": SECRET}
    result = run_cli(sync_args(url, torn), env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["skipped"] == 1
    doctor = run_cli(["doctor", "--db", url, "--torn-url", torn.url], env=env)
    assert doctor.returncode == 0, doctor.stdout
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sentinel_runs").fetchone() == (2,)


# -- the 0.2 release (commit 063fc9e), upgraded while one of its replicas keeps running -------

RELEASE_02 = Path(__file__).resolve().parent.parent / "data" / "release_063fc9e"
RELEASE_02_MIGRATIONS = [
    *OLD_POSTGRES,
    "005_run_counts.sql",
    "006_pinned_functions.sql",
    "007_security_report.sql",
    "008_key_rotation.sql",
    "010_sentinel_jobs.sql",
    "011_user_attempts.sql",
]

# The SQL the 0.2 release's PostgresStore and SupabaseStore sent, text as they sent it
# (its session turned each `?` into `%s`; written here with `%s` directly).
V02_CLAIM = "SELECT sentinel_claim_lease(%s, %s, %s)"
V02_RELEASE = "SELECT sentinel_release_lease(%s, %s, %s)"
V02_KEY_PAGE = "SELECT sentinel_key_page(p_limit => %s)"  # its Supabase store's rpc
V02_ATTEMPTS = "SELECT sentinel_record_attempts(%s::text[], %s, %s, %s, %s)"
V02_UPSERT = "SELECT sentinel_upsert_user_data(%s, %s, %s::jsonb)"
V02_HEALTH = (
    "INSERT INTO sentinel_key_health (key_id, user_id, fingerprint, state, last_code, since, "
    "retry_after, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key_id) DO "
    "UPDATE SET user_id = excluded.user_id, fingerprint = excluded.fingerprint, "
    "state = excluded.state, last_code = excluded.last_code, since = excluded.since, "
    "retry_after = excluded.retry_after, reason = excluded.reason"
)


def run_02_replica(url: str, *, name: str, park: int | None = None) -> list[str]:
    """One sync-users pass as a 0.2 replica writes it, through that release's own SQL:
    claim the lease, read the keys in fair order (sentinel_key_page), record the attempts,
    upsert user_data, park key ``park`` (code 2) if given, release. Returns the users read."""
    with psycopg.connect(url, autocommit=True) as conn:
        (fence,) = conn.execute(V02_CLAIM, ("sync-users", "replica-0.2", 60)).fetchone()  # type: ignore[misc]
        assert fence is not None, "the 0.2 replica could not claim its lease"
        (page,) = conn.execute(V02_KEY_PAGE, (100,)).fetchone()  # type: ignore[misc]
        users = sorted({row["user_id"] for row in page})
        at = "2026-12-01T00:00:00+00:00"
        conn.execute(V02_ATTEMPTS, (users, at, "sync-users", "sync-users", fence))
        rows = [
            {"user_id": u, "name": name, "player_id": 1000 + n, "updated_at": at}
            for n, u in enumerate(users)
        ]
        conn.execute(V02_UPSERT, ("sync-users", fence, json.dumps(rows)))
        if park is not None:
            key = next(row for row in page if row["user_id"] == f"old-user-{park:02d}")
            fingerprint = ciphertext_fingerprint(key["api_key"])
            conn.execute(
                V02_HEALTH,
                (key["id"], key["user_id"], fingerprint, "dead", 2, at, None, "key_invalid"),
            )
        assert conn.execute(V02_RELEASE, ("sync-users", "replica-0.2", fence)).fetchone() == (True,)
    return users


def test_postgres_of_the_0_2_release_upgrades_while_a_0_2_replica_keeps_running(
    pg_url: str, torn: FakeTorn
) -> None:
    """A database made by the 0.2 release's script (063fc9e) and a 0.2 replica's writes is
    upgraded by today's `migrate --import` (only the new migrations, the declared table
    created); the 0.2 replica's own SQL (lease, sentinel_key_page, sentinel_record_attempts,
    the fenced user_data upsert, key health rows) keeps working, interleaved with today's
    sync-users and a declared sync, which honour the key it parked; a second migrate is a
    no-op."""
    from ..conftest import ROOT
    from ..test_declared import stats, stored_pg

    apply_supabase_roles(pg_url)
    subprocess.run(
        ["psql", pg_url, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(RELEASE_02 / "postgres.sql")],
        check=True,
        capture_output=True,
    )
    with psycopg.connect(pg_url, autocommit=True) as conn:
        seed_old_data(conn.execute, "%s")
        applied = [r[0] for r in conn.execute("SELECT name FROM sentinel_migrations ORDER BY 1")]
    assert applied == RELEASE_02_MIGRATIONS
    assert len(run_02_replica(pg_url, name="before")) == USERS

    env = {"ENCRYPTION_KEY": SECRET, "PYTHONPATH": str(ROOT)}
    declared = ("--import", "tests.declared_syncs")
    upgrade = run_cli(["migrate", "--db", pg_url, *declared], env=env, cwd=ROOT)
    assert upgrade.returncode == 0, upgrade.stderr
    new = [name for name, _ in migrations("postgres") if name not in RELEASE_02_MIGRATIONS]
    assert new == [  # every migration since 0.2, in order
        "012_key_record.sql",
        "013_declared_syncs.sql",
        "014_key_info.sql",
        "015_cursors.sql",
        "016_faction_units.sql",
        "017_run_backlog.sql",
        "018_run_skips.sql",
    ]
    assert upgrade.stdout.splitlines()[0].split(": ", 1)[1].split(", ") == new
    assert "created table user_battlestats" in upgrade.stdout

    # The 0.2 replica, on the upgraded database, parks key 3 as it did.
    assert len(run_02_replica(pg_url, name="after-upgrade", park=3)) == USERS

    for n in range(USERS):
        torn.script(make_key(n), stats(1_000 * (n + 1)), path="/user/battlestats")
    users = run_cli(sync_args(pg_url, torn), env=env, cwd=ROOT)
    assert users.returncode == 0, users.stderr
    report = json.loads(users.stdout)
    assert (report["synced"], report["skipped"]) == (USERS - 2, 2)  # DEAD and 3: parked
    battle = run_cli(sync_args(pg_url, torn, *declared, "--job", "sync-battlestats"), env=env)
    assert battle.returncode == 0, battle.stderr
    assert json.loads(battle.stdout)["synced"] == USERS - 2
    assert torn.count(make_key(DEAD)) == torn.count(make_key(3)) == 0

    # And again after today's runs: the 0.2 replica reads, records and writes as before.
    assert len(run_02_replica(pg_url, name="after-new-runs")) == USERS
    with psycopg.connect(pg_url) as conn:
        names = conn.execute("SELECT DISTINCT name FROM user_data").fetchall()
        parked = conn.execute("SELECT count(*) FROM sentinel_key_health").fetchone()
        runs = conn.execute("SELECT job, status FROM sentinel_runs ORDER BY started_at").fetchall()
        migrated = conn.execute("SELECT count(*) FROM sentinel_migrations").fetchone()
    assert names == [("after-new-runs",)]
    assert parked == (2,)
    assert runs == [("sync-users", "ok"), ("sync-users", "ok"), ("sync-battlestats", "ok")]
    assert len(stored_pg(pg_url)) == USERS - 2

    again = run_cli(["migrate", "--db", pg_url, *declared], env=env, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert "is up to date" in again.stdout
    assert "created table" not in again.stdout
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM sentinel_migrations").fetchone() == migrated
