"""`sentinel-kit doctor`: one line per check with its fix; exit 0, 1, or 2 for a bad flag/URL."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sentinel_kit import KeyCipher
from sentinel_kit.testing import FakeTorn

from .conftest import SECRET, make_key, run_cli, seed_sqlite, simple_keys
from .stores.pg_helpers import apply_supabase_roles

CHECKS = [
    "database",
    "migrations",
    "secret",
    "column_types",
    "tables_closed",
    "functions_closed",
    "rls_disabled_in_public",
    "sensitive_columns_exposed",
    "function_search_path_mutable",
    "security_definer_executable",
    "rows_visible",
    "key_info",
    "pooler",
    "torn",
]


def doctor(
    db: str, torn_url: str, *, secret: str | None = SECRET, **env: str
) -> tuple[int, dict[str, dict[str, Any]], str]:
    """Run `doctor --json`; return the exit code, the checks by name, and stdout + stderr."""
    environ = {**env, **({"ENCRYPTION_KEY": secret} if secret else {})}
    result = run_cli(["doctor", "--db", db, "--torn-url", torn_url, "--json"], env=environ)
    body = json.loads(result.stdout)
    checks = {c["name"]: c for c in body["checks"]}
    assert list(checks) == CHECKS
    assert body["ok"] is (result.returncode == 0)
    return result.returncode, checks, result.stdout + result.stderr


def statuses(checks: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: c["status"] for name, c in checks.items()}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- SQLite ----------------------------------------------------------------------------------


def test_sqlite_passes_and_says_what_does_not_apply(tmp_path: Path, torn: FakeTorn) -> None:
    """A migrated SQLite database with keys: exit 0; the role checks say n/a (no roles)."""
    db = seed_sqlite(tmp_path / "s.db", simple_keys(5))
    code, checks, _ = doctor(db, torn.url)
    assert code == 0
    assert statuses(checks) == {
        **dict.fromkeys(CHECKS, "pass"),
        **dict.fromkeys(CHECKS[4:11], "n/a"),
        "pooler": "n/a",
        "key_info": "n/a",  # sync-key-info never ran: nothing for a sync-users-only setup
    }
    assert "SQLite has no roles" in checks["tables_closed"]["detail"]
    assert checks["key_info"]["detail"].startswith(
        "sync-key-info has not run; needed by syncs with needs= or per='faction'"
    )
    assert checks["secret"]["detail"] == "ENCRYPTION_KEY decrypts 5 of the first 5 keys"
    assert torn.requests == []  # a connection only: no request, so no key sent


def test_text_output_is_one_line_per_check_with_the_fix(tmp_path: Path, torn: FakeTorn) -> None:
    """Without --json: twelve lines, `pass`/`fail`/`n/a` first, the fix on a failing line."""
    db = seed_sqlite(tmp_path / "s.db", simple_keys(2))
    result = run_cli(
        ["doctor", "--db", db, "--torn-url", f"http://127.0.0.1:{closed_port()}"],
        env={"ENCRYPTION_KEY": SECRET},
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines] == CHECKS
    assert len(lines) == len(CHECKS)
    assert lines[-1].startswith("fail  torn")
    assert "-> fix: check DNS, the firewall" in lines[-1]
    assert all(line.split()[0] in ("pass", "n/a") for line in lines[:-1])


def test_wrong_or_missing_secret_fails_naming_encryption_key(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """A wrong ENCRYPTION_KEY, or none, fails the secret check naming ENCRYPTION_KEY, and the
    secret never appears in the output."""
    db = seed_sqlite(tmp_path / "s.db", simple_keys(3))
    wrong = "not the app's secret at all"
    code, checks, output = doctor(db, torn.url, secret=wrong)
    assert code == 1
    assert checks["secret"]["status"] == "fail"
    assert (
        "none of the first 3 well-formed keys decrypt with ENCRYPTION_KEY"
        in (checks["secret"]["detail"])
    )
    assert "ENCRYPTION_KEY" in checks["secret"]["fix"]
    assert [n for n, s in statuses(checks).items() if s == "fail"] == ["secret"]
    assert wrong not in output
    assert all(make_key(n) not in output for n in range(3))

    code, checks, _ = doctor(db, torn.url, secret=None)
    assert code == 1
    assert checks["secret"]["detail"].startswith("ENCRYPTION_KEY is not set")


def test_previous_secret_passes_and_points_at_rotate(tmp_path: Path, torn: FakeTorn) -> None:
    """Keys still under ENCRYPTION_KEY_PREVIOUS decrypt: the check passes and says to run
    `keys rotate`."""
    db = seed_sqlite(tmp_path / "s.db", simple_keys(4))
    code, checks, output = doctor(
        db, torn.url, secret="the new secret", ENCRYPTION_KEY_PREVIOUS=SECRET
    )
    assert code == 0
    assert checks["secret"]["detail"] == (
        "ENCRYPTION_KEY decrypts 0 of the first 4 keys; 4 still need ENCRYPTION_KEY_PREVIOUS "
        "(`sentinel-kit keys rotate` re-encrypts them)"
    )
    assert SECRET not in output


def test_unmigrated_and_missing_databases_fail(tmp_path: Path, torn: FakeTorn) -> None:
    """A missing SQLite file fails the database check (the rest is not checked); an empty
    one fails the migration check with the command that fixes it."""
    code, checks, _ = doctor(f"sqlite:///{tmp_path / 'none.db'}", torn.url)
    assert code == 1
    assert checks["database"]["status"] == "fail"
    assert "migrate" in checks["database"]["detail"]
    assert checks["migrations"]["detail"].startswith("not checked")

    empty = tmp_path / "empty.db"
    empty.touch()
    code, checks, _ = doctor(f"sqlite:///{empty}", torn.url)
    assert code == 1
    assert checks["migrations"]["detail"] == (
        "no migration applied: sentinel_migrations is missing"
    )
    assert checks["migrations"]["fix"] == f"run `sentinel-kit migrate --db sqlite:///{empty}`"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--db", "mysql://x/y"], "unsupported database URL"),
        (["--db", "sqlite:relative.db"], "malformed SQLite URL"),
        (["--torn-url", "ftp://api.torn.com"], "--torn-url 'ftp://api.torn.com'"),
        (["--bogus"], "No such option"),
    ],
    ids=["scheme", "sqlite-url", "torn-url", "flag"],
)
def test_bad_flag_or_url_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    """Only a bad flag or URL exits 2, with one line and no traceback."""
    db = seed_sqlite(tmp_path / "s.db", simple_keys(1))
    result = run_cli(["doctor", "--db", db, *args], env={"ENCRYPTION_KEY": SECRET})
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_supabase_without_its_service_key_fails_the_database_check(torn: FakeTorn) -> None:
    """A Supabase URL without SUPABASE_SERVICE_ROLE_KEY is a failing check (exit 1)."""
    code, checks, _ = doctor("https://abcdefghijklmnop.supabase.co", torn.url)
    assert code == 1
    assert "SUPABASE_SERVICE_ROLE_KEY is not set" in checks["database"]["detail"]
    assert checks["pooler"]["status"] == "n/a"


# -- PostgreSQL with Supabase's roles -----------------------------------------------------------


def test_postgres_unreachable_fails_without_leaking_the_password(torn: FakeTorn) -> None:
    """A closed port: the database check fails and names the server, never its password."""
    url = f"postgresql://u:hunter2@127.0.0.1:{closed_port()}/db"
    code, checks, output = doctor(url, torn.url)
    assert code == 1
    assert "cannot connect to PostgreSQL" in checks["database"]["detail"]
    assert "hunter2" not in output
    assert checks["pooler"]["status"] == "pass"


def test_doctor_fails_on_an_open_user_keys_and_a_wrong_secret_then_passes(
    pg_url: str, torn: FakeTorn
) -> None:
    """The app's own user_keys, open to the Data API, fails doctor naming it (and the lints
    it trips); a wrong secret fails it too; once both are fixed, exit 0."""
    apply_supabase_roles(pg_url)
    cipher = KeyCipher(SECRET)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # As the app made it on Supabase, before sentinel-kit: default grants, no RLS.
        conn.execute(
            "CREATE TABLE user_keys (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
            "user_id uuid NOT NULL, api_key text NOT NULL, created_at timestamptz DEFAULT now())"
        )
        for n in range(3):
            conn.execute(
                "INSERT INTO user_keys (user_id, api_key) VALUES (gen_random_uuid(), %s)",
                (cipher.encrypt(make_key(n)),),
            )
    assert run_cli(["migrate", "--db", pg_url]).returncode == 0

    code, checks, output = doctor(pg_url, torn.url, secret="a wrong secret")
    assert code == 1
    failing = sorted(n for n, s in statuses(checks).items() if s == "fail")
    assert failing == [
        "rls_disabled_in_public",
        "secret",
        "sensitive_columns_exposed",
        "tables_closed",
    ]
    assert checks["tables_closed"]["detail"].startswith(
        "open to Supabase's Data API: user_keys (row-level security off; anon holds"
    )
    assert "user_data" not in checks["tables_closed"]["detail"]  # created locked by migrate
    assert "migrate --lock-tables" in checks["tables_closed"]["fix"]
    assert (
        "public.user_keys: api_key readable by anon and authenticated"
        in (checks["sensitive_columns_exposed"]["detail"])
    )
    assert "ENCRYPTION_KEY" in checks["secret"]["detail"]
    assert "a wrong secret" not in output

    assert run_cli(["migrate", "--db", pg_url, "--lock-tables"]).returncode == 0
    code, checks, _ = doctor(pg_url, torn.url)
    assert code == 0, checks
    assert statuses(checks) == {**dict.fromkeys(CHECKS, "pass"), "key_info": "n/a"}
    assert checks["functions_closed"]["status"] == "pass"


def test_postgres_without_the_migration_fails_with_the_fix(pg_url: str, torn: FakeTorn) -> None:
    """An empty Postgres database: migrations, secret and the security checks fail, each
    saying to run migrate; the database itself is reachable."""
    code, checks, _ = doctor(pg_url, torn.url)
    assert code == 1
    assert checks["database"]["status"] == "pass"
    for name in ("migrations", "tables_closed", "rls_disabled_in_public"):
        assert checks[name]["status"] == "fail"
        assert "sentinel-kit migrate --db" in checks[name]["fix"]
    assert checks["column_types"]["detail"].startswith("table user_keys does not exist")


READER = "sentinel_test_reader"


def test_a_role_that_rls_hides_every_row_from_fails(pg_url: str, torn: FakeTorn) -> None:
    """Connected as a role that neither owns the locked tables nor has BYPASSRLS, sentinel-
    kit would read no key at all: rows_visible fails and says which role to use."""
    from urllib.parse import urlsplit, urlunsplit

    assert run_cli(["migrate", "--db", pg_url]).returncode == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # Roles are cluster-wide: another run may have made it already.
        with contextlib.suppress(psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            conn.execute(f"CREATE ROLE {READER} LOGIN NOBYPASSRLS")
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {READER}")
        conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {READER}")
        conn.execute(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {READER}")
        conn.execute(
            "INSERT INTO user_keys (user_id, api_key) VALUES ('u', %s)",
            (KeyCipher(SECRET).encrypt(make_key(1)),),
        )
    parts = urlsplit(pg_url)
    as_reader = urlunsplit(parts._replace(netloc=f"{READER}@{parts.hostname}:{parts.port}"))
    code, checks, _ = doctor(as_reader, torn.url)
    assert code == 1
    assert checks["rows_visible"]["status"] == "fail"
    assert "hides every row of" in checks["rows_visible"]["detail"]
    assert "user_keys" in checks["rows_visible"]["detail"]
    assert "BYPASSRLS" in checks["rows_visible"]["fix"]

    code, checks, _ = doctor(pg_url, torn.url)  # the owner sees every row
    assert checks["rows_visible"]["status"] == "pass"
