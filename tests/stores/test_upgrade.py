"""A database set up by the last release (commit 8c04469) upgrades in place with `migrate`.

tests/data/release_8c04469/ holds that release's `migrate --print` scripts, verbatim: the
database is built exactly as that release left it (on Supabase, by pasting the script),
with data in it, then the current `migrate` upgrades it. That release created user_keys
and user_data without row-level security, so under Supabase's default privileges they
were open: the upgrade warns, never locks them silently, and `--lock-tables` does.
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
    assert upgrade.stdout.split(": ", 1)[1].strip().split(", ") == new
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
    assert upgrade.stdout == f"applied {len(new)} migration(s) to {url}: {', '.join(new)}\n"
    env = {"ENCRYPTION_KEY": SECRET}
    result = run_cli(sync_args(url, torn), env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["skipped"] == 1
    doctor = run_cli(["doctor", "--db", url, "--torn-url", torn.url], env=env)
    assert doctor.returncode == 0, doctor.stdout
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sentinel_runs").fetchone() == (2,)
