"""``sentinel-kit migrate``: create (or upgrade) the tables, or print the SQL."""

from __future__ import annotations

import click

from ..stores import Store
from ..stores._migrations import render_script
from ._options import db_option, logging_options, with_store

__all__ = ["migrate"]


@click.command()
@db_option
@click.option(
    "--print",
    "print_sql",
    is_flag=True,
    help="Print the SQL instead of applying it, for the Supabase SQL editor or a "
    "supabase/migrations/ file (PostgreSQL unless --db names a SQLite database).",
)
@logging_options
def migrate(db: str | None, print_sql: bool) -> None:
    """Create the tables sentinel-kit needs; safe to run again (applies only what is missing)."""
    if print_sql:
        # Printing is for pasting into Supabase's SQL editor or a migrations folder, so it
        # is PostgreSQL unless a SQLite database was named.
        click.echo(render_script("sqlite" if db and db.startswith("sqlite:") else "postgres"))
        return

    async def apply(store: Store) -> tuple[str, list[str]]:
        return store.label, await store.migrate()

    target, applied = with_store(db, apply, create=True)
    if applied:
        click.echo(f"applied {len(applied)} migration(s) to {target}: {', '.join(applied)}")
    else:
        click.echo(f"{target} is up to date")
