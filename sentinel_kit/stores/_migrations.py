"""SQL migrations shipped with the package, one folder per dialect, applied in name order.

Every migration is idempotent (``IF NOT EXISTS``, ``CREATE OR REPLACE``, guarded ``DO``
blocks), so applying one twice, or pasting the printed script into Supabase's SQL editor
and later running ``sentinel-kit migrate``, is safe.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["MIGRATIONS_TABLE", "migrations", "render_script", "statements"]

#: The bookkeeping table, created before any migration runs.
MIGRATIONS_TABLE = {
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS sentinel_migrations (name TEXT PRIMARY KEY, "
        "applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')))"
    ),
    "postgres": (
        "CREATE TABLE IF NOT EXISTS sentinel_migrations (name text PRIMARY KEY, "
        "applied_at timestamptz NOT NULL DEFAULT now())"
    ),
}


def migrations(dialect: str) -> list[tuple[str, str]]:
    """Return ``(name, sql)`` for every migration of ``dialect`` ("sqlite" or "postgres")."""
    folder = resources.files("sentinel_kit").joinpath("sql", dialect)
    items = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name, p.read_text(encoding="utf-8")) for p in items]


def render_script(dialect: str) -> str:
    """Return one script applying every migration and recording it, for pasting elsewhere."""
    parts = [
        f"-- sentinel-kit migrations ({dialect}); safe to run more than once.",
        MIGRATIONS_TABLE[dialect] + ";",
    ]
    for name, sql in migrations(dialect):
        parts.append(f"\n-- {name}\n{sql.strip()}")
        # `name` is one of our own file names, never user input.
        record = f"INSERT INTO sentinel_migrations (name) VALUES ('{name}') ON CONFLICT DO NOTHING;"  # noqa: S608
        parts.append(record)
    return "\n".join(parts) + "\n"


def statements(script: str) -> list[str]:
    """Split a SQLite migration into statements (our files hold no ';' inside literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
