"""Supabase's connection pooler: no startup options, no prepared statements, any TimeZone.

Supabase's Supavisor (and its dedicated PgBouncer) in transaction mode listens on port
6543; Debian's PgBouncer in transaction mode stands in for it here: the test starts its
own on a free loopback port with a config it writes, pointing at the test server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from sentinel_kit import ConfigError, KeyCipher, UserDataRow, UserKey, open_store
from sentinel_kit.stores._postgres import PostgresStore, pooler_mode
from sentinel_kit.testing import FakeTorn, profile_for

from ..conftest import SECRET, make_key, run_cli, sync_args
from .pg_helpers import own_database


@pytest.mark.parametrize(
    ("url", "transaction", "libpq_url"),
    [
        (
            "postgresql://u:pw@aws-0-eu.pooler.supabase.com:6543/postgres",
            True,
            "postgresql://u:pw@aws-0-eu.pooler.supabase.com:6543/postgres",
        ),
        (
            "postgresql://u@aws-0-eu.pooler.supabase.com:5432/postgres",
            False,
            "postgresql://u@aws-0-eu.pooler.supabase.com:5432/postgres",
        ),
        (
            "postgresql://u@db.ref.supabase.co/postgres",
            False,
            "postgresql://u@db.ref.supabase.co/postgres",
        ),
        (
            "postgresql://u@host:6432/db?sslmode=require&sentinel_pooler=transaction",
            True,
            "postgresql://u@host:6432/db?sslmode=require",
        ),
        (
            "postgresql://u@host:6543/db?sentinel_pooler=session",
            False,
            "postgresql://u@host:6543/db",
        ),
        (
            "postgresql://u@host/db?options=-c%20search_path%3Dapp&sentinel_pooler=transaction",
            True,
            "postgresql://u@host/db?options=-c%20search_path%3Dapp",
        ),
        ("postgresql://u@host/db?port=6543", True, "postgresql://u@host/db?port=6543"),
        ("postgresql://u@host/db?port=x", False, "postgresql://u@host/db?port=x"),
    ],
    ids=[
        "supavisor-6543",
        "session-5432",
        "direct",
        "forced-transaction",
        "forced-session",
        "other-parameters-kept",
        "port-parameter",
        "bad-port-left-to-libpq",
    ],
)
def test_pooler_mode_from_the_url(url: str, transaction: bool, libpq_url: str) -> None:
    """Port 6543 means a transaction pooler; ?sentinel_pooler= says so for any port and is
    removed before libpq sees the URL."""
    mode = pooler_mode(url)
    assert mode.transaction is transaction
    assert mode.url == libpq_url


def test_a_bad_pooler_parameter_is_a_config_error() -> None:
    """?sentinel_pooler=maybe: a one-line ConfigError naming both values (exit 2)."""
    with pytest.raises(ConfigError, match="sentinel_pooler=transaction"):
        PostgresStore("postgresql://u@h/db?sentinel_pooler=maybe")
    result = run_cli(["doctor", "--db", "postgresql://u@h/db?sentinel_pooler=maybe"])
    assert result.returncode == 2
    assert result.stderr.startswith("error: sentinel_pooler='maybe'")


# -- a server whose TimeZone is not UTC -------------------------------------------------------

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def new_york_db() -> Iterator[str]:
    """A database whose sessions default to America/New_York (UTC-4 in June)."""
    admin = os.environ.get("SENTINEL_TEST_POSTGRES_URL")
    if not admin:
        pytest.skip("set SENTINEL_TEST_POSTGRES_URL to run the PostgreSQL tests")
    with own_database(admin, settings={"timezone": "America/New_York"}) as url:
        with psycopg.connect(url) as conn:  # the premise: a session there is not in UTC
            assert conn.execute("SHOW TimeZone").fetchone() == ("America/New_York",)
        yield url


@pytest.mark.parametrize("kind", ["timestamp", "timestamptz"])
def test_times_are_utc_whatever_the_session_time_zone(new_york_db: str, kind: str) -> None:
    """In a New York session, a key's created_at and a user's updated_at (plain and fenced
    writes) are stored and read back as the same UTC instant, in timestamp and timestamptz
    columns alike; a timestamp column holds the UTC wall time."""
    with psycopg.connect(new_york_db, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE user_keys (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
            f"user_id text NOT NULL, api_key text NOT NULL, created_at {kind})"
        )
        conn.execute(
            f"CREATE TABLE user_data (user_id text PRIMARY KEY, name text, player_id int, "
            f"updated_at {kind})"
        )

    async def scenario() -> None:
        async with open_store(new_york_db) as store:
            await store.migrate()
            await store.add_key(UserKey(str(uuid.uuid4()), "u1", "ct", T0.isoformat()))
            pages = [p async for p in store.iter_key_pages()]
            assert pages[0][0].created_at == T0.isoformat()
            await store.upsert_user_data([UserDataRow("plain", "a", 1, T0)])
            fence = await store.claim_lease("job", "me", 60)
            assert fence is not None
            await store.upsert_user_data([UserDataRow("fenced", "b", 2, T0)], fence=fence)
            got = await store.fetch_user_data(["plain", "fenced"])
            assert {u: s.updated_at for u, s in got.items()} == {"plain": T0, "fenced": T0}
            lease = await store.get_lease("job")
            assert lease is not None and lease.expires_at is not None  # noqa: PT018
            assert abs(lease.expires_at - datetime.now(UTC) - timedelta(seconds=60)) < timedelta(
                seconds=5
            )

    asyncio.run(scenario())
    with psycopg.connect(new_york_db) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        created = conn.execute("SELECT created_at::text FROM user_keys").fetchone()
        updated = conn.execute("SELECT updated_at::text FROM user_data ORDER BY 1").fetchall()
    wall = "2026-06-01 12:00:00" + ("+00" if kind == "timestamptz" else "")
    assert created == (wall,)
    assert updated == [(wall,), (wall,)]


def test_cli_sync_in_a_new_york_database(new_york_db: str, torn: FakeTorn) -> None:
    """A whole sync in a New York database stamps updated_at (a plain timestamp column, as
    in the original schema) and the run history with the current UTC time."""
    assert run_cli(["migrate", "--db", new_york_db]).returncode == 0
    cipher = KeyCipher(SECRET)
    with psycopg.connect(new_york_db, autocommit=True) as conn:
        for n in range(5):
            conn.execute(
                "INSERT INTO user_keys (user_id, api_key) VALUES (%s, %s)",
                (f"ny-{n}", cipher.encrypt(make_key(n))),
            )
    before = datetime.now(UTC).replace(tzinfo=None)
    result = run_cli(sync_args(new_york_db, torn), env={"ENCRYPTION_KEY": SECRET})
    assert result.returncode == 0, result.stderr
    after = datetime.now(UTC).replace(tzinfo=None)
    with psycopg.connect(new_york_db) as conn:
        stamps = [r[0] for r in conn.execute("SELECT updated_at FROM user_data").fetchall()]
        started = conn.execute("SELECT started_at FROM sentinel_runs").fetchone()
    assert len(stamps) == 5
    assert all(before - timedelta(seconds=1) <= s <= after for s in stamps)
    assert started is not None
    assert before.replace(tzinfo=UTC) - timedelta(seconds=1) <= started[0] <= datetime.now(UTC)


# -- through PgBouncer in transaction mode ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None:
        if os.environ.get("SENTINEL_TEST_REQUIRE_POSTGRES"):
            pytest.fail(
                "pgbouncer is required (SENTINEL_TEST_REQUIRE_POSTGRES is set) but not "
                "installed: apt-get install -y pgbouncer"
            )
        pytest.skip("pgbouncer is not installed (apt-get install -y pgbouncer)")
    return found


@pytest.fixture
def pgbouncer(pg_url: str) -> Iterator[str]:
    """A PgBouncer of this test's own in transaction mode, on a free loopback port, in front
    of the test server; yields the URL of the test database through it (no pooler hint)."""
    binary = _pgbouncer_binary()
    server = urlsplit(pg_url)
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-pgbouncer-"))
    workdir.chmod(0o755)  # PgBouncer refuses to run as root: it may run as `postgres`
    port = _free_port()
    (workdir / "users.txt").write_text(f'"{server.username or "postgres"}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={server.hostname or "127.0.0.1"} port={server.port or 5432}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "users.txt"}
pool_mode = transaction
server_round_robin = 1
default_pool_size = 4
"""
    )
    for path in workdir.iterdir():
        path.chmod(0o644)
    as_postgres = ["-u", "postgres"] if os.geteuid() == 0 else []
    log = (workdir / "pgbouncer.log").open("wb")
    proc = subprocess.Popen(
        [binary, *as_postgres, str(workdir / "pgbouncer.ini")], stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"pgbouncer did not start: {(workdir / 'pgbouncer.log').read_text()}"
                    )
                time.sleep(0.05)
        yield urlunsplit(
            server._replace(netloc=f"{server.username or 'postgres'}@127.0.0.1:{port}")
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def test_pgbouncer_refuses_startup_options(pgbouncer: str) -> None:
    """The stand-in behaves like the pooler: a session option at startup is refused (what
    the store used to send), and a plain connection works."""
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
        psycopg.connect(pgbouncer, options="-c TimeZone=UTC", connect_timeout=5).close()
    with psycopg.connect(pgbouncer, prepare_threshold=None) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_sync_and_daemon_through_pgbouncer_in_transaction_mode(
    pg_url: str, pgbouncer: str, torn: FakeTorn
) -> None:
    """Migrate, sync, a daemon run (leases, fenced writes, run history), keys list and
    doctor all work through PgBouncer in transaction mode."""
    url = f"{pgbouncer}?sentinel_pooler=transaction"
    env = {"ENCRYPTION_KEY": SECRET}
    migrated = run_cli(["migrate", "--db", url])
    assert migrated.returncode == 0, migrated.stderr
    cipher = KeyCipher(SECRET)
    keys = {f"pool-user-{n:03d}": make_key(n) for n in range(40)}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for user, plain in keys.items():
            conn.execute(
                "INSERT INTO user_keys (user_id, api_key) VALUES (%s, %s)",
                (user, cipher.encrypt(plain)),
            )

    result = run_cli([*sync_args(url, torn), "--concurrency", "8"], env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["synced"], report["written"]) == (40, 40)

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM user_data")
    daemon = run_cli(
        [
            "daemon",
            "--db",
            url,
            "--torn-url",
            torn.url,
            "--max-rpm",
            "0",
            "--run-on-start",
            "--once",
        ],
        env=env,
    )
    assert daemon.returncode == 0, daemon.stderr

    with psycopg.connect(pg_url) as conn:
        stored = dict(conn.execute("SELECT user_id, player_id FROM user_data").fetchall())
        runs = conn.execute(
            "SELECT status, written FROM sentinel_runs ORDER BY started_at"
        ).fetchall()
    assert stored == {user: profile_for(plain)[0] for user, plain in keys.items()}
    assert runs == [("ok", 40), ("ok", 40)]

    listed = run_cli(["keys", "list", "--db", url, "--json"], env=env)
    assert len(json.loads(listed.stdout)) == 40
    doctor = run_cli(["doctor", "--db", url, "--torn-url", torn.url, "--json"], env=env)
    assert doctor.returncode == 0, doctor.stdout
    pooler = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "pooler")
    assert pooler["detail"].startswith("transaction pooler (sentinel_pooler=transaction)")
