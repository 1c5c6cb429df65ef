"""``sentinel-kit migrate``: create (or upgrade) the tables, or print the SQL.

After applying the migrations to PostgreSQL, it checks the app's own ``user_keys`` and
``user_data``, which it never alters unasked: one warning line on stderr per table that
is open to Supabase's Data API (row-level security off while ``anon`` or
``authenticated`` hold privileges), with the SQL that locks it; ``--lock-tables`` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from .._declared import create_table_sql, missing_table_fix, table_script
from .._errors import StoreError
from .._security import SEED_TABLES, TableFacts, lock_script, lock_statements, open_tables
from ..stores import PostgresStore, Store
from ..stores._migrations import render_script
from ..stores._sql import SQLStore
from ..sync._registry import declared_syncs
from ..sync._sinks import USER_DATA
from ..sync._spec import Table
from ._options import db_option, import_option, logging_options, with_store

__all__ = ["migrate"]


@dataclass(slots=True)
class _Outcome:
    """What one `migrate` did: the migrations applied, open tables found and locked."""

    target: str
    applied: list[str]
    found: list[TableFacts] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    unchecked: str | None = None
    declared: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _declared_tables(imports: tuple[str, ...]) -> tuple[list[Table], list[Table]]:
    """The tables of the syncs the loaded modules declare: those with declared columns
    (``migrate`` creates them), and those without (the user's own; ``user_data`` aside)."""
    # Not the tables sentinel-kit's own migrations make (user_data, sentinel_key_info).
    tables = [s.table for s in declared_syncs(imports).values() if not s.migrated_table]
    with_columns = [t for t in tables if t.columns is not None]
    without = [t for t in tables if t.columns is None and t.name != USER_DATA]
    return with_columns, without


def _warning(table: TableFacts) -> str:
    roles = " and ".join(table.exposed_to)
    return (
        f"warning: table {table.name} is open: row-level security is off and {roles} hold "
        f"privileges on it, so anyone with the project's anon key can reach it through "
        "Supabase's Data API; lock it with `sentinel-kit migrate --lock-tables`, or run the "
        "SQL below (skip this if your app reads it with the anon key: give it RLS policies)"
    )


@click.command()
@db_option
@click.option(
    "--print",
    "print_sql",
    is_flag=True,
    help="Print the SQL instead of applying it, for the Supabase SQL editor or a "
    "supabase/migrations/ file (PostgreSQL unless --db names a SQLite database).",
)
@click.option(
    "--lock-tables",
    is_flag=True,
    help="Also lock the app's user_keys and user_data when they are open to Supabase's Data "
    "API: enable row-level security (no policy) and revoke anon's and authenticated's "
    "privileges. Tables sentinel-kit creates are locked already.",
)
@import_option(
    "Import a module that declares syncs (TornSync, repeatable): their tables with "
    "columns are created locked, and declared columns they lack are added (never dropped "
    "or retyped)."
)
@logging_options
def migrate(db: str | None, print_sql: bool, lock_tables: bool, imports: tuple[str, ...]) -> None:
    """Create the tables sentinel-kit needs; safe to run again (applies only what is missing).

    Existing user_keys and user_data tables are never altered without --lock-tables.
    """
    tables, theirs = _declared_tables(imports)
    if print_sql:
        # Printing is for pasting into Supabase's SQL editor or a migrations folder, so it
        # is PostgreSQL unless a SQLite database was named.
        if db and db.startswith("sqlite:"):
            click.echo(render_script("sqlite"))
            for declared in tables:
                columns = declared.all_columns()
                click.echo(create_table_sql("sqlite", declared.name, columns, declared.key) + ";")
            return
        click.echo(render_script("postgres"))
        for declared in tables:
            click.echo(table_script(declared.name, declared.all_columns(), declared.key))
        click.echo(lock_script(SEED_TABLES) if lock_tables else _LOCK_HINT)
        return

    async def apply(store: Store) -> _Outcome:
        outcome = _Outcome(store.label, await store.migrate())
        if isinstance(store, SQLStore):
            for declared in tables:
                outcome.declared += await store.ensure_table(
                    declared.name, declared.all_columns(), declared.key
                )
            for declared in theirs:
                if not await store.table_columns(declared.name):
                    outcome.notes.append(
                        f"note: table {declared.name} does not exist: {missing_table_fix(False)}"
                    )
        if not isinstance(store, PostgresStore):
            return outcome
        try:
            facts = await store.security_facts()
        except StoreError as exc:
            if lock_tables:
                raise
            # The migrations are in; only the check failed (e.g. a role that may not read
            # the catalog): say so rather than fail the command.
            outcome.unchecked = str(exc)
            return outcome
        outcome.found = open_tables(facts, SEED_TABLES)
        if lock_tables:
            outcome.locked = await store.lock_tables([t.name for t in outcome.found])
        return outcome

    result = with_store(db, apply, create=True)
    target, applied, found, locked = result.target, result.applied, result.found, result.locked
    if applied:
        click.echo(f"applied {len(applied)} migration(s) to {target}: {', '.join(applied)}")
    elif not result.declared:
        click.echo(f"{target} is up to date")
    for line in result.declared:
        click.echo(f"{line} in {target}")
    for note in result.notes:
        click.echo(note, err=True)
    if result.unchecked:
        click.echo(
            "warning: could not check whether user_keys and user_data are open to Supabase's "
            f"Data API ({result.unchecked}); `sentinel-kit doctor` checks it too",
            err=True,
        )
    for table in found:
        if table.name in locked:
            click.echo(
                f"locked table {table.name}: row-level security enabled, privileges of "
                f"{' and '.join(table.exposed_to)} revoked"
            )
            continue
        click.echo(_warning(table), err=True)
        for statement in lock_statements(table.name, roles=sorted(table.grants)):
            click.echo(f"    {statement}", err=True)
    if lock_tables and not found:
        click.echo(
            "--lock-tables: nothing to lock (user_keys and user_data are not open to the Data API)"
        )


_LOCK_HINT = """-- user_keys and user_data are created locked when this script creates them;
-- existing ones are left as they are. If yours are open to the Data API (row-level
-- security off: `sentinel-kit doctor` says so), print this script with --lock-tables
-- to lock them too.
"""
