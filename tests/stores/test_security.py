"""Locked by default: Supabase's linter checks on our objects, open tables, --lock-tables.

On the real PostgreSQL with Supabase's roles and default privileges
(tests/data/supabase_roles.sql): the checks are clean after `migrate`, and flag a table
opened on purpose (the negative control). The rules are also compared with the SQL
queries the research notes checked against splinter's own lint views.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import psycopg
import pytest

from sentinel_kit import open_store
from sentinel_kit._security import (
    LINTS,
    SENSITIVE_COLUMN_NAMES,
    FunctionFacts,
    SecurityFacts,
    TableFacts,
    open_tables,
    unsupported_columns,
)

from ..conftest import run_cli
from .pg_helpers import apply_supabase_roles, as_role

# -- the rules, on facts written by hand ------------------------------------------------------


def facts(*tables: TableFacts, functions: tuple[FunctionFacts, ...] = ()) -> SecurityFacts:
    return SecurityFacts("public", ("anon", "authenticated"), tables, functions)


KEYS_COLUMNS = (("id", "uuid"), ("user_id", "text"), ("api_key", "text"))


@pytest.mark.parametrize(
    ("table", "is_open"),
    [
        (TableFacts("user_keys", rls=False, grants={"anon": ("SELECT",)}), True),
        (TableFacts("user_keys", rls=False, grants={"authenticated": ("UPDATE",)}), True),
        (TableFacts("user_keys", rls=True, grants={"anon": ("SELECT",)}), False),
        (TableFacts("user_keys", rls=False, grants={"anon": (), "authenticated": ()}), False),
        (TableFacts("user_keys", rls=False, grants={"anon": ("REFERENCES",)}), False),
    ],
    ids=["rls-off-anon-reads", "rls-off-auth-writes", "rls-on", "no-grants", "no-row-access"],
)
def test_a_table_is_open_only_with_rls_off_and_api_privileges(
    table: TableFacts, is_open: bool
) -> None:
    """Open means RLS off and anon/authenticated may read or change rows; an app sharing a
    table through RLS policies (RLS on, grants kept) is not open."""
    assert table.open is is_open
    assert (open_tables(facts(table)) != []) is is_open


def test_lints_flag_what_splinter_flags() -> None:
    """Each rule flags its case and only that: RLS off + SELECT, a sensitive column, an
    unpinned search_path, a SECURITY DEFINER function callable by anon."""
    exposed = TableFacts("user_keys", rls=False, grants={"anon": ("SELECT",)}, columns=KEYS_COLUMNS)
    plain = TableFacts(
        "user_data", rls=False, grants={"anon": ("SELECT",)}, columns=(("name", "text"),)
    )
    written = TableFacts("sentinel_runs", rls=False, grants={"anon": ("INSERT",)})
    found = facts(
        exposed,
        plain,
        written,
        functions=(
            FunctionFacts("sentinel_a", search_path=None),
            FunctionFacts("sentinel_b", search_path="public, pg_temp"),
            FunctionFacts("sentinel_c", "x int", True, '""', ("anon",)),
            FunctionFacts("sentinel_d", security_definer=True, search_path='""'),
        ),
    )
    flagged = {name: [f.target for f in rule(found)] for name, (rule, _) in LINTS.items()}
    assert flagged == {
        "rls_disabled_in_public": ["public.user_keys", "public.user_data"],
        "sensitive_columns_exposed": ["public.user_keys"],
        "function_search_path_mutable": ["public.sentinel_a()"],
        "security_definer_executable": ["public.sentinel_c(x int)"],
    }


def test_sensitive_names_match_exactly_as_splinter_does() -> None:
    """`api_key`, `API-Key` and `token` are sensitive; `password_hash` and `user_api_key`
    are not (splinter compares whole names after lower() and '-' -> '_')."""
    table = TableFacts(
        "t",
        rls=False,
        columns=tuple(
            (n, "text") for n in ("api_key", "API-Key", "Token", "password_hash", "user_api_key")
        ),
    )
    assert table.sensitive_columns == ("api_key", "API-Key", "Token")
    assert len(SENSITIVE_COLUMN_NAMES) == 67


@pytest.mark.parametrize(
    ("user_id", "key_id", "stamp", "problems"),
    [
        ("uuid", "bigint", "timestamp with time zone", []),
        ("character varying(64)", "text", "timestamp(3) without time zone", []),
        ("bigint", "uuid", "timestamp without time zone", []),
        ("numeric", "uuid", "date", ["user_keys.user_id is numeric", "user_keys.created_at"]),
    ],
    ids=["uuid", "varchar", "bigint", "unsupported"],
)
def test_supported_column_types(user_id: str, key_id: str, stamp: str, problems: list[str]) -> None:
    """text, varchar, uuid and bigint ids, timestamp and timestamptz times are supported;
    anything else is named."""
    types = {
        "user_keys": {"id": key_id, "user_id": user_id, "api_key": "text", "created_at": stamp},
        "user_data": {
            "user_id": "text",
            "name": "text",
            "player_id": "integer",
            "updated_at": "timestamp with time zone",
        },
    }
    found = unsupported_columns(types)
    assert len(found) == len(problems)
    for phrase, expected in zip(found, problems, strict=True):
        assert phrase.startswith(expected)


# -- on PostgreSQL with Supabase's roles ------------------------------------------------------


@pytest.fixture
def supabase_db(pg_url: str) -> str:
    """Supabase's roles and default privileges, then `sentinel-kit migrate`."""
    apply_supabase_roles(pg_url)
    result = run_cli(["migrate", "--db", pg_url])
    assert result.returncode == 0, result.stderr
    return pg_url


def report(url: str) -> SecurityFacts:
    """The security report, read the way doctor and migrate read it."""

    async def read() -> SecurityFacts:
        async with open_store(url) as store:
            found = await store.security_facts()  # type: ignore[attr-defined]
            assert isinstance(found, SecurityFacts)
            return found

    return asyncio.run(read())


def findings(found: SecurityFacts) -> dict[str, list[str]]:
    return {name: [f.target for f in rule(found)] for name, (rule, _) in LINTS.items()}


def test_linter_checks_are_clean_after_migrate(supabase_db: str) -> None:
    """After migrate, no lint flags any of our tables or functions and no table is open."""
    found = report(supabase_db)
    assert {t.name for t in found.tables} >= {"user_keys", "user_data", "sentinel_runs"}
    assert len(found.functions) >= 6
    assert found.api_roles == ("anon", "authenticated")
    assert findings(found) == {name: [] for name in LINTS}
    assert open_tables(found, [t.name for t in found.tables]) == []
    assert all(f.search_path == "public, pg_temp" for f in found.functions)
    assert not any(f.security_definer or f.executable_by for f in found.functions)


def open_user_keys(url: str) -> None:
    """What an app's own table looks like on Supabase: RLS off, anon holds every privilege."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE user_keys DISABLE ROW LEVEL SECURITY")
        conn.execute("GRANT ALL ON TABLE user_keys TO anon, authenticated")


def test_linter_checks_flag_a_deliberately_opened_table(supabase_db: str) -> None:
    """Negative control: an opened user_keys and a careless function are flagged by the
    lints they would trip in Supabase's Security Advisor, and anon really reads the keys."""
    open_user_keys(supabase_db)
    with psycopg.connect(supabase_db, autocommit=True) as conn:
        conn.execute("INSERT INTO user_keys (user_id, api_key) VALUES ('u1', 'ciphertext-1')")
        # A function as someone might add it by hand: definer rights, no pinned search_path.
        conn.execute(
            "CREATE FUNCTION sentinel_probe() RETURNS int LANGUAGE sql SECURITY DEFINER "
            "AS 'SELECT 1'"
        )
        with as_role(conn, "anon"):
            leaked = conn.execute("SELECT api_key FROM user_keys").fetchall()
    assert leaked == [("ciphertext-1",)]
    assert findings(report(supabase_db)) == {
        "rls_disabled_in_public": ["public.user_keys"],
        "sensitive_columns_exposed": ["public.user_keys"],
        "function_search_path_mutable": ["public.sentinel_probe()"],
        "security_definer_executable": ["public.sentinel_probe()"],
    }


# The queries of the research notes (/work/notes/splinter.md, check_lint_queries.py), each
# checked there to return exactly what splinter's own lint views return. Our rules must
# agree with them on our objects.
_Q_RLS = """
SELECT c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname = 'public' AND NOT c.relrowsecurity
  AND (c.relname LIKE 'sentinel\\_%' OR c.relname IN ('user_keys', 'user_data'))
  AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname IN ('anon', 'authenticated')
              AND pg_catalog.has_table_privilege(r.oid, c.oid, 'SELECT'))
ORDER BY 1
"""
_Q_SENSITIVE = """
SELECT DISTINCT c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind = 'r' AND n.nspname = 'public' AND NOT c.relrowsecurity
  AND (c.relname LIKE 'sentinel\\_%%' OR c.relname IN ('user_keys', 'user_data'))
  AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname IN ('anon', 'authenticated')
              AND pg_catalog.has_table_privilege(r.oid, c.oid, 'SELECT'))
  AND replace(lower(a.attname), '-', '_') = ANY(%(patterns)s)
ORDER BY 1
"""
_Q_SEARCH_PATH = """
SELECT p.proname FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND p.proname LIKE 'sentinel\\_%'
  AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) AS cfg WHERE cfg LIKE 'search_path=%')
ORDER BY 1
"""
_Q_DEFINER = """
SELECT DISTINCT p.proname FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_roles r ON r.rolname IN ('anon', 'authenticated')
WHERE p.prosecdef AND n.nspname = 'public' AND p.proname LIKE 'sentinel\\_%'
  AND pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE')
ORDER BY 1
"""


def _names(conn: psycopg.Connection, sql: str, **params: Any) -> list[str]:
    return [r[0] for r in conn.execute(sql, params or None).fetchall()]


def test_rules_agree_with_the_notes_queries(supabase_db: str) -> None:
    """On a database with objects every lint flags and objects none flags, our rules and
    the notes' SQL queries (checked against splinter's views) name the same objects."""
    with psycopg.connect(supabase_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE user_keys DISABLE ROW LEVEL SECURITY")  # open, sensitive
        conn.execute("ALTER TABLE sentinel_runs DISABLE ROW LEVEL SECURITY")
        conn.execute("GRANT SELECT ON sentinel_runs TO authenticated")  # open, not sensitive
        conn.execute("ALTER TABLE user_data DISABLE ROW LEVEL SECURITY")  # RLS off, no grant
        for sql in (
            "CREATE FUNCTION sentinel_f1() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE FUNCTION sentinel_f2() RETURNS int LANGUAGE sql SET work_mem = '8MB' "
            "AS 'SELECT 1'",
            "CREATE FUNCTION sentinel_f3(x int) RETURNS int LANGUAGE sql SECURITY DEFINER "
            "SET search_path = '' AS 'SELECT x'",
            "CREATE FUNCTION sentinel_f4() RETURNS int LANGUAGE sql SECURITY DEFINER "
            "SET search_path = '' AS 'SELECT 1'",
            "REVOKE EXECUTE ON FUNCTION sentinel_f4() FROM PUBLIC, anon, authenticated",
            "CREATE FUNCTION sentinel_f5() RETURNS int LANGUAGE sql SECURITY DEFINER "
            "SET search_path = '' AS 'SELECT 1'",
            "REVOKE EXECUTE ON FUNCTION sentinel_f5() FROM anon",  # PUBLIC still has it
        ):
            conn.execute(sql)
        conn.execute("GRANT SELECT ON user_keys TO anon")
        expected = {
            "rls_disabled_in_public": _names(conn, _Q_RLS),
            "sensitive_columns_exposed": _names(
                conn, _Q_SENSITIVE, patterns=sorted(SENSITIVE_COLUMN_NAMES)
            ),
            "function_search_path_mutable": _names(conn, _Q_SEARCH_PATH),
            "security_definer_executable": _names(conn, _Q_DEFINER),
        }
    got = {
        lint: sorted({t.removeprefix("public.").split("(")[0] for t in targets})
        for lint, targets in findings(report(supabase_db)).items()
    }
    assert expected == {
        "rls_disabled_in_public": ["sentinel_runs", "user_keys"],
        "sensitive_columns_exposed": ["user_keys"],
        "function_search_path_mutable": ["sentinel_f1", "sentinel_f2"],
        "security_definer_executable": ["sentinel_f3", "sentinel_f5"],
    }
    assert got == expected


# -- migrate: warnings and --lock-tables --------------------------------------------------------


def app_tables(url: str, *, rls_policy: bool = False) -> None:
    """The app's own tables, made before sentinel-kit arrives, with Supabase's default grants.

    With ``rls_policy``, user_data is shared the intended way: RLS on and a read policy.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE user_keys (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
            "user_id uuid NOT NULL, api_key text NOT NULL, created_at timestamptz DEFAULT now())"
        )
        conn.execute(
            "CREATE TABLE user_data (user_id uuid PRIMARY KEY, name text, player_id bigint, "
            "updated_at timestamptz)"
        )
        if rls_policy:
            conn.execute("ALTER TABLE user_data ENABLE ROW LEVEL SECURITY")
            conn.execute("CREATE POLICY readable ON user_data FOR SELECT USING (true)")


def rls_and_anon_select(url: str, table: str) -> tuple[bool, bool]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT c.relrowsecurity, has_table_privilege('anon', c.oid, 'SELECT') "
            "FROM pg_class c WHERE c.oid = to_regclass(%s)",
            (table,),
        ).fetchone()
    assert row is not None
    return bool(row[0]), bool(row[1])


def test_migrate_warns_about_open_app_tables_and_lock_tables_locks_them(pg_url: str) -> None:
    """migrate leaves the app's open tables alone but names each on stderr with the SQL
    that locks it; --lock-tables applies it and says so; a third run finds nothing."""
    apply_supabase_roles(pg_url)
    app_tables(pg_url)
    first = run_cli(["migrate", "--db", pg_url])
    assert first.returncode == 0, first.stderr
    warnings = [line for line in first.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert "table user_keys is open" in warnings[0]
    assert "table user_data is open" in warnings[1]
    assert "migrate --lock-tables" in warnings[0]
    assert 'ALTER TABLE "public"."user_keys" ENABLE ROW LEVEL SECURITY;' in first.stderr
    assert rls_and_anon_select(pg_url, "user_keys") == (False, True)  # not altered

    locked = run_cli(["migrate", "--db", pg_url, "--lock-tables"])
    assert locked.returncode == 0, locked.stderr
    assert "locked table user_keys" in locked.stdout
    assert "locked table user_data" in locked.stdout
    assert "warning" not in locked.stderr
    for table in ("user_keys", "user_data"):
        assert rls_and_anon_select(pg_url, table) == (True, False)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO user_keys (user_id, api_key) VALUES (gen_random_uuid(), 'ct')")
        with as_role(conn, "anon"), pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT api_key FROM user_keys")
        with as_role(conn, "service_role"):
            assert conn.execute("SELECT count(*) FROM user_keys").fetchone() == (1,)

    again = run_cli(["migrate", "--db", pg_url, "--lock-tables"])
    assert again.returncode == 0
    assert "nothing to lock" in again.stdout
    assert findings(report(pg_url)) == {name: [] for name in LINTS}


def test_a_table_shared_through_rls_policies_is_left_alone(pg_url: str) -> None:
    """An app that shares user_data through an RLS policy gets no warning for it, and
    --lock-tables does not touch it."""
    apply_supabase_roles(pg_url)
    app_tables(pg_url, rls_policy=True)
    result = run_cli(["migrate", "--db", pg_url, "--lock-tables"])
    assert result.returncode == 0, result.stderr
    assert "locked table user_keys" in result.stdout
    assert "user_data" not in result.stdout + result.stderr
    assert rls_and_anon_select(pg_url, "user_data") == (True, True)


def test_printed_script_locks_open_tables_when_asked(pg_url: str) -> None:
    """`migrate --print` leaves existing tables alone (and says how to lock them);
    `--print --lock-tables`, pasted into psql as into Supabase's SQL editor, locks them."""
    apply_supabase_roles(pg_url)
    app_tables(pg_url)
    plain = run_cli(["migrate", "--print"])
    assert plain.returncode == 0
    assert "--lock-tables" in plain.stdout
    assert "-- --lock-tables: lock the app's tables too" not in plain.stdout
    script = run_cli(["migrate", "--print", "--lock-tables"]).stdout
    for _ in range(2):  # the script is idempotent
        subprocess.run(
            ["psql", pg_url, "-v", "ON_ERROR_STOP=1", "-q"],
            input=script,
            text=True,
            check=True,
            capture_output=True,
        )
    for table in ("user_keys", "user_data"):
        assert rls_and_anon_select(pg_url, table) == (True, False)
    assert findings(report(pg_url)) == {name: [] for name in LINTS}
