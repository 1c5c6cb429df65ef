"""PostgreSQL test plumbing: Supabase's roles and default privileges, acting as a role."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

__all__ = ["apply_supabase_roles", "as_role", "seed_keys"]

#: A tested emulation of Supabase's API roles and default privileges (from the research
#: notes; sources: supabase/postgres init-scripts and migrations, see the file header).
ROLES_SQL = Path(__file__).resolve().parent.parent / "data" / "supabase_roles.sql"
#: SQLSTATEs of a race with another test process creating or altering the cluster-wide
#: roles at the same moment: duplicate_object, unique_violation, "tuple concurrently
#: updated" (XX000).
_RACES = {"42710", "23505", "XX000"}


def apply_supabase_roles(url: str) -> None:
    """Give the database at ``url`` Supabase's API roles (anon, authenticated, service_role,
    authenticator) and default privileges: every table and function ``postgres`` creates in
    ``public`` afterwards is granted to anon and authenticated, as on Supabase.

    Roles are cluster-wide and other test processes create them too: races are retried.
    """
    script = ROLES_SQL.read_text(encoding="utf-8")
    for attempt in range(10):
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(script.encode())
            return
        except psycopg.Error as exc:
            if exc.sqlstate not in _RACES or attempt == 9:
                raise
            time.sleep(0.05 * (attempt + 1))


@contextmanager
def as_role(conn: psycopg.Connection, role: str) -> Iterator[psycopg.Connection]:
    """Run statements on ``conn`` as ``role`` (what PostgREST does per request), then reset."""
    conn.execute(f"SET ROLE {role}")
    try:
        yield conn
    finally:
        conn.execute("RESET ROLE")


def seed_keys(url: str, rows: list[tuple[object, object, str]]) -> None:
    """COPY ``(id, user_id, api_key)`` rows into user_keys (ids in the column's own type)."""
    with (
        psycopg.connect(url, autocommit=True) as conn,
        conn.cursor() as cur,
        cur.copy("COPY user_keys (id, user_id, api_key) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


@contextmanager
def own_database(admin: str, *, settings: dict[str, str] | None = None) -> Iterator[str]:
    """A throw-away database of this test alone (``ALTER DATABASE ... SET`` ``settings``),
    dropped afterwards; yields its URL."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    name = f"sentinel_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        for key, value in (settings or {}).items():
            conn.execute(f"ALTER DATABASE \"{name}\" SET {key} = '{value}'")
    try:
        yield urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
