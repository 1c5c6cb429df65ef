"""PostgreSQL on the real server: migrations, Supabase-style security, a 2,500-key sync."""

from __future__ import annotations

import asyncio
import json
import uuid

import psycopg
import pytest

from sentinel_kit import KeyCipher
from sentinel_kit.testing import FakeTorn, profile_for

from ..conftest import SECRET, make_key, run_cli
from .pg_helpers import apply_supabase_roles, as_role

API_ROLES = ("anon", "authenticated")


@pytest.fixture
def supabase_like(pg_url: str) -> str:
    """A database with Supabase's API roles and default privileges, then migrated by the CLI.

    On Supabase, `anon` and `authenticated` get USAGE on `public` and, by default, every
    privilege on each new table and function there; `service_role` bypasses RLS
    (tests/data/supabase_roles.sql).
    """
    apply_supabase_roles(pg_url)
    for _ in range(2):  # twice in a row: the second run must succeed and change nothing
        result = run_cli(["migrate", "--db", pg_url])
        assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert "warning" not in result.stderr  # the tables migrate created are locked
    return pg_url


def our_objects(conn: psycopg.Connection) -> tuple[list[str], list[str]]:
    """Every table and function migrate created: the seed tables and every sentinel_ one."""
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = "
            "'public'::regnamespace AND (relname LIKE 'sentinel\\_%' OR relname IN "
            "('user_keys', 'user_data')) ORDER BY 1"
        )
    ]
    functions = [
        r[0]
        for r in conn.execute(
            "SELECT oid::regprocedure::text FROM pg_proc WHERE proname LIKE 'sentinel\\_%' "
            "AND pronamespace = 'public'::regnamespace ORDER BY 1"
        )
    ]
    return tables, functions


def test_api_roles_reach_no_table_or_function_migrate_created(supabase_like: str) -> None:
    """anon and authenticated can neither read nor write any table migrate created (the seed
    tables included) nor run any sentinel_ function; RLS is on with no policy; the service
    role keeps access."""
    with psycopg.connect(supabase_like, autocommit=True) as conn:
        tables, functions = our_objects(conn)
        assert {"user_keys", "user_data", "sentinel_migrations", "sentinel_runs"} <= set(tables)
        assert {"sentinel_key_health", "sentinel_leases", "sentinel_jobs"} <= set(tables)
        assert "sentinel_upsert_user_data(text,bigint,jsonb)" in functions
        assert "sentinel_security_report()" in functions
        assert "sentinel_replace_ciphertexts(jsonb)" in functions
        conn.execute("INSERT INTO sentinel_leases (name, holder, fence) VALUES ('x', 'h', 1)")
        conn.execute("INSERT INTO user_keys (user_id, api_key) VALUES ('u', 'ciphertext')")
        for table in tables:
            rls = conn.execute(
                "SELECT relrowsecurity FROM pg_class WHERE relname = %s", (table,)
            ).fetchone()
            assert rls == (True,), table
        assert conn.execute(
            "SELECT count(*) FROM pg_policies WHERE schemaname = 'public'"
        ).fetchone() == (0,)

        for role in API_ROLES:
            for table in tables:
                for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                    allowed = conn.execute(
                        "SELECT has_table_privilege(%s, %s, %s)", (role, table, privilege)
                    ).fetchone()
                    assert allowed == (False,), (role, table, privilege)
            for function in functions:
                allowed = conn.execute(
                    "SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, function)
                ).fetchone()
                assert allowed == (False,), (role, function)

            # And for real, as that role (what PostgREST does for the anon key).
            with as_role(conn, role):
                for table in tables:
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        conn.execute(f"SELECT * FROM {table}")  # noqa: S608 (names from pg_class)
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("INSERT INTO user_data (user_id) VALUES ('attacker')")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("SELECT sentinel_claim_lease('x', 'attacker', 60)")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("SELECT sentinel_upsert_user_data('x', 1, '[]'::jsonb)")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("SELECT sentinel_set_alert_state('sync-users', 'healthy', now())")

        with as_role(conn, "service_role"):
            assert conn.execute("SELECT count(*) FROM sentinel_leases").fetchone() == (1,)
            assert conn.execute("SELECT count(*) FROM user_keys").fetchone() == (1,)
            assert conn.execute("SELECT sentinel_claim_lease('y', 'svc', 60)").fetchone() == (1,)


def test_default_privileges_alone_would_open_a_new_table(supabase_like: str) -> None:
    """Negative control for the test above: a table created without our locking is readable
    by anon under the emulated Supabase default privileges."""
    with psycopg.connect(supabase_like, autocommit=True) as conn:
        conn.execute("CREATE TABLE app_notes (id int PRIMARY KEY, api_key text)")
        conn.execute("INSERT INTO app_notes VALUES (1, 'secret ciphertext')")
        with as_role(conn, "anon"):
            rows = conn.execute("SELECT api_key FROM app_notes").fetchall()
    assert rows == [("secret ciphertext",)]


def test_existing_seed_tables_are_left_alone(pg_url: str) -> None:
    """A user's existing user_keys (different column order, extra column, no index) is not
    altered by migrate, and sync reads it."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE user_keys (created_at timestamp DEFAULT now(), api_key text NOT NULL, "
            "user_id varchar NOT NULL, id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
            "label text)"
        )
        before = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'user_keys' ORDER BY ordinal_position"
        ).fetchall()
    assert run_cli(["migrate", "--db", pg_url]).returncode == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        after = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'user_keys' ORDER BY ordinal_position"
        ).fetchall()
        indexes = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'user_keys'"
        ).fetchone()
    assert after == before
    assert indexes == (1,)  # only the primary key: nothing added


def test_cli_sync_of_2500_keys_against_postgres(pg_url: str, torn: FakeTorn) -> None:
    """`sentinel-kit sync` against PostgreSQL syncs 2,500 keys (past any 1000-row cap)."""
    assert run_cli(["migrate", "--db", pg_url]).returncode == 0
    cipher = KeyCipher(SECRET)
    keys = [(str(uuid.uuid4()), f"pg-user-{n:05d}", make_key(n)) for n in range(2500)]
    with (
        psycopg.connect(pg_url, autocommit=True) as conn,
        conn.cursor() as cur,
        cur.copy("COPY user_keys (id, user_id, api_key) FROM STDIN") as copy,
    ):
        for key_id, user_id, plaintext in keys:
            copy.write_row((key_id, user_id, cipher.encrypt(plaintext)))
    result = run_cli(
        [
            "sync",
            "--db",
            pg_url,
            "--torn-url",
            torn.url,
            "--json",
            "--max-rpm",
            "0",
            "--concurrency",
            "32",
        ],
        env={"ENCRYPTION_KEY": SECRET},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["keys_total"], report["synced"], report["written"]) == (2500, 2500, 2500)
    with psycopg.connect(pg_url) as conn:
        stored = dict(conn.execute("SELECT user_id, player_id FROM user_data").fetchall())
        runs = conn.execute("SELECT status, synced FROM sentinel_runs").fetchall()
    assert len(stored) == 2500
    assert all(stored[user] == profile_for(plain)[0] for _, user, plain in keys)
    assert runs == [("ok", 2500)]


def test_unreachable_postgres_is_exit_3_without_traceback() -> None:
    """sync against a closed port: exit 3, one error line naming the server."""
    result = run_cli(
        ["sync", "--db", "postgresql://u:hunter2@127.0.0.1:1/db"], env={"ENCRYPTION_KEY": SECRET}
    )
    assert result.returncode == 3
    assert "cannot connect to PostgreSQL" in result.stderr
    assert "hunter2" not in result.stderr  # the password is redacted
    assert "Traceback" not in result.stderr


def test_fenced_write_waits_for_and_loses_to_a_new_claim(pg_url: str) -> None:
    """A fenced write and a concurrent steal serialise on the lease row: after the steal
    commits, the old token's write is refused."""
    from datetime import UTC, datetime

    from sentinel_kit import StaleFence, UserDataRow, open_store

    async def scenario() -> None:
        async with open_store(pg_url) as store:
            await store.migrate()
            old = await store.claim_lease("job", "a", 0.2)
            assert old is not None
            await asyncio.sleep(0.3)
            new = await store.claim_lease("job", "b", 30)
            assert new is not None
            with pytest.raises(StaleFence):
                await store.upsert_user_data(
                    [UserDataRow("u", "late", 1, datetime.now(UTC))], fence=old
                )
            assert await store.fetch_user_data(["u"]) == {}

    asyncio.run(scenario())
