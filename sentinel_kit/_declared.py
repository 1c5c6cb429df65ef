"""The DDL of a declared table (pure): create it locked, add missing columns, never more.

``sentinel-kit migrate --import MODULE`` runs (or, with ``--print``, prints) this for each
declared table with ``columns``. It never drops or retypes a column: a declaration that
changed a type is named by ``doctor``, and the fix is the user's own migration. Names are
validated identifiers (``TornSync``/``Table`` check them), quoted here again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ._security import lock_script

__all__ = [
    "SQLITE_TYPES",
    "add_column_sql",
    "create_table_sql",
    "missing_table_fix",
    "table_script",
    "type_differs",
]

#: How SQLite spells the portable types (its affinity rules keep the values).
SQLITE_TYPES = {
    "text": "TEXT",
    "integer": "INTEGER",
    "bigint": "INTEGER",
    "double precision": "REAL",
    "boolean": "INTEGER",
    "timestamptz": "TEXT",
    "jsonb": "TEXT",
}

#: The catalog's name of each portable type on PostgreSQL (``information_schema``).
_POSTGRES_CATALOG = {
    "text": ("text",),
    "integer": ("integer",),
    "bigint": ("bigint",),
    "double precision": ("double precision",),
    "boolean": ("boolean",),
    "timestamptz": ("timestamp with time zone",),
    "jsonb": ("jsonb",),
}


def _q(name: str) -> str:
    return f'"{name}"'


def _type(dialect: str, kind: str) -> str:
    return SQLITE_TYPES[kind] if dialect == "sqlite" else kind


def create_table_sql(
    dialect: str, table: str, columns: Mapping[str, str], key: Sequence[str]
) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for a declared table (its key the primary key)."""
    body = [f"{_q(c)} {_type(dialect, k)}" for c, k in columns.items()]
    body.append(f"PRIMARY KEY ({', '.join(_q(k) for k in key)})")
    return f"CREATE TABLE IF NOT EXISTS {_q(table)} (\n    " + ",\n    ".join(body) + "\n)"


def add_column_sql(dialect: str, table: str, column: str, kind: str) -> str:
    """``ALTER TABLE ... ADD COLUMN`` (``IF NOT EXISTS`` on PostgreSQL) for one column."""
    guard = "" if dialect == "sqlite" else "IF NOT EXISTS "
    return f"ALTER TABLE {_q(table)} ADD COLUMN {guard}{_q(column)} {_type(dialect, kind)}"


def table_script(table: str, columns: Mapping[str, str], key: Sequence[str]) -> str:
    """A static PostgreSQL script for ``migrate --print``: create the table, add the
    declared columns it lacks, and lock it (RLS on, no policy, nothing for anon and
    authenticated, ALL for service_role where it exists)."""
    lines = [f"-- declared table {table}", create_table_sql("postgres", table, columns, key) + ";"]
    lines += [add_column_sql("postgres", table, c, k) + ";" for c, k in columns.items()]
    lock = lock_script([table]).split("\n")
    # lock_script opens with its own --lock-tables comment: this table is ours, locked always.
    lines += [line for line in lock if not line.startswith("--")]
    return "\n".join(lines)


def type_differs(dialect: str, declared: str, found: str) -> bool:
    """True when a column's type in the database is not the declared portable type."""
    found = " ".join(found.lower().split())
    if dialect == "sqlite":
        return found != SQLITE_TYPES[declared].lower()
    return found not in _POSTGRES_CATALOG[declared]


def missing_table_fix(with_columns: bool, module: str = "MODULE") -> str:
    """What to do about a declared table that does not exist, in one phrase.

    Args:
        with_columns: the table is declared with ``columns`` (``migrate`` can create it).
        module: the module that declares it, as ``--import`` names it.

    Returns:
        ``run `sentinel-kit migrate --import MODULE` ...``, or, for a table declared
        without columns, that the user creates it.
    """
    if with_columns:
        return (
            f"run `sentinel-kit migrate --import {module}` with this --db (it creates it, locked)"
        )
    return "create it yourself (declared without columns, so migrate cannot)"
